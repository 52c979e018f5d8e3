"""A class-specific predictor is skipped as "another class count" only when its number of outputs
differs; a predictor whose input width differs (another FC_DIM) is a shape mismatch."""
from __future__ import annotations

import os

import torch

from gn_det.checkpoint import load_weights
from gn_det.config import get_cfg
from gn_det.modeling import build_model

TINY_GN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine", "tiny_mask_rcnn.yaml")


def _model(*opts):
    cfg = get_cfg()
    cfg.merge_from_file(TINY_GN)
    cfg.merge_from_list(list(opts))
    return build_model(cfg)


def test_width_change_is_a_mismatch_class_change_a_skip(tmp_path):
    torch.save(_model().state_dict(), tmp_path / "w.pth")  # FC_DIM 64, 4 classes
    wider = load_weights(_model("MODEL.ROI_BOX_HEAD.FC_DIM", 128), str(tmp_path / "w.pth"), verbose=False)
    assert not wider.skipped_predictors
    assert ("roi_heads.box_predictor.cls_score.weight", (5, 64), (5, 128)) in wider.shape_mismatched
    assert "another class count" not in wider.table()
    fewer = load_weights(_model("MODEL.ROI_HEADS.NUM_CLASSES", 2), str(tmp_path / "w.pth"), verbose=False)
    assert ("roi_heads.box_predictor.cls_score.weight", (5, 64), (3, 64)) in fewer.skipped_predictors
    assert not fewer.shape_mismatched
