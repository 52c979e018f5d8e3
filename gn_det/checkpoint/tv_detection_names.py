"""torchvision detection checkpoints (``maskrcnn_resnet50_fpn_coco-*.pth``, ``fasterrcnn_resnet50_fpn*``)
-> gn_det names.

torchvision's detectors hold the ResNet under ``backbone.body`` (torchvision ResNet names), the FPN as
``backbone.fpn.inner_blocks.{i}`` / ``layer_blocks.{i}`` (``.0`` conv, ``.1`` norm in v2), the RPN conv as
``rpn.head.conv.0.0`` (``rpn.head.conv`` before torchvision 0.13), the box head as ``fc6``/``fc7`` (v1) or
``box_head.{i}.0``/``.1`` convs + a Linear (v2), the mask head as ``mask_head.{i}.0`` (``mask_fcn{n}``
before 0.13) and the mask predictor as ``conv5_mask``/``mask_fcn_logits``. Their class layout is already
ours (background first, (K+1)*4 deltas, K+1 mask channels).
"""
from __future__ import annotations

import re
from typing import Optional

from .resnet_names import rename_resnet_key

_RULES = [
    (re.compile(r"^backbone\.fpn\.inner_blocks\.(\d)\.0\.(\w+)$"), lambda m: f"backbone.fpn_lateral{int(m[1]) + 2}.{m[2]}"),
    (re.compile(r"^backbone\.fpn\.inner_blocks\.(\d)\.1\.(\w+)$"),
     lambda m: f"backbone.fpn_lateral{int(m[1]) + 2}.norm.{m[2]}"),
    (re.compile(r"^backbone\.fpn\.layer_blocks\.(\d)\.0\.(\w+)$"), lambda m: f"backbone.fpn_output{int(m[1]) + 2}.{m[2]}"),
    (re.compile(r"^backbone\.fpn\.layer_blocks\.(\d)\.1\.(\w+)$"),
     lambda m: f"backbone.fpn_output{int(m[1]) + 2}.norm.{m[2]}"),
    (re.compile(r"^rpn\.head\.conv(?:\.0\.0)?\.(\w+)$"), lambda m: f"rpn.head.conv.{m[1]}"),
    (re.compile(r"^roi_heads\.box_head\.fc6\.(\w+)$"), lambda m: f"roi_heads.box_head.fc1.{m[1]}"),
    (re.compile(r"^roi_heads\.box_head\.fc7\.(\w+)$"), lambda m: f"roi_heads.box_head.fc2.{m[1]}"),
    (re.compile(r"^roi_heads\.mask_head\.(\d+)\.0\.(\w+)$"), lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.{m[2]}"),
    (re.compile(r"^roi_heads\.mask_head\.(\d+)\.1\.(\w+)$"),
     lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.norm.{m[2]}"),
    (re.compile(r"^roi_heads\.mask_predictor\.conv5_mask\.(\w+)$"), lambda m: f"roi_heads.mask_predictor.deconv.{m[1]}"),
    (re.compile(r"^roi_heads\.mask_predictor\.mask_fcn_logits\.(\w+)$"),
     lambda m: f"roi_heads.mask_predictor.predictor.{m[1]}"),
]
_V2_BOX_CONV = re.compile(r"^roi_heads\.box_head\.(\d+)\.([01])\.(\w+)$")
_V2_BOX_FC = re.compile(r"^roi_heads\.box_head\.(\d+)\.(weight|bias)$")


def rename_tv_detection_key(name: str, num_box_convs: int = 0) -> Optional[str]:
    """gn_det name of a torchvision detector key; None when it has no counterpart.

    ``num_box_convs`` is the count of conv blocks in a v2 box head, so its Linear (the next index) is fc1.
    """
    if name.startswith("backbone.body."):
        return rename_resnet_key(name[len("backbone.body."):])
    for pattern, rename in _RULES:
        m = pattern.match(name)
        if m:
            return rename(m)
    m = _V2_BOX_CONV.match(name)
    if m:
        norm = ".norm" if m[2] == "1" else ""
        return f"roi_heads.box_head.conv{int(m[1]) + 1}{norm}.{m[3]}"
    m = _V2_BOX_FC.match(name)
    if m and int(m[1]) > num_box_convs:  # index num_box_convs is the Flatten
        return f"roi_heads.box_head.fc{int(m[1]) - num_box_convs}.{m[2]}"
    if name.startswith(("rpn.head.", "roi_heads.box_predictor.", "roi_heads.mask_head.mask_fcn")):
        return name  # same names as ours (torchvision < 0.13 mask_fcn{n} included)
    return None
