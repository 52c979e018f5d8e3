"""Whole-model norm surgery and inspection by the norms' declared traits: freeze_norms, convert_norm, describe_norms."""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from torch import nn

from .norm import get_norm, norm_tag, norm_traits, norm_type_of, tag_norm
from .traits import BN_KIND

logger = logging.getLogger(__name__)


def is_bn_like(module: nn.Module) -> bool:
    """A norm of checkpoint kind BN (BN, SyncBN, gn_det's and torchvision's FrozenBN, ...): convert_norm's default."""
    traits = norm_traits(module)
    return traits is not None and traits.kind == BN_KIND


def freeze_parameters(module: nn.Module) -> nn.Module:
    """The default freeze: no parameter takes a gradient; a norm with batch statistics also stays in eval.

    Keeping it in eval (its ``train()`` no longer leaves eval) makes it use its running statistics and
    stop updating them, as a frozen stage needs (STYLE habit 5).
    """
    for p in module.parameters():
        p.requires_grad_(False)
    traits = norm_traits(module)
    if traits is not None and traits.running_stats and traits.batch_dependent:
        module.train = functools.partial(_stay_in_eval, module)  # type: ignore[method-assign]
        module.eval()
    return module


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """``train()`` of a frozen norm: always eval (see freeze_parameters)."""
    return nn.Module.train(module, False)



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
        if norm_traits(m) is not None
    ]


def _freeze_one(module: nn.Module) -> Optional[nn.Module]:
    """The frozen form of a norm (its entry's ``freeze``), None for a module that is not a norm."""
    traits = norm_traits(module)
    if traits is None:
        return None
    entry = norm_type_of(module)
    freeze = entry.freeze if entry is not None and entry.freeze is not None else freeze_parameters
    frozen = freeze(module)
    if frozen is module:  # frozen statistics: its training output no longer depends on the batch
        tag = norm_tag(module)
        tag_norm(module, tag.name if tag else (entry.name if entry else type(module).__name__),
                 dataclasses.replace(traits, batch_dependent=False),
                 registered=tag.registered if tag else entry is not None,
                 applies_act=tag.applies_activation if tag else False, frozen=True)
    return frozen


def freeze_norms(module: nn.Module) -> nn.Module:
    """Freeze every norm in ``module`` the way a frozen backbone stage needs; returns the result.

    Each norm goes through its registered ``freeze``: BN/SyncBN become FrozenBN (statistics and affine
    copied); SN keeps its running statistics in training too (``freeze_stats``) and its parameters take
    no gradient; GN/LN/IN and other norms take no gradient (and a norm with batch statistics stays in
    eval). Non-norm layers are untouched (freezing convs is the caller's job). The result is a new
    module when ``module`` itself is replaced (a BN), else ``module`` changed in place.
    """
    new = _freeze_one(module)
    if new is not None:
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
    options: Any = None,
    *,
    types: Optional[Tuple[type, ...]] = None,
    key: str = "convert_norm",
) -> Tuple[nn.Module, List[Replacement]]:
    """Replace every layer of ``types`` (default: the BN-kind norms, is_bn_like) by a fresh ``name`` norm.

    New norms are freshly initialized (BN statistics do not carry over to GN/SN) and placed on the
    old layer's device, in its floating-point dtype. Returns ``(module, replacements)``, a new module when ``module`` itself was
    replaced, and logs one line per replaced layer.
    """
    replaced: List[Replacement] = []
    selected: Callable[[nn.Module], bool] = (lambda m: isinstance(m, types)) if types is not None else is_bn_like

    def visit(m: nn.Module, prefix: str) -> nn.Module:
        if selected(m):
            new = get_norm(name, m.num_features, options, key=key)
            ref = next((t for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()), None)
            if ref is not None:  # the old layer's device and dtype (a float64 model stays float64)
                new = new.to(device=ref.device, dtype=ref.dtype)
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
