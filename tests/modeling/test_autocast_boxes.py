"""Under autocast the boxes are decoded and assigned to levels in float32, as detectron2 does: torchvision's
BoxCoder decodes in the deltas' dtype, so half deltas would give bf16/fp16 proposals and detections
(bf16 rounds 1100.7 to 1104), and a half box area overflows past 65504."""
import math

import torch

from gn_det.modeling import build_model
from gn_det.modeling.poolers import assign_boxes_to_levels

from .helpers import tiny_cfg

CLAMP = math.log(1000.0 / 16)  # torchvision's and detectron2's _DEFAULT_SCALE_CLAMP
TOL = 1e-3  # pixels: float32 decoding of coordinates up to 640 vs float64 (bf16 would be up to 2 px off)


def decode(deltas, boxes, weights, height, width):
    """R-CNN box decoding (Box2BoxTransform) in float64, clipped to the image."""
    deltas, boxes = deltas.double(), boxes.double()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    dx, dy, dw, dh = (deltas[:, k] / weights[k] for k in range(4))
    pcx, pcy = dx * w + cx, dy * h + cy
    pw, ph = torch.exp(dw.clamp(max=CLAMP)) * w, torch.exp(dh.clamp(max=CLAMP)) * h
    out = torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=1)
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def nearest(found, candidates, chunk=64):
    """Per found box, the max-abs distance to the nearest candidate box."""
    return torch.cat([torch.cdist(found[i:i + chunk].double(), candidates, p=float("inf")).min(dim=1).values
                      for i in range(0, len(found), chunk)])


def test_bf16_autocast_decodes_proposals_and_detections_in_float32():
    cfg = tiny_cfg("tiny/mask_rcnn_R_18_FPN_gn.yaml", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.MASK_ON", False,
                   "MODEL.ROI_BOX_HEAD.NUM_CONV", 0, "MODEL.ROI_BOX_HEAD.NUM_FC", 2)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    backbone = model.backbone.forward

    def float32_backbone(x):  # bf16 convs take torch's slow path on CPU; the heads and decoding are under test
        with torch.autocast("cpu", enabled=False):
            return backbone(x.float())

    model.backbone.forward = float32_backbone
    with torch.no_grad():  # deltas large enough that decoding matters
        model.rpn.head.bbox_pred.weight.normal_(std=0.05)
        model.roi_heads.box_predictor.bbox_pred.weight.normal_(std=0.05)
    seen = {}
    model.rpn.head.register_forward_hook(lambda m, i, o: seen.__setitem__("rpn_head", o))
    model.rpn.anchor_generator.register_forward_hook(lambda m, i, o: seen.__setitem__("anchors", o[0]))
    model.rpn.register_forward_hook(lambda m, i, o: seen.__setitem__("proposals", o[0][0]))
    model.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: seen.__setitem__("box_pred", o))
    model.roi_heads.register_forward_hook(lambda m, i, o: seen.__setitem__("detections", o[0][0]))
    height, width = 480, 640  # a multiple of 32: no padding, and no resize in the model
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model([image])[0]

    logits, deltas = seen["rpn_head"]
    assert {t.dtype for t in logits + deltas} == {torch.float32}
    flat = torch.cat([d.view(1, -1, 4, *d.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(-1, 4) for d in deltas])
    candidates = decode(flat, seen["anchors"], (1.0, 1.0, 1.0, 1.0), height, width)  # torchvision's RPN weights
    proposals = seen["proposals"]
    assert proposals.dtype == torch.float32 and len(proposals) > 100
    assert nearest(proposals, candidates).max() < TOL

    scores, box_deltas = seen["box_pred"]
    assert scores.dtype == box_deltas.dtype == torch.float32
    det = seen["detections"]
    assert det["boxes"].dtype == det["scores"].dtype == out["boxes"].dtype == torch.float32 and len(det["boxes"]) > 10
    weights = tuple(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS)
    per_class = box_deltas.view(len(proposals), -1, 4)
    for label in det["labels"].unique().tolist():
        picked = det["boxes"][det["labels"] == label]
        assert nearest(picked, decode(per_class[:, label], proposals, weights, height, width)).max() < TOL


def test_level_assignment_of_half_boxes_is_the_float32_formula():
    boxes = [[0, 0, 300, 300], [10, 10, 50, 60], [0, 0, 1000, 900], [5, 5, 400, 200]]
    expected = [min(max(math.floor(4 + math.log2(math.sqrt((x2 - x1) * (y2 - y1)) / 224 + 1e-8)), 2), 5) - 2
                for x1, y1, x2, y2 in boxes]
    assert expected == [2, 0, 3, 2]
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert assign_boxes_to_levels(torch.tensor(boxes, dtype=dtype), 2, 5).tolist() == expected, dtype
