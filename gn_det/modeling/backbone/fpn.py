"""Feature Pyramid Network (Lin et al. 2017) over a ResNet, with MODEL.FPN.NORM after every conv.

Names follow detectron2: ``fpn_lateral{2..5}``, ``fpn_output{2..5}`` (each with ``.norm``), the ResNet
as ``bottom_up``; P6 is a stride-2 subsampling of P5 (detectron2's LastLevelMaxPool, no parameters).
The convs are of the MODEL.FPN.CONV class (plain or WS); no ReLU follows them, so a norm that includes
its activation is built without it.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import Conv2d, ConvFn, NormFn, c2_xavier_fill, conv_fn, norm_fn
from ..registry import BACKBONE_REGISTRY
from .resnet import build_resnet_backbone


class FPN(nn.Module):
    """Top-down pyramid over ``bottom_up``'s ``in_features``; outputs p<k> for each input stage + one extra.

    ``forward(images)`` returns OrderedDict p2..p6 (finest first), each with ``out_channels`` channels.
    """

    def __init__(self, bottom_up: nn.Module, in_features: List[str], out_channels: int, norm: NormFn,
                 fuse_type: str = "sum", conv: ConvFn = Conv2d) -> None:
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"MODEL.FPN.FUSE_TYPE must be 'sum' or 'avg', got {fuse_type!r}")
        missing = [f for f in in_features if f not in bottom_up.out_features]
        if missing:
            raise ValueError(f"MODEL.FPN.IN_FEATURES {missing} are not produced by the backbone "
                             f"(MODEL.RESNETS.OUT_FEATURES={bottom_up.out_features})")
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.out_channels = out_channels
        self.fuse_type = fuse_type
        strides = [bottom_up._out_feature_strides[f] for f in in_features]
        for fine, coarse in zip(strides, strides[1:]):
            if coarse != 2 * fine:
                raise ValueError(f"MODEL.FPN.IN_FEATURES {in_features} must have strides doubling level to level, got {strides}")
        self.stages = [int(math.log2(s)) for s in strides]
        for feature, stage in zip(in_features, self.stages):
            in_ch = bottom_up._out_feature_channels[feature]
            lateral = conv(in_ch, out_channels, 1, norm=norm(out_channels))
            output = conv(out_channels, out_channels, 3, padding=1, norm=norm(out_channels))
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{stage}", lateral)
            self.add_module(f"fpn_output{stage}", output)
        self.out_features = [f"p{s}" for s in self.stages] + [f"p{self.stages[-1] + 1}"]

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, 3, H, W) -> OrderedDict p2..p6, H and W divisible by 32 (the transform pads to that)."""
        bottom_up = self.bottom_up(x)
        results: List[torch.Tensor] = []
        prev = None
        for feature, stage in zip(reversed(self.in_features), reversed(self.stages)):
            lateral = getattr(self, f"fpn_lateral{stage}")(bottom_up[feature])
            if prev is not None:
                top_down = F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
                lateral = lateral + top_down
                if self.fuse_type == "avg":
                    lateral = lateral / 2
            prev = lateral
            results.insert(0, getattr(self, f"fpn_output{stage}")(prev))
        results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return OrderedDict(zip(self.out_features, results))


@BACKBONE_REGISTRY.register("build_resnet_fpn_backbone")
def build_resnet_fpn_backbone(cfg) -> FPN:
    """ResNet (MODEL.RESNETS, FREEZE_AT) + FPN (MODEL.FPN): the backbone of every recipe in configs/."""
    bottom_up = build_resnet_backbone(cfg)
    return FPN(bottom_up, cfg.MODEL.FPN.IN_FEATURES, cfg.MODEL.FPN.OUT_CHANNELS,
               norm_fn(cfg.MODEL.FPN.NORM, cfg, "MODEL.FPN.NORM"), cfg.MODEL.FPN.FUSE_TYPE,
               conv_fn(cfg.MODEL.FPN.CONV, "MODEL.FPN.CONV"))
