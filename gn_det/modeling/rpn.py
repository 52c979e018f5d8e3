"""Region Proposal Network: torchvision's RPN (matching, sampling, losses, NMS) with detectron2's anchors
(gn_det.modeling.anchors) and a head whose 3x3 conv may take a norm (MODEL.RPN.HEAD_NORM, one per level for
norms with running statistics) and be WS (MODEL.RPN.HEAD_CONV), reading only MODEL.RPN.IN_FEATURES."""
from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.rpn import RegionProposalNetwork

from gn_det.config import norm_options_from_cfg
from gn_det.layers import applies_activation, get_conv, get_norm, norm_traits, per_level_norms

from .anchors import build_anchor_generator


class RPNHead(nn.Module):
    """Shared 3x3 conv (+ optional ``conv_norm``) + ReLU, then objectness and box-delta 1x1 convs.

    Names follow docs/INTERFACES.md: ``conv``, ``conv_norm``, ``cls_logits``, ``bbox_pred``.
    ``norm`` is one module applied to every level, or an nn.ModuleList with one norm per level (level k
    uses ``conv_norm[k]``; see build_rpn_head_norm). ``conv`` is the 3x3 conv's class (plain or WS).
    A norm that applies its own activation (built with act=True, e.g. FRN+TLU) replaces the ReLU.
    Init as detectron2/torchvision: normal(std=0.01), bias 0. A subclass may rename the two output convs
    (``logits_name``, ``deltas_name``: gn_det.detectron2's head uses detectron2's names).
    """

    logits_name = "cls_logits"
    deltas_name = "bbox_pred"

    def __init__(self, in_channels: int, num_anchors: int, norm: Union[nn.Module, nn.ModuleList, None] = None,
                 *, conv: type = nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv(in_channels, in_channels, 3, padding=1, bias=norm is None)
        self.conv_norm = norm
        setattr(self, self.logits_name, nn.Conv2d(in_channels, num_anchors, 1))
        setattr(self, self.deltas_name, nn.Conv2d(in_channels, num_anchors * 4, 1))
        for layer in (self.conv, getattr(self, self.logits_name), getattr(self, self.deltas_name)):
            nn.init.normal_(layer.weight, std=0.01)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per level: objectness logits (N, A, H, W) and box deltas (N, 4A, H, W), as torchvision's RPNHead,
        in float32 (or wider) also under autocast: torchvision's BoxCoder decodes in the deltas' dtype, and bf16/fp16
        proposals are pixels off (bf16 rounds 1100.7 to 1104); detectron2 decodes in float32 too."""
        per_level = isinstance(self.conv_norm, nn.ModuleList)
        if per_level and len(features) != len(self.conv_norm):
            raise ValueError(f"the RPN head has one norm per level for {len(self.conv_norm)} levels "
                             f"(MODEL.RPN.IN_FEATURES), got {len(features)} feature maps")
        logits, deltas = [], []
        predict_logits, predict_deltas = getattr(self, self.logits_name), getattr(self, self.deltas_name)
        for level, x in enumerate(features):
            norm = self.conv_norm[level] if per_level else self.conv_norm
            x = self.conv(x)
            if norm is not None:
                x = norm(x)
            if not applies_activation(norm):
                x = F.relu(x)
            logit, delta = predict_logits(x), predict_deltas(x)
            wide = torch.promote_types(delta.dtype, torch.float32)  # half (autocast) -> float32; float64 kept
            logits.append(logit.to(wide))
            deltas.append(delta.to(wide))
        return logits, deltas


class RPN(RegionProposalNetwork):
    """torchvision's RegionProposalNetwork over the named feature maps only (MODEL.RPN.IN_FEATURES)."""

    def __init__(self, in_features: List[str], *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.in_features = list(in_features)

    def forward(self, images, features: Dict[str, torch.Tensor], targets=None):  # type: ignore[override]
        """Proposals per image and the RPN losses (training), as torchvision's RPN."""
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise KeyError(f"MODEL.RPN.IN_FEATURES {missing} not in the backbone's outputs {list(features)}")
        selected = OrderedDict((f, features[f]) for f in self.in_features)
        return super().forward(images, selected, targets)


def build_rpn_head_norm(cfg, channels: int, num_levels: int) -> Union[nn.Module, nn.ModuleList, None]:
    """MODEL.RPN.HEAD_NORM for a head run on ``num_levels`` levels: one norm, or one per level.

    A norm with running statistics gets one copy per level with shared parameters (per-level statistics,
    as detectron2's CycleBatchNormList): one module over every level would end with statistics
    dominated by the last level, and evaluation would normalise p2 with them. Other norms are shared.
    """
    make = functools.partial(get_norm, cfg.MODEL.RPN.HEAD_NORM, channels, norm_options_from_cfg(cfg),
                             key="MODEL.RPN.HEAD_NORM", act=True)
    norm = make()
    if norm is None or num_levels < 2 or not norm_traits(norm).running_stats:
        return norm
    first = [norm]  # the norm built to read its traits becomes level 0; the others are built
    return per_level_norms(lambda: first.pop() if first else make(), num_levels)


def build_rpn(cfg, in_channels: int, strides: Sequence[int]) -> RPN:
    """torchvision's RPN with the thresholds, sample sizes and top-k of MODEL.RPN, and detectron2's anchors
    for the levels of MODEL.RPN.IN_FEATURES, whose strides are ``strides``."""
    rpn = cfg.MODEL.RPN
    anchors = build_anchor_generator(cfg, strides)
    norm = build_rpn_head_norm(cfg, in_channels, len(rpn.IN_FEATURES))
    head = RPNHead(in_channels, anchors.num_anchors_per_location()[0], norm,
                   conv=get_conv(rpn.HEAD_CONV, key="MODEL.RPN.HEAD_CONV"))
    bg_thresh, fg_thresh = split_iou_thresholds(rpn.IOU_THRESHOLDS, "MODEL.RPN.IOU_THRESHOLDS")
    return RPN(
        rpn.IN_FEATURES, anchors, head, fg_iou_thresh=fg_thresh, bg_iou_thresh=bg_thresh,
        batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE, positive_fraction=rpn.POSITIVE_FRACTION,
        pre_nms_top_n=dict(training=rpn.PRE_NMS_TOPK_TRAIN, testing=rpn.PRE_NMS_TOPK_TEST),
        post_nms_top_n=dict(training=rpn.POST_NMS_TOPK_TRAIN, testing=rpn.POST_NMS_TOPK_TEST),
        nms_thresh=rpn.NMS_THRESH,
    )


def split_iou_thresholds(values, key: str) -> Tuple[float, float]:
    """(bg below, fg at or above) from detectron2's IOU_THRESHOLDS: [t] means both are t."""
    values = [float(v) for v in values]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2 and values[0] <= values[1]:
        return values[0], values[1]
    raise ValueError(f"{key} must be [t] or [bg_below, fg_at_or_above] with bg <= fg, got {values}")
