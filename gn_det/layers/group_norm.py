"""GN (Wu & He 2018) and its two extremes used in the GN paper's ablations: LN (1 group), IN (C groups)."""
from __future__ import annotations

from torch import nn

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


@NORM_REGISTRY.register("GN")
def build_group_norm(channels: int, options: NormOptions) -> nn.GroupNorm:
    """torch's GroupNorm with the configured groups (or channels per group) and eps."""
    return nn.GroupNorm(num_groups_for(channels, options), channels, eps=options.gn_eps)


@NORM_REGISTRY.register("LN")
def build_layer_norm(channels: int, options: NormOptions) -> nn.GroupNorm:
    """Layer Norm over (C, H, W) per sample, as in the GN paper: GroupNorm with one group."""
    return nn.GroupNorm(1, channels, eps=options.gn_eps)


@NORM_REGISTRY.register("IN")
def build_instance_norm(channels: int, options: NormOptions) -> nn.GroupNorm:
    """Instance Norm with affine, as in the GN paper: GroupNorm with one group per channel."""
    return nn.GroupNorm(channels, channels, eps=options.gn_eps)
