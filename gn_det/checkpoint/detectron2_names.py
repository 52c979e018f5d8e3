"""detectron2 model-zoo checkpoints -> gn_det names and torchvision's class layout.

detectron2's module names equal ours in the backbone and heads; they differ in three places:
- the RPN is ``proposal_generator.rpn_head.{conv,objectness_logits,anchor_deltas}`` (+ ``conv_norm`` in
  gn_det.detectron2's GnDetRPNHead; ours ``rpn.head.{conv,conv_norm,cls_logits,bbox_pred}``; both lay deltas out anchor-major, 4 per anchor);
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
from typing import Dict, List, Optional

import torch

from .converted import BOTTOM_UP

_RENAMES = [
    ("proposal_generator.rpn_head.conv.", "rpn.head.conv."),
    ("proposal_generator.rpn_head.conv_norm.", "rpn.head.conv_norm."),  # gn_det.detectron2's GnDetRPNHead
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


def _add_background_rows(t: torch.Tensor, rows: int, num_classes: Optional[int], label: str, unit: str):
    """(K*rows or rows, ...) class rows -> ((K+1)*rows, ...): a class-agnostic block is repeated for every
    class and the background; class-specific rows get an all-zero background block in front."""
    if t.shape[0] == rows and num_classes not in (None, 1):  # class-agnostic
        note = f"{label}: class-agnostic {unit} repeated for {num_classes} classes + background"
        return t.repeat((num_classes + 1,) + (1,) * (t.dim() - 1)), note
    note = f"{label}: {unit} of {t.shape[0] // rows} classes, background {unit} (zeros) prepended"
    return torch.cat([t.new_zeros((rows,) + t.shape[1:]), t]), note


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
        for prefix, rows, label, unit in ((BBOX_PRED, 4, "bbox_pred", "deltas"), (MASK_PRED, 1, "mask predictor", "channels")):
            key = prefix + param
            if key in tensors:
                tensors[key], note = _add_background_rows(tensors[key], rows, num_classes, label, unit)
                if param == "weight":
                    notes.append(note)
    return notes


def to_detectron2_layout(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A gn_det model's state dict in detectron2's names and class layout (the inverse of the above).

    The RPN and mask-predictor names go back to detectron2's; ``cls_score`` moves the background from
    index 0 to last; ``bbox_pred`` and the mask ``predictor`` drop the background block (class-specific
    layout: (K+1)*4 -> K*4 rows, K+1 -> K channels). Other keys, norms included, are shared as they are.
    """
    out: Dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        for d2_prefix, ours in _RENAMES:
            if name.startswith(ours):
                name = d2_prefix + name[len(ours):]
                break
        if name.startswith(CLS_SCORE):
            tensor = torch.cat([tensor[1:], tensor[:1]])
        elif name.startswith(BBOX_PRED):
            tensor = tensor[4:]
        elif name.startswith("roi_heads.mask_head.predictor."):
            tensor = tensor[1:]
        out[name] = tensor
    return out
