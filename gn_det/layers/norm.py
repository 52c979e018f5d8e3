"""The one entry point for normalization layers: ``get_norm`` over the registry of declared norm types.

Every place in a detector that takes a norm (stem, blocks, shortcuts, FPN, RPN head, box and mask
heads) calls ``get_norm(name, channels, options)``, so a norm name means the same everywhere. get_norm
tags each module it builds with its entry name and resolved traits; ``norm_traits(module)`` /
``norm_type_of(module)`` read the tag, else the entries' declared module types, so every consumer
(solver, precise BN, freezing, describe, weight matching, estimation shift) asks the traits, never a
class name. Registration: gn_det.layers.norm_type (``register_norm``, ``NORM_REGISTRY``).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .norm_type import NORM_REGISTRY, NormType, register_norm
from .options import NormOptions, option_key
from .traits import NormTraits

NormSpec = Union[str, None, type, functools.partial, Any]
_TAG = "_gn_det_norm"  # attribute get_norm sets on each norm it builds (a NormTag)

__all__ = ["NORM_REGISTRY", "NormChannelsError", "NormTag", "NormType", "applies_activation", "batch_free_norms",
           "get_norm", "is_norm", "norm_name", "norm_tag", "norm_traits", "norm_type_of", "register_norm",
           "synced_norms", "tag_norm"]


@dataclass(frozen=True)
class NormTag:
    """What get_norm (or freezing) records on a module: the entry name, resolved traits, activation applied.

    ``frozen``: freezing recorded these traits (statistics no longer follow the batch); they then override
    what the entry's ``module_traits`` reads from the module.
    """

    name: str
    traits: NormTraits
    registered: bool = True
    applies_activation: bool = False
    frozen: bool = False


class NormChannelsError(ValueError):
    """A norm cannot be built for this channel count; get_norm prefixes the config key and norm name.

    ``requirement`` reads after "needs", e.g. "channels divisible by MODEL.GN.NUM_GROUPS=32, got 250".
    """

    def __init__(self, requirement: str, remedy: str = "") -> None:
        self.requirement = requirement
        self.remedy = remedy
        super().__init__(self.format("norm"))

    def format(self, prefix: str) -> str:
        """The full message with ``prefix`` (e.g. "MODEL.FPN.NORM='GN'") as its subject."""
        return f"{prefix} needs {self.requirement}" + (f"; {self.remedy}" if self.remedy else "")

    def with_message(self, prefix: str) -> "NormChannelsError":
        """This error with ``prefix`` as the subject of its message."""
        self.args = (self.format(prefix),)
        return self


# ----------------------------------------------------------------------------- lookup

def _entry_for_type(cls: type) -> Optional[NormType]:
    """The entry declaring ``cls`` or its nearest base class in module_types (most-derived first)."""
    entries = [(entry, entry.resolved_types()) for entry in NORM_REGISTRY.entries()]
    for klass in cls.__mro__:
        for entry, types in entries:
            if klass in types:
                return entry
    return None


def norm_tag(module: Optional[nn.Module]) -> Optional[NormTag]:
    """The NormTag get_norm (or freezing) recorded on ``module``, or None."""
    tag = getattr(module, _TAG, None)
    return tag if isinstance(tag, NormTag) else None


def norm_type_of(module: nn.Module) -> Optional[NormType]:
    """The registry entry ``module`` is an instance of: get_norm's tag, else by declared module types."""
    tag = norm_tag(module)
    if tag is not None and tag.registered and tag.name in NORM_REGISTRY:
        return NORM_REGISTRY.get(tag.name)
    return _entry_for_type(type(module))


def norm_traits(module: nn.Module) -> Optional[NormTraits]:
    """The traits of a norm module (None for anything that is not a norm).

    A frozen norm's traits are those freezing recorded (gn_det.layers.convert.freeze_norms: not batch
    dependent). Otherwise read from the module itself where its entry knows how (SN: its use_bn and
    freeze_stats now), else from get_norm's tag, else from the entry its type declares, else from a
    ``norm_traits`` class attribute.
    """
    tag = norm_tag(module)
    if tag is not None and tag.frozen:
        return tag.traits
    entry = norm_type_of(module)
    if entry is not None and entry.module_traits is not None:
        return entry.module_traits(module)
    if tag is not None:
        return tag.traits
    if entry is not None:
        return entry.traits_for(entry.default_options())
    traits = getattr(type(module), "norm_traits", None)
    return traits if isinstance(traits, NormTraits) else None


def is_norm(module: nn.Module) -> bool:
    """True for a normalization layer: built by get_norm, of a registered norm's type, or declaring traits."""
    return norm_traits(module) is not None


def norm_name(module: nn.Module) -> Optional[str]:
    """The registered name of a norm module (tag or type), its class name if unregistered, None if no norm."""
    tag = norm_tag(module)
    if tag is not None:
        return tag.name
    entry = norm_type_of(module)
    if entry is not None:
        return entry.name
    return type(module).__name__ if is_norm(module) else None


def applies_activation(module: Optional[nn.Module]) -> bool:
    """True when ``module`` is a norm get_norm built with ``act=True`` that applies its own nonlinearity."""
    tag = norm_tag(module)
    return tag is not None and tag.applies_activation


def tag_norm(module: nn.Module, name: str, traits: NormTraits, *, registered: bool = True,
             applies_act: bool = False, frozen: bool = False) -> nn.Module:
    """Record on ``module`` which norm it is (what norm_type_of / norm_traits read); returns it.

    ``frozen``: ``traits`` are the frozen module's and win over its entry's ``module_traits``.
    """
    object.__setattr__(module, _TAG, NormTag(name, traits, registered, applies_act, frozen))
    return module


# ----------------------------------------------------------------------------- building

def _resolve_options(entry: NormType, options: Any, key: str) -> Any:
    """The options ``entry``'s builder receives, from None, one family's options or a collection."""
    if options is None:
        bundle = NormOptions()
    elif isinstance(options, NormOptions):
        bundle = options
    elif dataclasses.is_dataclass(options) and not isinstance(options, type):
        if entry.options_type is not None and type(options) is not entry.options_type:
            raise TypeError(f"{key}={entry.name!r} takes {entry.options_type.__name__} ({entry.config_node}), "
                            f"got {type(options).__name__}")
        bundle = NormOptions(options)
    elif isinstance(options, Mapping):
        bundle = NormOptions(*options.values())
    else:
        bundle = NormOptions(*options)
    return entry.options_in(bundle)


def _unregistered_traits(cls: Any, module: Optional[nn.Module]) -> Tuple[Optional[NormType], Optional[NormTraits]]:
    """(entry, traits) for a class-built norm: a registered entry of its type, else a norm_traits attribute."""
    klass = type(module) if module is not None else cls
    if not isinstance(klass, type):
        return None, None
    entry = _entry_for_type(klass)
    if entry is not None:
        if module is not None and entry.module_traits is not None:
            return entry, entry.module_traits(module)
        return entry, entry.traits_for(entry.default_options())
    traits = getattr(klass, "norm_traits", None)
    return None, traits if isinstance(traits, NormTraits) else None


def _build_from_callable(norm: Any, channels: int, act: bool, key: str) -> nn.Module:
    """Build a norm passed as a class or functools.partial (timm's shape): ``norm(channels)``."""
    cls = norm.func if isinstance(norm, functools.partial) else norm
    _, before = _unregistered_traits(cls, None)
    includes_act = before is not None and before.includes_activation
    module = norm(channels, apply_act=act) if includes_act else norm(channels)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{key}: {norm!r}({channels}) returned {type(module).__name__}, not an nn.Module")
    entry, traits = _unregistered_traits(cls, module)
    if traits is None:
        traits = NormTraits(kind=type(module).__name__)
    name = entry.name if entry is not None else type(module).__name__
    return tag_norm(module, name, traits, registered=entry is not None,
                    applies_act=act and traits.includes_activation)


def get_norm(
    norm: NormSpec,
    channels: int,
    options: Any = None,
    *,
    key: str = "norm",
    zero_init: bool = False,
    act: bool = False,
) -> Optional[nn.Module]:
    """Build the norm ``norm`` for ``channels`` channels; ``""``/None means no norm (None).

    ``norm`` is a registered name, or a class / functools.partial called as ``norm(channels)`` (timm's
    shape; traits from a registered entry of its type, else its ``norm_traits`` attribute, else defaults).
    ``options``: the family's options (e.g. GNOptions), or a NormOptions / iterable of every family's
    options (``gn_det.config.norm_options_from_cfg(cfg)``); missing families take their defaults.
    ``key`` is the config key the name came from, quoted in errors (unknown name, bad channels).
    ``zero_init`` sets the affine weight to zero (the last norm of a residual block, Goyal et al. 2017).
    ``act``: a ReLU follows this norm; a norm whose traits include the activation then applies its own
    (its builder gets ``apply_act=True``) and the caller drops the ReLU (see applies_activation).
    """
    if norm is None or (isinstance(norm, str) and norm == ""):
        return None
    if isinstance(norm, str):
        entry = NORM_REGISTRY.get(norm, key=key)
        opts = _resolve_options(entry, options, key)
        traits = entry.traits_for(opts)
        try:
            if traits.includes_activation:
                module = entry.build(channels, opts, apply_act=act)
            else:
                module = entry.build(channels, opts)
        except NormChannelsError as e:
            raise NormChannelsError(e.requirement, e.remedy).with_message(f"{key}={norm!r}") from None
        if not isinstance(module, nn.Module):
            raise TypeError(f"{key}={norm!r}: its builder returned {type(module).__name__}, not an nn.Module")
        tag_norm(module, entry.name, traits, applies_act=act and traits.includes_activation)
    elif callable(norm):
        module = _build_from_callable(norm, channels, act, key)
    else:
        raise TypeError(f"{key} must be a norm name (str), a norm class or functools.partial, or ''/None for "
                        f"no norm, got {norm!r}")
    if zero_init:
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ValueError(f"{key}={norm!r} has no affine weight to zero-initialize")
        nn.init.zeros_(weight)
    return module


# ----------------------------------------------------------------------------- messages from the traits

def _join_or(items: List[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def batch_free_norms() -> str:
    """The registered norms whose training output does not depend on the batch, as a phrase for errors.

    Generated from the traits, e.g. "FrozenBN, GN, LN, IN, FRN, EvoNormS0 or SN/SyncSN with MODEL.SN.USE_BN=False".
    """
    names: List[str] = []
    conditional: Dict[str, List[str]] = {}
    for entry in NORM_REGISTRY.entries():
        if not entry.traits_for(entry.default_options()).batch_dependent:
            names.append(entry.name)
        elif entry.batch_free_options:
            cond = ", ".join(f"{option_key(entry.options_type, k)}={v}" for k, v in entry.batch_free_options.items())
            conditional.setdefault(cond, []).append(entry.name)
    names += [f"{'/'.join(group)} with {cond}" for cond, group in conditional.items()]
    return _join_or(names) if names else "none registered"


def synced_norms() -> List[str]:
    """Registered norms (at their defaults) whose batch statistics pool every process's batch."""
    return [e.name for e in NORM_REGISTRY.entries() if e.traits_for(e.default_options()).synced]
