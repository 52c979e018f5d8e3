"""Whole-model norm surgery and inspection: freeze_norms, convert_norm, describe_norms, is_norm."""
from __future__ import annotations

import logging
import sys
from typing import List, NamedTuple, Optional, Tuple

from torch import nn

from .frozen_bn import BATCHNORM_TYPES, FrozenBatchNorm2d, frozen_from_batchnorm
from .norm import BUILT_NORM_TYPES, NormOptions, get_norm
from .switch_norm import SwitchNorm2d

logger = logging.getLogger(__name__)

# Every module type is_norm() recognizes besides the ones get_norm has built (and torchvision's FrozenBN).
NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
    FrozenBatchNorm2d, SwitchNorm2d,
)


def torchvision_frozen_bn() -> Tuple[type, ...]:
    """torchvision.ops.FrozenBatchNorm2d if torchvision is loaded (a model holding one has loaded it).

    Looked up lazily: importing torchvision costs seconds, which every spawned process would pay.
    """
    misc = sys.modules.get("torchvision.ops.misc")
    return (misc.FrozenBatchNorm2d,) if misc is not None else ()


def bn_like_types() -> Tuple[type, ...]:
    """BN-like layers convert_norm replaces by default: BN, SyncBN, gn_det's and torchvision's FrozenBN."""
    return BATCHNORM_TYPES + (FrozenBatchNorm2d,) + torchvision_frozen_bn()


def is_norm(module: nn.Module) -> bool:
    """True for a normalization layer: torch's, torchvision's FrozenBN, gn_det's, or any get_norm built."""
    return isinstance(module, NORM_TYPES + torchvision_frozen_bn()) or type(module) in BUILT_NORM_TYPES


class NormRow(NamedTuple):
    """One norm layer of a model as describe_norms reports it."""

    name: str  # qualified module name ("" for the model itself)
    type: str  # class name, e.g. "GroupNorm", "FrozenBatchNorm2d"
    trains: bool  # has a parameter that requires grad


def describe_norms(model: nn.Module) -> List[NormRow]:
    """Every norm layer in ``model`` in module order: qualified name, type and whether it trains."""
    return [
        NormRow(name, type(m).__name__, any(p.requires_grad for p in m.parameters(recurse=False)))
        for name, m in model.named_modules()
        if is_norm(m)
    ]


def _freeze_one(module: nn.Module) -> nn.Module:
    if isinstance(module, BATCHNORM_TYPES):
        return frozen_from_batchnorm(module)
    if isinstance(module, SwitchNorm2d):
        module.freeze_stats = True
    if is_norm(module):
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)
    return module


def freeze_norms(module: nn.Module) -> nn.Module:
    """Freeze every norm in ``module`` the way a frozen backbone stage needs; returns the result.

    BN/SyncBN become FrozenBN (statistics and affine copied); SN keeps its running statistics in
    training too (``freeze_stats``) and its parameters take no gradient; GN/LN/IN and other norms
    take no gradient. Non-norm layers are untouched (freezing convs is the caller's job). The result
    is a new module when ``module`` itself is a BN, else ``module`` changed in place.
    """
    new = _freeze_one(module)
    if new is not module:
        return new
    for name, child in module.named_children():
        new_child = freeze_norms(child)
        if new_child is not child:
            module.add_module(name, new_child)
    return module


class Replacement(NamedTuple):
    """One layer convert_norm replaced."""

    name: str
    old_type: str
    new_type: str
    channels: int


def convert_norm(
    module: nn.Module,
    name: str,
    options: Optional[NormOptions] = None,
    *,
    types: Optional[Tuple[type, ...]] = None,
    key: str = "convert_norm",
) -> Tuple[nn.Module, List[Replacement]]:
    """Replace every layer of ``types`` (default: bn_like_types()) by a fresh ``name`` norm (e.g. "GN", "SN").

    New norms are freshly initialized (BN statistics do not carry over to GN/SN) and placed on the
    old layer's device. Returns ``(module, replacements)``, a new module when ``module`` itself was
    replaced, and logs one line per replaced layer.
    """
    replaced: List[Replacement] = []
    types = types if types is not None else bn_like_types()

    def visit(m: nn.Module, prefix: str) -> nn.Module:
        if isinstance(m, types):
            new = get_norm(name, m.num_features, options, key=key)
            ref = next(iter(m.buffers()), None)
            if ref is not None:
                new = new.to(ref.device)
            replaced.append(Replacement(prefix, type(m).__name__, type(new).__name__, m.num_features))
            return new
        for child_name, child in m.named_children():
            new_child = visit(child, f"{prefix}.{child_name}" if prefix else child_name)
            if new_child is not child:
                m.add_module(child_name, new_child)
        return m

    result = visit(module, "")
    for r in replaced:
        logger.info("convert_norm: %s %s(%d) -> %s", r.name or "<root>", r.old_type, r.channels, r.new_type)
    logger.info("convert_norm: replaced %d layer(s) by %s", len(replaced), name)
    return result, replaced
