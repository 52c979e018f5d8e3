"""DefaultPredictor(cfg), detectron2's: BGR in (flipped for INPUT.FORMAT RGB), the test resize, outputs in
the original image's pixels, one-line errors. The numbers against detectron2's formulas:
tests/checkpoint/test_detectron2_parity.py."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from gn_det.config import get_cfg, resolve_config_path
from gn_det.engine import DefaultPredictor


def tiny_cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_file(resolve_config_path("tiny/mask_rcnn_R_18_FPN_gn.yaml"))
    cfg.merge_from_list(["INPUT.MIN_SIZE_TEST", 50, "INPUT.MAX_SIZE_TEST", 1000, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
                         "DATASETS.TEST", ("shapes_val",), *opts])
    return cfg


@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_predictor_resizes_converts_and_maps_back(fmt, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="gn_det"):
        predictor = DefaultPredictor(tiny_cfg("INPUT.FORMAT", fmt))
    assert "MODEL.WEIGHTS is empty" in caplog.text
    assert predictor.metadata.name == "shapes_val" and not predictor.model.training
    seen = {}
    predictor.model.register_forward_pre_hook(lambda m, args, kwargs: seen.update(image=args[0][0], **kwargs),
                                              with_kwargs=True)
    bgr = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    out = predictor(bgr)
    model_order = bgr[:, :, ::-1] if fmt == "RGB" else bgr
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(model_order)).resize((75, 50), Image.BILINEAR))
    torch.testing.assert_close(seen["image"], torch.from_numpy(expected.transpose(2, 0, 1).astype(np.float32)))
    assert seen["original_sizes"] == [(60, 90)]
    assert len(out["boxes"]) > 0 and out["masks"].shape[1:] == (1, 60, 90)
    assert (out["boxes"][:, 2] <= 90).all() and (out["boxes"][:, 3] <= 60).all()


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), [[0]]])
def test_predictor_refuses_what_is_not_one_hxwx3_image(bad):
    predictor = DefaultPredictor(tiny_cfg())
    with pytest.raises(ValueError, match=r"DefaultPredictor takes one HxWx3 numpy image in BGR order \(e.g. cv2.imread\), got"):
        predictor(bad)
