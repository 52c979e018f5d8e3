"""ResNet / ResNeXt with the config's norm in the stem, every block and every shortcut (detectron2 names).

Module names match detectron2 (``stem.conv1.norm``, ``res2.0.conv1``, ``res2.0.shortcut``) so its
checkpoints map by name. ``MODEL.RESNETS.NORM_3X3`` puts a second norm (e.g. GN) at each bottleneck's
3x3 conv and in the stem, the XBN block of Huang et al., CVPR 2022; MODEL.RESNETS.NORM stays elsewhere.
For basic blocks (R-18/34), whose two convs are both 3x3, it goes to the first conv (``conv1``): the
position inside the residual branch, as the bottleneck's 3x3, while the branch's last norm (the one
ZERO_INIT_RESIDUAL zeroes) stays MODEL.RESNETS.NORM. Every conv is of the MODEL.RESNETS.CONV class
(plain or WS). A norm that includes its activation (FRN+TLU, EvoNorm) replaces norm + ReLU where a ReLU
follows it (stem, conv1/conv2 of a bottleneck, conv1 of a basic block); the convs before the residual
add and the shortcuts have no ReLU, so their norms are built without it.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..freeze import freeze_module
from ..blocks import Conv2d, ConvFn, NormFn, c2_msra_fill, conv_fn, norm_fn

# Blocks per stage res2..res5 (He et al. 2016, Table 1).
BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
STAGE_NAMES = ["res2", "res3", "res4", "res5"]


class BasicStem(nn.Module):
    """7x7/2 conv with norm and ReLU, then 3x3/2 max pool: stride 4."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormFn, conv: ConvFn = Conv2d) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = 4
        self.conv1 = conv(in_channels, out_channels, 7, stride=2, padding=3, norm=norm(out_channels, act=True),
                          activation=F.relu_)
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C, H/4, W/4)."""
        x = self.conv1(x)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: NormFn, conv: ConvFn) -> Optional[Conv2d]:
    """1x1 projection with norm when the shape changes, else None (identity)."""
    if in_channels == out_channels and stride == 1:
        return None
    shortcut = conv(in_channels, out_channels, 1, stride=stride, norm=norm(out_channels))
    c2_msra_fill(shortcut)
    return shortcut


class BasicBlock(nn.Module):
    """Two 3x3 convs (R-18/34); ``norm_first`` is conv1's norm (NORM_3X3's position), ``norm`` the rest."""

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, norm: NormFn, norm_first: NormFn,
        zero_init_residual: bool = False, conv: ConvFn = Conv2d,
    ) -> None:
        super().__init__()
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm, conv)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1,
                          norm=norm_first(out_channels, act=True), activation=F.relu_)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, norm=norm(out_channels, zero_init=zero_init_residual))
        for layer in (self.conv1, self.conv2):
            c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(conv2(relu(conv1(x))) + shortcut(x))."""
        out = self.conv2(self.conv1(x))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu_(out)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, each with norm; ``norm_3x3`` is the 3x3 conv's norm.

    ``stride_in_1x1``: the stride sits in the first 1x1 conv (MSRA/Caffe2 weights) instead of the
    3x3 conv (torchvision weights, FAIR's GN weights).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, bottleneck_channels: int, stride: int, norm: NormFn,
        norm_3x3: NormFn, num_groups: int = 1, stride_in_1x1: bool = False, dilation: int = 1,
        zero_init_residual: bool = False, conv: ConvFn = Conv2d,
    ) -> None:
        super().__init__()
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm, conv)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv(in_channels, bottleneck_channels, 1, stride=stride_1x1,
                          norm=norm(bottleneck_channels, act=True), activation=F.relu_)
        self.conv2 = conv(
            bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation, dilation=dilation,
            groups=num_groups, norm=norm_3x3(bottleneck_channels, act=True), activation=F.relu_,
        )
        self.conv3 = conv(bottleneck_channels, out_channels, 1, norm=norm(out_channels, zero_init=zero_init_residual))
        for layer in (self.conv1, self.conv2, self.conv3):
            c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x))."""
        out = self.conv3(self.conv2(self.conv1(x)))
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu_(out)


class ResNet(nn.Module):
    """Stem + stages res2..res5; ``forward`` returns {name: feature} for ``out_features``.

    ``freeze(freeze_at)`` has detectron2's meaning: 1 freezes the stem, k in 2..5 the stem and
    res2..res<k>; frozen parts take no gradient and their norms are frozen (see freeze_module).
    """

    def __init__(self, stem: BasicStem, stages: List[List[nn.Module]], out_features: List[str],
                 stage_out_channels: List[int], stage_strides: List[int]) -> None:
        super().__init__()
        self.stem = stem
        self.stage_names = STAGE_NAMES[: len(stages)]
        for name, blocks in zip(self.stage_names, stages):
            self.add_module(name, nn.Sequential(*blocks))
        valid = ["stem"] + self.stage_names
        unknown = [f for f in out_features if f not in valid]
        if unknown:
            raise ValueError(f"MODEL.RESNETS.OUT_FEATURES has {unknown}; valid names: {valid}")
        self.out_features = list(out_features)
        self._out_feature_channels: Dict[str, int] = {"stem": stem.out_channels}
        self._out_feature_strides: Dict[str, int] = {"stem": stem.stride}
        for name, channels, stride in zip(self.stage_names, stage_out_channels, stage_strides):
            self._out_feature_channels[name] = channels
            self._out_feature_strides[name] = stride

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, 3, H, W) -> {"res2": stride-4 map, ..., "res5": stride-32 map} (those in out_features)."""
        outputs: Dict[str, torch.Tensor] = {}
        x = self.stem(x)
        if "stem" in self.out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int) -> "ResNet":
        """Freeze the stem (freeze_at >= 1) and res2..res<freeze_at>; returns self."""
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT should be in [0, 5], got {freeze_at}")
        if freeze_at >= 1:
            self.stem = freeze_module(self.stem)
        for index, name in enumerate(self.stage_names, start=2):
            if freeze_at >= index:
                setattr(self, name, freeze_module(getattr(self, name)))
        return self


def make_stages(
    depth: int, *, stem_channels: int, res2_channels: int, norm: NormFn, norm_3x3: NormFn, num_groups: int = 1,
    width_per_group: int = 64, stride_in_1x1: bool = True, res5_dilation: int = 1, zero_init_residual: bool = False,
    num_stages: int = 4, conv: ConvFn = Conv2d,
) -> tuple:
    """Blocks of res2..res<1+num_stages> plus their output channels and strides."""
    bottleneck = depth >= 50
    stages, channels, strides = [], [], []
    in_channels, stride_so_far = stem_channels, 4
    for i, num_blocks in enumerate(BLOCKS_PER_STAGE[depth][:num_stages]):
        dilation = res5_dilation if i == 3 else 1
        first_stride = 1 if (i == 0 or dilation > 1) else 2
        out_channels = res2_channels * 2**i
        blocks: List[nn.Module] = []
        for b in range(num_blocks):
            stride = first_stride if b == 0 else 1
            if bottleneck:
                block = BottleneckBlock(
                    in_channels, out_channels, bottleneck_channels=num_groups * width_per_group * 2**i, stride=stride,
                    norm=norm, norm_3x3=norm_3x3, num_groups=num_groups, stride_in_1x1=stride_in_1x1,
                    dilation=dilation, zero_init_residual=zero_init_residual, conv=conv,
                )
            else:
                block = BasicBlock(in_channels, out_channels, stride=stride, norm=norm, norm_first=norm_3x3,
                                   zero_init_residual=zero_init_residual, conv=conv)
            blocks.append(block)
            in_channels = out_channels
        stride_so_far *= first_stride
        stages.append(blocks)
        channels.append(out_channels)
        strides.append(stride_so_far)
    return stages, channels, strides


def _check_resnet_cfg(cfg) -> None:
    """Raise ValueError naming the MODEL.RESNETS key for combinations ResNet cannot build."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(BLOCKS_PER_STAGE)}, got {r.DEPTH}")
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")
    if r.DEPTH < 50:
        if r.RES2_OUT_CHANNELS != 64:
            raise ValueError(f"MODEL.RESNETS.RES2_OUT_CHANNELS must be 64 for R-{r.DEPTH}, got {r.RES2_OUT_CHANNELS}")
        if r.NUM_GROUPS != 1:
            raise ValueError(f"MODEL.RESNETS.NUM_GROUPS must be 1 for R-{r.DEPTH} (ResNeXt needs bottlenecks), got {r.NUM_GROUPS}")
        if r.RES5_DILATION != 1:
            raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 for R-{r.DEPTH}, got {r.RES5_DILATION}")


def build_resnet_backbone(cfg) -> ResNet:
    """The ResNet of MODEL.RESNETS, frozen up to MODEL.BACKBONE.FREEZE_AT (3-channel input)."""
    _check_resnet_cfg(cfg)
    r = cfg.MODEL.RESNETS
    norm = norm_fn(r.NORM, cfg, "MODEL.RESNETS.NORM")
    norm_3x3 = norm_fn(r.NORM_3X3, cfg, "MODEL.RESNETS.NORM_3X3") if r.NORM_3X3 else norm
    conv = conv_fn(r.CONV, "MODEL.RESNETS.CONV")
    stem = BasicStem(3, r.STEM_OUT_CHANNELS, norm_3x3, conv)
    num_stages = max(STAGE_NAMES.index(f) + 1 if f in STAGE_NAMES else 0 for f in r.OUT_FEATURES) or 1
    stages, channels, strides = make_stages(
        r.DEPTH, stem_channels=r.STEM_OUT_CHANNELS, res2_channels=r.RES2_OUT_CHANNELS, norm=norm, norm_3x3=norm_3x3,
        num_groups=r.NUM_GROUPS, width_per_group=r.WIDTH_PER_GROUP, stride_in_1x1=r.STRIDE_IN_1X1,
        res5_dilation=r.RES5_DILATION, zero_init_residual=r.ZERO_INIT_RESIDUAL, num_stages=num_stages, conv=conv,
    )
    return ResNet(stem, stages, r.OUT_FEATURES, channels, strides).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
