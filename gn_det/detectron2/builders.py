"""gn_det's ResNet-FPN, RPN head, box head and mask head in detectron2's registries, reading detectron2's cfg.

With ``MODEL.BACKBONE.NAME build_gn_det_resnet_fpn_backbone``, ``MODEL.RPN.HEAD_NAME GnDetRPNHead``,
``MODEL.ROI_BOX_HEAD.NAME GnDetFastRCNNConvFCHead`` and ``MODEL.ROI_MASK_HEAD.NAME
GnDetMaskRCNNConvUpsampleHead`` a detectron2 model gets what gn_det's own builders give (every gn_det norm
name, norms that include their activation replacing norm + ReLU, ``MODEL.*.CONV WS``, ``NORM_3X3`` for XBN,
per-level RPN head norms, gn_det's freezing), while the rest of the model, the trainer and the evaluator
stay detectron2's. Module names are detectron2's, so checkpoints map both ways (gn_det.checkpoint).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, ROI_BOX_HEAD_REGISTRY, ROI_MASK_HEAD_REGISTRY, Backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.proposal_generator import RPN_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead
from torch import nn

from gn_det.layers import get_conv
from gn_det.modeling import FPN, FastRCNNConvFCHead, RPNHead
from gn_det.modeling.backbone import build_resnet_backbone
from gn_det.modeling.blocks import c2_msra_fill, conv_fn, norm_fn
from gn_det.modeling.roi_heads import add_conv_stack
from gn_det.modeling.rpn import build_rpn_head_norm

from .norms import options_from


class GnDetResNetFPN(FPN, Backbone):
    """gn_det's FPN over its ResNet as a detectron2 Backbone: p2..p6 with ``output_shape()`` and size divisibility."""

    @property
    def size_divisibility(self) -> int:
        return 2 ** self.stages[-1]

    def output_shape(self) -> Dict[str, ShapeSpec]:
        strides = [2 ** s for s in self.stages] + [2 ** (self.stages[-1] + 1)]
        return {name: ShapeSpec(channels=self.out_channels, stride=stride)
                for name, stride in zip(self.out_features, strides)}


def _require_3_channels(input_shape: ShapeSpec) -> None:
    if input_shape.channels != 3:
        raise ValueError(f"build_gn_det_resnet_fpn_backbone takes 3-channel images (MODEL.PIXEL_MEAN), "
                         f"got {input_shape.channels}")


@BACKBONE_REGISTRY.register()
def build_gn_det_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> GnDetResNetFPN:
    """gn_det's ResNet (MODEL.RESNETS incl. NORM_3X3, CONV; FREEZE_AT) + FPN (MODEL.FPN incl. CONV)."""
    _require_3_channels(input_shape)
    with options_from(cfg):
        bottom_up = build_resnet_backbone(cfg)
        return GnDetResNetFPN(bottom_up, cfg.MODEL.FPN.IN_FEATURES, cfg.MODEL.FPN.OUT_CHANNELS,
                              norm_fn(cfg.MODEL.FPN.NORM, cfg, "MODEL.FPN.NORM"), cfg.MODEL.FPN.FUSE_TYPE,
                              conv_fn(cfg.MODEL.FPN.CONV, "MODEL.FPN.CONV"))


@RPN_HEAD_REGISTRY.register()
class GnDetRPNHead(RPNHead):
    """gn_det's RPN head (MODEL.RPN.HEAD_NORM, one per level for norms with running statistics; HEAD_CONV)
    under detectron2's names: ``conv``, ``conv_norm``, ``objectness_logits``, ``anchor_deltas``."""

    logits_name = "objectness_logits"
    deltas_name = "anchor_deltas"

    def __init__(self, cfg, input_shape: List[ShapeSpec]) -> None:
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"GnDetRPNHead needs the same channels at every level of MODEL.RPN.IN_FEATURES, "
                             f"got {sorted(channels)}")
        anchors = build_anchor_generator(cfg, input_shape)
        if len(set(anchors.num_anchors)) != 1 or anchors.box_dim != 4:
            raise ValueError("GnDetRPNHead needs the same number of 4-d anchors at every level "
                             f"(MODEL.ANCHOR_GENERATOR), got {anchors.num_anchors} of dim {anchors.box_dim}")
        (in_channels,) = channels
        with options_from(cfg):
            norm = build_rpn_head_norm(cfg, in_channels, len(input_shape))
        super().__init__(in_channels, anchors.num_anchors[0], norm,
                         conv=get_conv(cfg.MODEL.RPN.HEAD_CONV, key="MODEL.RPN.HEAD_CONV"))


@ROI_BOX_HEAD_REGISTRY.register()
class GnDetFastRCNNConvFCHead(FastRCNNConvFCHead):
    """gn_det's conv-fc box head (MODEL.ROI_BOX_HEAD: NUM_CONV, CONV_DIM, NUM_FC, FC_DIM, NORM, CONV) with
    detectron2's ``output_shape``."""

    def __init__(self, cfg, input_shape: ShapeSpec) -> None:
        h = cfg.MODEL.ROI_BOX_HEAD
        if h.NUM_CONV + h.NUM_FC == 0:
            raise ValueError("MODEL.ROI_BOX_HEAD needs NUM_CONV + NUM_FC >= 1 (4 + 1 for 4conv1fc, 0 + 2 for 2fc)")
        if input_shape.height != input_shape.width:
            raise ValueError(f"GnDetFastRCNNConvFCHead needs square pooled features, got {input_shape}")
        with options_from(cfg):
            super().__init__(input_shape.channels, input_shape.height, conv_dims=[h.CONV_DIM] * h.NUM_CONV,
                             fc_dims=[h.FC_DIM] * h.NUM_FC, norm=norm_fn(h.NORM, cfg, "MODEL.ROI_BOX_HEAD.NORM"),
                             conv=conv_fn(h.CONV, "MODEL.ROI_BOX_HEAD.CONV"))

    @property
    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self.out_features)


@ROI_MASK_HEAD_REGISTRY.register()
class GnDetMaskRCNNConvUpsampleHead(BaseMaskRCNNHead):
    """gn_det's mask convs ``mask_fcn1..n`` (MODEL.ROI_MASK_HEAD: NUM_CONV, CONV_DIM, NORM, CONV), then
    detectron2's ``deconv`` (2x, ReLU) and ``predictor`` (one logit map per class, or one when
    CLS_AGNOSTIC_MASK); detectron2's mask loss and inference (BaseMaskRCNNHead)."""

    def __init__(self, cfg, input_shape: ShapeSpec) -> None:
        m = cfg.MODEL.ROI_MASK_HEAD
        super().__init__(loss_weight=1.0, vis_period=cfg.VIS_PERIOD)
        with options_from(cfg):
            channels = add_conv_stack(self, "mask_fcn", input_shape.channels, [m.CONV_DIM] * m.NUM_CONV,
                                      norm_fn(m.NORM, cfg, "MODEL.ROI_MASK_HEAD.NORM"),
                                      conv_fn(m.CONV, "MODEL.ROI_MASK_HEAD.CONV"))
        self.num_conv = m.NUM_CONV
        num_masks = 1 if m.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES
        self.deconv = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.predictor = nn.Conv2d(channels, num_masks, 1)
        c2_msra_fill(self.deconv)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) pooled features -> (R, classes, 2S, 2S) mask logits."""
        for k in range(1, self.num_conv + 1):
            x = getattr(self, f"mask_fcn{k}")(x)
        return self.predictor(F.relu(self.deconv(x)))


__all__ = ["GnDetFastRCNNConvFCHead", "GnDetMaskRCNNConvUpsampleHead", "GnDetRPNHead", "GnDetResNetFPN",
           "build_gn_det_resnet_fpn_backbone"]
