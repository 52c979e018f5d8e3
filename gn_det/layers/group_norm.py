"""GN (Wu & He 2018) and its two extremes used in the GN paper's ablations: LN (1 group), IN (C groups).

Mixed precision: CUDA autocast runs torch's group_norm in float32 (it is on autocast's float32 list), so
a float16 activation was copied to float32 and back around every GN: with AMP the GN recipe was slower
and larger than in float32 (issue 10). gn_det's GroupNorm runs in the input's precision instead, as
BatchNorm does; torch's kernels accumulate the statistics in float32 either way (acc_type), and the
affine parameters stay float32 (cast for the kernel, their gradients flow back in float32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norm import NORM_REGISTRY, NormChannelsError, NormOptions


def num_groups_for(channels: int, options: NormOptions) -> int:
    """Groups for ``channels``: by channels per group when gn_dim_per_gp > 0, else gn_num_groups."""
    if options.gn_dim_per_gp > 0:
        if channels % options.gn_dim_per_gp != 0:
            raise NormChannelsError(
                f"channels divisible by MODEL.GN.DIM_PER_GP={options.gn_dim_per_gp}, got {channels}",
                f"set MODEL.GN.DIM_PER_GP to a divisor of {channels}",
            )
        return channels // options.gn_dim_per_gp
    groups = options.gn_num_groups
    if groups <= 0 or channels % groups != 0:
        raise NormChannelsError(
            f"channels divisible by {options.gn_groups_key}={groups}, got {channels}",
            f"set {options.gn_groups_key} to a divisor of {channels} or use MODEL.GN.DIM_PER_GP",
        )
    return groups


LOW_PRECISION = (torch.float16, torch.bfloat16)


class GroupNorm(nn.GroupNorm):
    """torch's GroupNorm that keeps a float16/bfloat16 input in its precision under autocast (see above)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype not in LOW_PRECISION:
            return super().forward(x)
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)


@NORM_REGISTRY.register("GN")
def build_group_norm(channels: int, options: NormOptions) -> nn.GroupNorm:
    """torch's GroupNorm with the configured groups (or channels per group) and eps."""
    return GroupNorm(num_groups_for(channels, options), channels, eps=options.gn_eps)


@NORM_REGISTRY.register("LN")
def build_layer_norm(channels: int, options: NormOptions) -> nn.GroupNorm:
    """Layer Norm over (C, H, W) per sample, as in the GN paper: GroupNorm with one group."""
    return GroupNorm(1, channels, eps=options.gn_eps)


@NORM_REGISTRY.register("IN")
def build_instance_norm(channels: int, options: NormOptions) -> nn.GroupNorm:
    """Instance Norm with affine, as in the GN paper: GroupNorm with one group per channel."""
    return GroupNorm(channels, channels, eps=options.gn_eps)
