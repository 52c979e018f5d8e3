"""Normalization layers behind one registry: ``get_norm(name, channels, options)``.

Registered names: FrozenBN, BN, SyncBN, GN, SN, SyncSN, LN, IN (see NORM_REGISTRY).
"""
from .norm import NORM_REGISTRY, NormChannelsError, NormOptions, get_norm
from .batch_norm import BatchNorm2d
from .frozen_bn import FrozenBatchNorm2d, convert_frozen_batchnorm
from .group_norm import num_groups_for
from .sync_batch_norm import SyncBatchNorm2d
from .switch_norm import SwitchNorm2d, SyncSwitchNorm2d
from .convert import NormRow, Replacement, convert_norm, describe_norms, freeze_norms, is_norm
from .shapes import BATCH_FREE_NORMS

__all__ = [
    "NORM_REGISTRY", "NormChannelsError", "NormOptions", "get_norm",
    "BatchNorm2d", "FrozenBatchNorm2d", "convert_frozen_batchnorm", "num_groups_for",
    "SyncBatchNorm2d", "SwitchNorm2d", "SyncSwitchNorm2d",
    "NormRow", "Replacement", "convert_norm", "describe_norms", "freeze_norms", "is_norm",
    "BATCH_FREE_NORMS",
]
