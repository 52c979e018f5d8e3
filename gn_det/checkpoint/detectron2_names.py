"""detectron2 model-zoo checkpoints -> gn_det names and torchvision's class layout.

detectron2's module names equal ours in the backbone and heads; they differ in three places:
- the RPN is ``proposal_generator.rpn_head.{conv,objectness_logits,anchor_deltas}`` (ours
  ``rpn.head.{conv,cls_logits,bbox_pred}``; both lay deltas out anchor-major, 4 per anchor);
- the mask head holds its own ``deconv``/``predictor`` (ours ``roi_heads.mask_predictor.*``);
- the predictors: detectron2's ``cls_score`` has the background LAST (K+1 rows), ``bbox_pred`` has K*4
  class-specific rows (no background) and the mask ``predictor`` K channels; torchvision's have the
  background FIRST, (K+1)*4 rows and K+1 channels. We rotate the background to index 0 and give the
  background all-zero deltas / mask logits (torchvision never reads them: it drops class 0 at inference
  and trains only the ground-truth class's deltas and mask).
Backbone-only detectron2 files (e.g. converted by detectron2's convert-torchvision-to-d2.py) name
``stem.*`` / ``res2.*`` without the ``backbone.bottom_up.`` prefix.
"""
from __future__ import annotations

import re
from typing import Dict, List

import torch

from .converted import BOTTOM_UP

_RENAMES = [
    ("proposal_generator.rpn_head.conv.", "rpn.head.conv."),
    ("proposal_generator.rpn_head.objectness_logits.", "rpn.head.cls_logits."),
    ("proposal_generator.rpn_head.anchor_deltas.", "rpn.head.bbox_pred."),
    ("roi_heads.mask_head.deconv.", "roi_heads.mask_predictor.deconv."),
    ("roi_heads.mask_head.predictor.", "roi_heads.mask_predictor.predictor."),
]
_BARE_BACKBONE = re.compile(r"^(stem|res[2-5])\.")
CLS_SCORE = "roi_heads.box_predictor.cls_score."
BBOX_PRED = "roi_heads.box_predictor.bbox_pred."
MASK_PRED = "roi_heads.mask_predictor.predictor."


def rename_detectron2_key(name: str) -> str:
    """gn_det name of a detectron2 key (unchanged when detectron2 and gn_det agree)."""
    if _BARE_BACKBONE.match(name):
        return BOTTOM_UP + name
    for old, new in _RENAMES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def to_torchvision_class_layout(tensors: Dict[str, torch.Tensor]) -> List[str]:
    """Convert detectron2's predictor tensors (already renamed) in place; return notes for the report."""
    notes: List[str] = []
    for param in ("weight", "bias"):
        key = CLS_SCORE + param
        if key in tensors:
            t = tensors[key]
            tensors[key] = torch.cat([t[-1:], t[:-1]])  # background: last -> first
            if param == "weight":
                notes.append(f"cls_score: background moved from index {t.shape[0] - 1} (detectron2) to 0")
    num_classes = tensors[CLS_SCORE + "weight"].shape[0] - 1 if CLS_SCORE + "weight" in tensors else None
    for param in ("weight", "bias"):
        key = BBOX_PRED + param
        if key in tensors:
            t = tensors[key]
            if t.shape[0] == 4 and num_classes not in (None, 1):  # class-agnostic: same deltas for every class
                tensors[key] = t.repeat((num_classes + 1,) + (1,) * (t.dim() - 1))
                note = f"bbox_pred: class-agnostic deltas repeated for {num_classes} classes + background"
            else:
                tensors[key] = torch.cat([t.new_zeros((4,) + t.shape[1:]), t])
                note = f"bbox_pred: deltas of {t.shape[0] // 4} classes, background deltas (zeros) prepended"
            if param == "weight":
                notes.append(note)
        key = MASK_PRED + param
        if key in tensors:
            t = tensors[key]
            if t.shape[0] == 1 and num_classes not in (None, 1):  # class-agnostic mask
                tensors[key] = t.repeat((num_classes + 1,) + (1,) * (t.dim() - 1))
                note = f"mask predictor: class-agnostic channel repeated for {num_classes} classes + background"
            else:
                tensors[key] = torch.cat([t.new_zeros((1,) + t.shape[1:]), t])
                note = f"mask predictor: {t.shape[0]} class channels, a background channel (zeros) prepended"
            if param == "weight":
                notes.append(note)
    return notes
