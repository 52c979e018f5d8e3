"""The detector learns: one fixed batch of 2 shapes images, 20 SGD iterations of the tiny GN Mask R-CNN
(tests/engine/tiny_mask_rcnn.yaml) on CPU. The total loss and each of the classification, box and mask
losses fall by at least 40%, and in eval mode the top detection on each training image has the class of
one of its shapes. A few seconds; the figures it measured are printed (``pytest -s``) and written to
``$GN_DET_LEARN_REPORT`` when that is set."""
import json
import os

import torch

from gn_det.config import get_cfg
from gn_det.data import build_detection_train_loader, generate_shapes_dataset, register_coco_instances
from gn_det.modeling import build_model

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "tiny_mask_rcnn.yaml")
ITERS = 20
LOSSES = ("total", "loss_classifier", "loss_box_reg", "loss_mask")
MIN_DROP = 0.40


def _fixed_batch(tmp_path):
    root = tmp_path / "shapes"
    generate_shapes_dataset(str(root), num_train=2, num_val=1, size=64, seed=3)
    register_coco_instances("learn_train_fixed", {}, root / "annotations" / "instances_train.json", root / "train")
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["DATASETS.TRAIN", ("learn_train_fixed",), "INPUT.RANDOM_FLIP", "none",
                         "MODEL.DEVICE", "cpu"])
    batch = next(iter(build_detection_train_loader(cfg, rank=0, world_size=1)))
    return cfg, [img for img, _ in batch], [t for _, t in batch]


def test_tiny_mask_rcnn_learns_a_fixed_batch(tmp_path):
    cfg, images, targets = _fixed_batch(tmp_path)
    assert len(images) == 2 and all(len(t["labels"]) > 0 for t in targets)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    history = []
    for it in range(ITERS):
        losses = model(images, [dict(t) for t in targets])
        total = sum(losses.values())
        history.append({"total": float(total), **{k: float(v) for k, v in losses.items()}})
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    drops = {k: 1.0 - history[-1][k] / history[0][k] for k in LOSSES}
    report = {"iterations": ITERS, "first": {k: history[0][k] for k in LOSSES},
              "last": {k: history[-1][k] for k in LOSSES}, "drop": drops}
    print("learning test:", json.dumps(report, indent=1))
    if os.environ.get("GN_DET_LEARN_REPORT"):
        with open(os.environ["GN_DET_LEARN_REPORT"], "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    for key in LOSSES:
        assert drops[key] >= MIN_DROP, f"{key} fell {drops[key]:.0%} in {ITERS} iterations: {report}"
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    for out, target in zip(outputs, targets):
        assert len(out["scores"]) > 0
        top = int(out["scores"].argmax())
        assert int(out["labels"][top]) in set(target["labels"].tolist()), (out["labels"][:5], target["labels"])
