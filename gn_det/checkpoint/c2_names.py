"""Caffe2 / Detectron blob names -> gn_det module names.

The naming rules are Detectron's (read in detectron2/checkpoint/c2_model_loading.py and Detectron's
ResNet.py / FPN.py / heads); the mapping to torchvision-based module names is our own:

- stem: ``conv1_w``; its norm ``res_conv1_bn_{s,b}`` (MSRA, AffineChannel) or ``conv1_gn_{s,b}`` (FAIR GN).
- blocks: ``res{2..5}_{i}_branch{2a,2b,2c}_w`` = conv1/conv2/conv3, ``..._branch1_w`` = the shortcut;
  norms add ``_bn_{s,b}`` (BN folded into a scale/bias) or ``_gn_{s,b}``. ``_b`` is a bias.
- FPN (Detectron detectors): ``fpn_inner_res{k}_{i}_sum[_lateral]`` = lateral k, ``fpn_res{k}_{i}_sum``
  = output k; RPN ``conv_rpn_fpn2``, ``rpn_cls_logits_fpn2``, ``rpn_bbox_pred_fpn2`` (shared over
  levels); box head ``fc6``/``fc7`` (or ``head_conv{n}`` for 4conv1fc), ``cls_score``, ``bbox_pred``;
  mask head ``_[mask]_fcn{n}`` (mask_rcnn_fcn_head_v1upXconvs) or, with GroupNorm, ``_mask_fcn{n}`` with
  ``_mask_fcn{n}_gn_{s,b}`` and no conv bias (mask_rcnn_fcn_head_v1upXconvs_gn: Detectron's
  detectron/modeling/mask_rcnn_heads.py, ConvGN in detector.py), ``conv5_mask`` (deconv),
  ``mask_fcn_logits``. Detectron already puts the background at index 0 with (K+1)*4 deltas and K+1
  mask channels, as torchvision does.
- ``fc1000_*`` / ``pred_*`` (ImageNet classifier) and ``*_momentum`` (SGD state) have no counterpart.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

from .converted import BN_FOLDED, BOTTOM_UP, GN

_PARAM = {"w": "weight", "b": "bias"}
_NORM_PARAM = {"s": "weight", "b": "bias"}
_BRANCH = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_NORM_KIND = {"bn": BN_FOLDED, "gn": GN}

# (pattern, function(match) -> module prefix); the suffix (_w / _b / _bn_s / _gn_b ...) is split off first.
_MODULES = [
    (re.compile(r"^(?:res_)?conv1$"), lambda m: f"{BOTTOM_UP}stem.conv1"),
    (re.compile(r"^res([2-5])_(\d+)_branch(1|2a|2b|2c)$"),
     lambda m: f"{BOTTOM_UP}res{m[1]}.{m[2]}.{_BRANCH[m[3]]}"),
    (re.compile(r"^fpn_inner_res([2-5])_\d+_sum(?:_lateral)?$"), lambda m: f"backbone.fpn_lateral{m[1]}"),
    (re.compile(r"^fpn_res([2-5])_\d+_sum$"), lambda m: f"backbone.fpn_output{m[1]}"),
    (re.compile(r"^conv_rpn(?:_fpn2)?$"), lambda m: "rpn.head.conv"),
    (re.compile(r"^rpn_cls_logits(?:_fpn2)?$"), lambda m: "rpn.head.cls_logits"),
    (re.compile(r"^rpn_bbox_pred(?:_fpn2)?$"), lambda m: "rpn.head.bbox_pred"),
    (re.compile(r"^fc6$"), lambda m: "roi_heads.box_head.fc1"),
    (re.compile(r"^fc7$"), lambda m: "roi_heads.box_head.fc2"),
    (re.compile(r"^head_conv(\d+)$"), lambda m: f"roi_heads.box_head.conv{m[1]}"),
    (re.compile(r"^cls_score$"), lambda m: "roi_heads.box_predictor.cls_score"),
    (re.compile(r"^bbox_pred$"), lambda m: "roi_heads.box_predictor.bbox_pred"),
    (re.compile(r"^_(?:\[mask\]|mask)_fcn(\d+)$"), lambda m: f"roi_heads.mask_head.mask_fcn{m[1]}"),
    (re.compile(r"^conv5_mask$"), lambda m: "roi_heads.mask_predictor.deconv"),
    (re.compile(r"^mask_fcn_logits$"), lambda m: "roi_heads.mask_predictor.predictor"),
]
_SUFFIX = re.compile(r"^(?P<base>.+?)(?:_(?P<norm>bn|gn)_(?P<np>[sb])|_(?P<p>[wb]))$")


def rename_c2_key(name: str) -> Optional[Tuple[str, Optional[str]]]:
    """(gn_det name, norm kind or None) for a Caffe2 blob name; None when it has no counterpart."""
    s = _SUFFIX.match(name)
    if not s:
        return None
    base = s["base"]
    if s["norm"] and base == "res_conv1":
        base = "conv1"
    for pattern, module in _MODULES:
        m = pattern.match(base)
        if not m:
            continue
        prefix = module(m)
        if s["norm"]:
            return f"{prefix}.norm.{_NORM_PARAM[s['np']]}", _NORM_KIND[s["norm"]]
        return f"{prefix}.{_PARAM[s['p']]}", None
    return None


C2_BACKBONE_KEY = re.compile(r"^res[2-5]_\d+_branch2a_w$")
C2_HEAD_KEY = re.compile(r"^(fpn_|conv_rpn|rpn_|fc6_|cls_score_|bbox_pred_|mask_fcn_logits_|_\[mask\]|_mask_fcn)")
