"""GN (Wu & He 2018) and its two extremes used in the GN paper's ablations: LN (1 group), IN (C groups)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .norm import NormChannelsError, register_norm
from .options import FamilyOptions
from .traits import GN_KIND, NormTraits


@dataclass(frozen=True)
class GNOptions(FamilyOptions):
    """Options of GN, LN and IN: config node MODEL.GN (NUM_GROUPS, DIM_PER_GP, EPSILON)."""

    config_node = "MODEL.GN"
    num_groups: int = 32  # groups per GN layer; GN paper Sec. 3.1 default (Detectron GROUP_NORM.NUM_GROUPS)
    dim_per_gp: int = -1  # channels per group instead of num_groups (Detectron GROUP_NORM.DIM_PER_GP); -1 = off
    epsilon: float = 1e-5  # GN/LN/IN eps (Detectron GROUP_NORM.EPSILON)


def num_groups_for(channels: int, options: GNOptions) -> int:
    """Groups for ``channels``: by channels per group when dim_per_gp > 0, else num_groups."""
    if options.dim_per_gp > 0:
        dim_key = GNOptions.key("dim_per_gp")
        if channels % options.dim_per_gp != 0:
            raise NormChannelsError(
                f"channels divisible by {dim_key}={options.dim_per_gp}, got {channels}",
                f"set {dim_key} to a divisor of {channels}",
            )
        return channels // options.dim_per_gp
    groups = options.num_groups
    if groups <= 0 or channels % groups != 0:
        groups_key = GNOptions.key("num_groups")
        raise NormChannelsError(
            f"channels divisible by {groups_key}={groups}, got {channels}",
            f"set {groups_key} to a divisor of {channels} or use {GNOptions.key('dim_per_gp')}",
        )
    return groups


# GN, LN and IN hold the same state (an affine) and load each other's weights; none uses the batch.
GN_TRAITS = NormTraits(kind=GN_KIND)


@register_norm("GN", options=GNOptions, traits=GN_TRAITS, module_types=(nn.GroupNorm,))
def build_group_norm(channels: int, options: GNOptions) -> nn.GroupNorm:
    """torch's GroupNorm with the configured groups (or channels per group) and eps."""
    return nn.GroupNorm(num_groups_for(channels, options), channels, eps=options.epsilon)


@register_norm("LN", options=GNOptions, traits=GN_TRAITS, module_types=(nn.LayerNorm,))
def build_layer_norm(channels: int, options: GNOptions) -> nn.GroupNorm:
    """Layer Norm over (C, H, W) per sample, as in the GN paper: GroupNorm with one group."""
    return nn.GroupNorm(1, channels, eps=options.epsilon)


@register_norm("IN", options=GNOptions, traits=GN_TRAITS, module_types=(nn.modules.instancenorm._InstanceNorm,))
def build_instance_norm(channels: int, options: GNOptions) -> nn.GroupNorm:
    """Instance Norm with affine, as in the GN paper: GroupNorm with one group per channel."""
    return nn.GroupNorm(channels, channels, eps=options.epsilon)
