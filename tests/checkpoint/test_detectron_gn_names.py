"""Detectron's GN Mask R-CNN (its own blob names, written by hand from Detectron's head code) loads
completely: the GN mask head's ``_mask_fcn{n}`` convs and their ``_gn_s/_gn_b`` land in the mask head."""
from __future__ import annotations

import os

import torch

from gn_det.checkpoint import load_weights
from gn_det.config import get_cfg
from gn_det.modeling import build_model

from test_formats import randomized
from writers import to_detectron_c2_gn_detector_blobs, write_pickle

TINY_GN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine", "tiny_mask_rcnn.yaml")


def _gn_mask_rcnn():
    cfg = get_cfg()
    cfg.merge_from_file(TINY_GN)  # GN in the ResNet, FPN, conv box head and mask head
    cfg.merge_from_list(["MODEL.ROI_MASK_HEAD.NUM_CONV", 2])
    return build_model(cfg).eval()


def test_detectron_gn_mask_rcnn_pkl_loads_its_mask_head(tmp_path):
    src = randomized(_gn_mask_rcnn(), seed=3)
    blobs = to_detectron_c2_gn_detector_blobs(src.state_dict())
    assert {"_mask_fcn1_w", "_mask_fcn1_gn_s", "_mask_fcn1_gn_b", "_mask_fcn2_w"} <= set(blobs)
    assert not any(k.startswith("_[mask]") for k in blobs) and "_mask_fcn1_b" not in blobs  # ConvGN: no conv bias
    write_pickle(tmp_path / "model_final.pkl", {"blobs": blobs, "cfg": "MODEL: {TYPE: generalized_rcnn}"})
    dst = _gn_mask_rcnn()
    report = load_weights(dst, str(tmp_path / "model_final.pkl"), verbose=False)
    assert report.format.name == "detectron-c2-detector"
    assert not report.unexpected and not report.missing and not report.shape_mismatched
    assert not report.norm_mismatches and not report.skipped_predictors
    mask_keys = [k for k in src.state_dict() if k.startswith("roi_heads.mask_head.")]
    assert mask_keys and set(mask_keys) <= set(report.matched)
    sd_src, sd_dst = src.state_dict(), dst.state_dict()
    for k in sd_src:
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(sd_dst[k], sd_src[k], rtol=0, atol=0, msg=k)
