"""A detectron2 model trained with gn_det norms loads into gn_det's own model (nothing missing) and gives
the same detections; a gn_det-trained checkpoint loads back into the detectron2 + plugin model."""
import os

import numpy as np
import pytest
from PIL import Image

from d2_common import SKIP_REASON, TINY

pytest.importorskip("detectron2", reason=SKIP_REASON)

import torch  # noqa: E402
from torchvision.ops import box_iou  # noqa: E402

from gn_det.config import CONFIGS_DIR  # noqa: E402
from gn_det.config import get_cfg as gn_det_get_cfg  # noqa: E402

# GN backbone and box head, batch-free SN in the FPN and mask head, a GN RPN head: every gn_det builder.
NORMS = ["MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "SN", "MODEL.SN.USE_BN", "False", "MODEL.ROI_BOX_HEAD.NORM", "GN",
         "MODEL.ROI_MASK_HEAD.NORM", "SN", "MODEL.RPN.HEAD_NORM", "GN", "MODEL.ROI_BOX_HEAD.NUM_CONV", "2",
         "MODEL.ROI_BOX_HEAD.NUM_FC", "1", "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def _image(d2_shapes):
    from detectron2.data import DatasetCatalog
    record = DatasetCatalog.get(d2_shapes[1])[0]
    return np.asarray(Image.open(record["file_name"]).convert("RGB"))[:, :, ::-1].copy()  # BGR, as cv2.imread


def _match_share(d2_instances, ours, iou=0.99):
    """Share of detectron2's detections that gn_det reproduces: same class, box IoU >= iou."""
    d2_boxes, d2_classes = d2_instances.pred_boxes.tensor, d2_instances.pred_classes
    if len(d2_boxes) == 0:
        return float("nan")
    ious = box_iou(d2_boxes, ours["boxes"])
    same = d2_classes[:, None] + 1 == ours["labels"][None, :]  # gn_det's labels are 1..K
    return ((ious >= iou) & same).any(1).float().mean().item()


def _gn_det_cfg(weights):
    cfg = gn_det_get_cfg()
    cfg.merge_from_file(str(CONFIGS_DIR / "Base-RCNN-FPN.yaml"))
    cfg.merge_from_list(TINY + NORMS + ["MODEL.WEIGHTS", weights])
    return cfg


def test_detectron2_checkpoint_gives_the_same_detections_in_gn_det(tiny_d2_cfg, d2_shapes, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.engine import DefaultPredictor as D2Predictor
    from detectron2.engine import DefaultTrainer

    from gn_det.checkpoint import load_weights
    from gn_det.engine import DefaultPredictor
    from gn_det.modeling import build_model

    cfg = tiny_d2_cfg("Base-gn_det-builders.yaml", *NORMS, "SOLVER.MAX_ITER", "3")
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # detectron2's own checkpointer writes model_final.pth
    path = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
        f.write(cfg.dump())  # as detectron2's default_setup writes it beside the checkpoint

    report = load_weights(build_model(_gn_det_cfg(path)), path, verbose=False)
    assert report.format.name == "detectron2"
    assert not report.missing and not report.unexpected and not report.shape_mismatched, report.table()

    d2_cfg = cfg.clone()
    d2_cfg.defrost()
    d2_cfg.MODEL.WEIGHTS = path
    image = _image(d2_shapes)
    d2_out = D2Predictor(d2_cfg)(image)["instances"].to("cpu")
    ours = DefaultPredictor(_gn_det_cfg(path))(image)
    assert len(d2_out) > 10
    share = _match_share(d2_out, ours)
    print(f"round trip: {share:.3f} of {len(d2_out)} detectron2 detections reproduced at IoU >= 0.99")
    assert share >= 0.99
    # the masks of matched detections agree too (detectron2's paste on both sides; two empty masks agree)
    d2_masks = d2_out.pred_masks.float()
    same_class = d2_out.pred_classes[:, None] + 1 == ours["labels"][None, :]
    best = (box_iou(d2_out.pred_boxes.tensor, ours["boxes"]) * same_class).argmax(1)
    ours_masks = (ours["masks"][best, 0] >= 0.5).float()
    inter = (d2_masks * ours_masks).sum((1, 2))
    union = ((d2_masks + ours_masks) > 0).float().sum((1, 2))
    mask_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    print(f"round trip: mean mask IoU {mask_iou.mean():.4f}, {(d2_masks.sum((1, 2)) > 0).sum()} non-empty masks")
    assert mask_iou.mean() > 0.99

    # and back: gn_det's save of the same weights loads into the detectron2 + plugin model, same detections
    from gn_det.detectron2 import load_into_detectron2
    model = build_model(_gn_det_cfg(path))
    load_weights(model, path, verbose=False)
    torch.save({"model": model.state_dict()}, tmp_path / "gn_det_model.pth")
    d2_model = D2Predictor(cfg).model  # built by detectron2, weights at init
    result = load_into_detectron2(d2_model, str(tmp_path / "gn_det_model.pth"))
    assert result.missing == [] and result.unexpected == [], result
    d2_model.eval()
    for name, tensor in d2_model.state_dict().items():
        if name not in ("pixel_mean", "pixel_std"):
            torch.testing.assert_close(tensor, trainer.model.state_dict()[name], rtol=0, atol=0, msg=name)
