"""Fine-tuning on a dataset with another class count is a config change: a detector trained on shapes
with N=4 classes fine-tunes on a 2-class relabelling; the predictors are re-initialised, everything
else loads, training runs and AP is evaluated."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from gn_det.checkpoint import load_weights
from gn_det.config import get_cfg
from gn_det.data import generate_shapes_dataset
from gn_det.modeling import build_model

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIG = os.path.join(HERE, "tiny_finetune.yaml")
PREDICTORS = ["roi_heads.box_predictor.bbox_pred", "roi_heads.box_predictor.cls_score",
              "roi_heads.mask_predictor.predictor"]


def _train_net():
    spec = importlib.util.spec_from_file_location("train_net_for_finetune", os.path.join(REPO, "tools", "train_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relabel_round_vs_angular(src_json: str, dst_json: str) -> None:
    """A 2-class COCO file on the same images: circle -> 'round', square/triangle/star -> 'angular'."""
    with open(src_json) as f:
        data = json.load(f)
    names = {c["id"]: c["name"] for c in data["categories"]}
    data["categories"] = [{"id": 1, "name": "round"}, {"id": 2, "name": "angular"}]
    for ann in data["annotations"]:
        ann["category_id"] = 1 if names[ann["category_id"]] == "circle" else 2
    with open(dst_json, "w") as f:
        json.dump(data, f)


@pytest.mark.slow  # two short training runs + evaluation: 20-40 s on 2 shared cores
def test_finetune_with_another_class_count(tmp_path):
    root = tmp_path / "shapes"
    generate_shapes_dataset(str(root), num_train=6, num_val=3, size=64, seed=2)
    ann = root / "annotations"
    for split in ("train", "val"):
        relabel_round_vs_angular(str(ann / f"instances_{split}.json"), str(tmp_path / f"two_{split}.json"))
    train_net = _train_net()
    parse = train_net.default_argument_parser().parse_args

    first = tmp_path / "four_classes"
    train_net.main(parse([
        "--config", CONFIG, "--register-coco", "four_train", str(ann / "instances_train.json"), str(root / "train"),
        "DATASETS.TRAIN", "('four_train',)", "DATASETS.TEST", "()", "OUTPUT_DIR", str(first)]))
    weights = first / "model_final.pth"

    # What the fine-tune will load: everything but the three class-specific predictors.
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", 2])
    model = build_model(cfg)
    report = load_weights(model, str(weights), verbose=False)
    assert sorted({k.rsplit(".", 1)[0] for k, _, _ in report.skipped_predictors}) == PREDICTORS
    assert not report.missing and not report.unexpected and not report.shape_mismatched
    trained = torch.load(weights, weights_only=True)["model"]
    own = model.state_dict()
    for key in report.matched:
        torch.testing.assert_close(own[key], trained[key], rtol=0, atol=0)

    second = tmp_path / "two_classes"
    results = train_net.main(parse([
        "--config", CONFIG,
        "--register-coco", "two_train", str(tmp_path / "two_train.json"), str(root / "train"),
        "--register-coco", "two_val", str(tmp_path / "two_val.json"), str(root / "val"),
        "MODEL.WEIGHTS", str(weights), "MODEL.ROI_HEADS.NUM_CLASSES", "2",
        "DATASETS.TRAIN", "('two_train',)", "DATASETS.TEST", "('two_val',)", "OUTPUT_DIR", str(second)]))
    log = (second / "log.txt").read_text()
    assert ("Skipped roi_heads.box_predictor.cls_score: 5 outputs in the checkpoint, 3 in the model "
            "(another class count)") in log
    final = torch.load(second / "model_final.pth", weights_only=True)["model"]
    assert final["roi_heads.box_predictor.cls_score.weight"].shape == (3, 64)
    for task in ("bbox", "segm"):
        ap = results["two_val"][task]
        assert {"AP", "AP50", "AP-round", "AP-angular"} <= set(ap)
    # (what the fine-tune starts from is checked by test_finetune_starts_from_the_checkpoint below)


def test_finetune_starts_from_the_checkpoint(tmp_path, monkeypatch):
    """Quick: a 4-class checkpoint fine-tuned with 2 classes through train_net. The model the first
    training step runs (iteration 0) holds the checkpoint's tensors for every key but the three
    class-specific predictors, which are freshly initialised at the new shapes."""
    root = tmp_path / "shapes"
    generate_shapes_dataset(str(root), num_train=2, num_val=1, size=64, seed=2)
    relabel_round_vs_angular(str(root / "annotations" / "instances_train.json"), str(tmp_path / "two_train.json"))
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(123)  # another init than the fine-tune's SEED gives, so equality means "loaded"
    source = build_model(cfg)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ckpt = {k: v.clone() for k, v in source.state_dict().items()}
    weights = tmp_path / "four_classes.pth"
    torch.save({"model": ckpt}, weights)

    train_net = _train_net()
    seen = {}
    build = train_net.DefaultTrainer.build_model.__func__

    def build_recording(cls, cfg):
        model = build(cls, cfg)

        def record(module, args):
            if module.training and "state" not in seen:
                seen["state"] = {k: v.detach().clone() for k, v in module.state_dict().items()}

        model.register_forward_pre_hook(record)
        return model

    monkeypatch.setattr(train_net.DefaultTrainer, "build_model", classmethod(build_recording))
    train_net.main(train_net.default_argument_parser().parse_args([
        "--config", CONFIG, "--register-coco", "two_train_q", str(tmp_path / "two_train.json"), str(root / "train"),
        "MODEL.WEIGHTS", str(weights), "MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.DEVICE", "cpu",
        "SOLVER.MAX_ITER", "1", "DATASETS.TRAIN", "('two_train_q',)", "DATASETS.TEST", "()",
        "OUTPUT_DIR", str(tmp_path / "two_classes")]))
    start = seen["state"]
    predictor_keys = {k for k in start if k.rsplit(".", 1)[0] in PREDICTORS}
    assert len(predictor_keys) == 6
    assert set(start) == set(ckpt)
    for key in set(start) - predictor_keys:
        assert torch.equal(start[key], ckpt[key]), key
    for key in predictor_keys:
        assert start[key].shape != ckpt[key].shape, key  # 3 classes (+ background), not 5
