"""Normalization layers behind one registry of declared norm types: ``get_norm(name, channels, options)``.

Registered names: FrozenBN, BN, SyncBN, GN, SN, SyncSN, LN, IN, FRN, EvoNormS0, EvoNormB0, BRN, SyncBRN
(see NORM_REGISTRY); convs by name in
CONV_REGISTRY: "" (plain) and "WS" (Weight Standardization).
"""
from .traits import (
    BN_FOLDED_KIND, BN_KIND, GN_KIND, SN_KIND, SN_NO_BN_KIND, NormTraits, declare_kind, kind_state_keys,
    kinds_holding, undeclare_kind,
)
from .options import FamilyOptions, NormOptions, option_key
from .norm_type import NORM_REGISTRY, NormType, register_norm
from .norm import (
    NormChannelsError, NormTag, applies_activation, batch_free_norms, get_norm, is_norm, norm_name, norm_tag,
    norm_traits, norm_type_of, synced_norms,
)
from .batch_norm import BatchNorm2d, BNOptions
from .frozen_bn import FrozenBatchNorm2d, convert_frozen_batchnorm
from .group_norm import GNOptions, num_groups_for
from .sync_batch_norm import SyncBatchNorm2d
from .switch_norm import SNOptions, SwitchNorm2d, SyncSwitchNorm2d
from .frn import FilterResponseNorm2d, FRNOptions
from .evonorm import EvoNorm2dB0, EvoNorm2dS0, EvoNormOptions
from .batch_renorm import BatchRenorm2d, BRNOptions, SyncBatchRenorm2d
from .convert import NormRow, Replacement, convert_norm, describe_norms, freeze_norms, freeze_parameters, is_bn_like
from .conv import CONV_REGISTRY, Conv2d, WSConv2d, get_conv, standardize_weight
from .per_level import per_level_norms, tie_parameters

__all__ = [
    "NORM_REGISTRY", "NormType", "NormTraits", "NormTag", "NormChannelsError", "NormOptions", "FamilyOptions",
    "register_norm", "get_norm", "norm_traits", "norm_type_of", "norm_name", "norm_tag", "is_norm",
    "applies_activation", "batch_free_norms", "synced_norms", "freeze_parameters", "option_key",
    "BN_KIND", "BN_FOLDED_KIND", "GN_KIND", "SN_KIND", "SN_NO_BN_KIND", "declare_kind", "undeclare_kind",
    "kind_state_keys", "kinds_holding",
    "BNOptions", "GNOptions", "SNOptions", "FRNOptions", "EvoNormOptions", "BRNOptions",
    "BatchNorm2d", "FrozenBatchNorm2d", "convert_frozen_batchnorm", "num_groups_for",
    "SyncBatchNorm2d", "SwitchNorm2d", "SyncSwitchNorm2d", "FilterResponseNorm2d", "EvoNorm2dS0", "EvoNorm2dB0",
    "BatchRenorm2d", "SyncBatchRenorm2d",
    "NormRow", "Replacement", "convert_norm", "describe_norms", "freeze_norms", "is_bn_like",
    "CONV_REGISTRY", "Conv2d", "WSConv2d", "get_conv", "standardize_weight",
    "per_level_norms", "tie_parameters",
]
