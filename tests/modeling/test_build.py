"""build_model: tiny recipes train (finite losses, expected names) and infer (boxes, labels, scores, masks)."""
import glob
import math
import os

import pytest
import torch
from torchvision.models.detection import FasterRCNN, MaskRCNN

from gn_det.config import CONFIGS_DIR, get_cfg
from gn_det.modeling import build_model

from .helpers import tiny_batch, tiny_cfg

LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


@pytest.mark.parametrize("name,mask_on", [("tiny/mask_rcnn_R_18_FPN_gn.yaml", True),
                                          ("tiny/faster_rcnn_R_18_FPN_frozenbn.yaml", False),
                                          ("tiny/mask_rcnn_R_18_FPN_sn.yaml", True)])
def test_train_losses_and_eval_outputs(name, mask_on):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(name))
    assert isinstance(model, MaskRCNN if mask_on else FasterRCNN)
    images, targets = tiny_batch()
    if not mask_on:
        targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    model.train()
    losses = model(images, targets)
    assert set(losses) == LOSSES | ({"loss_mask"} if mask_on else set())
    assert all(math.isfinite(v.item()) for v in losses.values())
    if "frozenbn" not in name:  # random-init FrozenBN is the identity: features are unnormalized
        # normalized features + predictor init std 0.01: class logits ~0, cross-entropy ~log(K+1) = log(5)
        assert losses["loss_classifier"].item() == pytest.approx(math.log(5), rel=0.05)
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad is not None
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for image, out in zip(images, outputs):
        assert out["boxes"].shape[1] == 4 and out["labels"].dtype == torch.int64
        assert len(out["boxes"]) == len(out["scores"]) == len(out["labels"]) <= 100
        if len(out["labels"]):
            assert 1 <= out["labels"].min() and out["labels"].max() <= 4  # 1..K, 0 is background
            assert (out["boxes"][:, 2] <= image.shape[2] + 1e-3).all() and (out["boxes"][:, 3] <= image.shape[1] + 1e-3).all()
        if mask_on:
            assert out["masks"].shape == (len(out["boxes"]), 1, *image.shape[1:])
            assert ((out["masks"] >= 0) & (out["masks"] <= 1)).all()
        else:
            assert "masks" not in out


def test_tiny_recipes_all_build():
    for path in sorted(glob.glob(str(CONFIGS_DIR / "tiny" / "*.yaml"))):
        cfg = get_cfg()
        cfg.merge_from_file(path)
        model = build_model(cfg)
        assert model.roi_heads.box_predictor.cls_score.out_features == cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1, path


def _distinct_full_size(depths):
    """Full-size recipes, one per distinct MODEL section (schedules do not change the model)."""
    seen, paths = set(), []
    for path in sorted(glob.glob(str(CONFIGS_DIR / "*.yaml"))):
        cfg = get_cfg()
        cfg.merge_from_file(path)
        key = cfg.MODEL.dump()
        if cfg.MODEL.RESNETS.DEPTH in depths and key not in seen:
            seen.add(key)
            paths.append(path)
    return paths


@pytest.mark.parametrize("path", _distinct_full_size({50}), ids=os.path.basename)
def test_full_size_r50_recipes_build(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    model = build_model(cfg)
    assert model.backbone.out_channels == 256
    assert isinstance(model, MaskRCNN) == cfg.MODEL.MASK_ON


@pytest.mark.slow
@pytest.mark.parametrize("path", _distinct_full_size({101}), ids=os.path.basename)
def test_full_size_r101_recipes_build(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert len(build_model(cfg).backbone.bottom_up.res4) == 23


def test_model_on_configured_device():
    model = build_model(tiny_cfg())
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_unknown_meta_architecture_names_key():
    cfg = tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    with pytest.raises(KeyError, match=r"Unknown META_ARCH name 'RetinaNet' \(from MODEL.META_ARCHITECTURE\). "
                                       r"Registered names: GeneralizedRCNN"):
        build_model(cfg)
