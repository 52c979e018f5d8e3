"""BN with batch statistics: torch's BatchNorm2d with the configured momentum and eps."""
from __future__ import annotations

from torch import nn

from .norm import NORM_REGISTRY, NormOptions


@NORM_REGISTRY.register("BN")
def build_batch_norm(channels: int, options: NormOptions) -> nn.BatchNorm2d:
    """Plain per-process BatchNorm2d (statistics over this process's batch only)."""
    return nn.BatchNorm2d(channels, eps=options.bn_eps, momentum=options.bn_momentum)
