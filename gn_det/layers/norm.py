"""The one entry point for normalization layers: ``NORM_REGISTRY`` of declared norm types and ``get_norm``.

Every place in a detector that takes a norm (stem, blocks, shortcuts, FPN, RPN head, box and mask
heads) calls ``get_norm(name, channels, options)``, so a norm name means the same everywhere. A
registry entry is a ``NormType``: how to build the norm from ``(channels, options)``, its options
dataclass (and so its config node), its traits (gn_det.layers.traits), how to freeze it, and the module
types that identify it when a module was not built by get_norm. A new norm is one decorated builder::

    @register_norm("MyNorm", options=MyOptions, traits=NormTraits(kind="MyNorm", running_stats=True,
                   batch_dependent=True), module_types=(MyNorm2d,), state_keys=("weight", "bias", ...))
    def build_my_norm(channels: int, options: MyOptions) -> MyNorm2d: ...
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from gn_det.utils.registry import Registry

from .options import NormOptions, check_options_type, option_key
from .traits import NormTraits, declare_kind, kind_state_keys

TraitsSpec = Union[NormTraits, Callable[[Any], NormTraits]]
NormSpec = Union[str, None, type, functools.partial, Callable[..., nn.Module]]
_TAG = "_gn_det_norm"  # attribute get_norm sets on each norm it builds (a NormTag)


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


@dataclass(frozen=True)
class NormType:
    """One registered norm: everything the rest of gn_det needs to know about it, declared in one place.

    - ``build(channels, options) -> nn.Module``; a norm whose traits include the activation is also
      passed ``apply_act`` (True where a ReLU would follow it, and it applies its own nonlinearity).
    - ``options_type``: its options dataclass (config node ``options_type.config_node``); None for
      entries registered the short way, whose builder receives the whole NormOptions.
    - ``traits``: a NormTraits, or a function of the options returning one (SN: USE_BN, FREEZE_STATS).
    - ``freeze(module) -> module``: what a frozen stage does to it (default freeze_parameters).
    - ``module_types``: classes (or dotted paths, resolved only once their module is imported) whose
      instances are this norm when get_norm did not build them (torch's BatchNorm2d, GroupNorm, ...).
    - ``module_traits(module)``: the traits read from a built module, for traits that depend on options.
    - ``batch_free_options``: option values that make it batch-free (SN: use_bn=False), quoted in errors.
    """

    name: str
    build: Callable[..., nn.Module]
    options_type: Optional[type] = None
    traits: TraitsSpec = None  # type: ignore[assignment]
    freeze: Callable[[nn.Module], nn.Module] = freeze_parameters
    module_types: Tuple[Union[type, str], ...] = ()
    module_traits: Optional[Callable[[nn.Module], NormTraits]] = None
    batch_free_options: Mapping[str, Any] = field(default_factory=dict)
    declared_kinds: Tuple[str, ...] = ()  # kinds first declared by this entry (undeclared with it)

    @property
    def config_node(self) -> Optional[str]:
        """Config node of its options (e.g. "MODEL.GN"), or None."""
        return getattr(self.options_type, "config_node", None) if self.options_type else None

    def default_options(self) -> Any:
        """Its options at their defaults."""
        return self.options_type() if self.options_type is not None else NormOptions()

    def options_in(self, bundle: NormOptions) -> Any:
        """What its builder receives from a bundle of every family's options: its family's, or all (short form)."""
        return bundle.of(self.options_type) if self.options_type is not None else bundle

    def traits_for(self, options: Any) -> NormTraits:
        """Its traits under ``options`` (an instance of options_type)."""
        return self.traits(options) if callable(self.traits) else self.traits

    def resolved_types(self) -> Tuple[type, ...]:
        """module_types with dotted paths resolved where their module is already imported."""
        out = []
        for t in self.module_types:
            if isinstance(t, str):
                mod_name, _, attr = t.rpartition(".")
                mod = sys.modules.get(mod_name)  # never import: torchvision costs seconds per process
                t = getattr(mod, attr, None) if mod is not None else None
            if isinstance(t, type):
                out.append(t)
        return tuple(out)


@dataclass(frozen=True)
class NormTag:
    """What get_norm records on a module it built: the entry name, resolved traits, activation applied."""

    name: str
    traits: NormTraits
    registered: bool = True
    applies_activation: bool = False


class NormRegistry(Registry):
    """The NORM registry: name -> NormType. ``register("Name")(builder)`` still works (default traits)."""

    def _do_register(self, name: str, obj: Any) -> None:
        if not isinstance(obj, NormType):
            obj = _short_entry(name, obj)
        super()._do_register(name, obj)

    def unregister(self, name: str) -> NormType:
        """Remove and return the entry ``name`` (and the checkpoint kinds it declared)."""
        from .traits import undeclare_kind

        entry = super().unregister(name)
        for kind in entry.declared_kinds:
            undeclare_kind(kind)
        return entry

    def entries(self) -> List[NormType]:
        """Every entry, in registration order."""
        return list(self._obj_map.values())


NORM_REGISTRY = NormRegistry("NORM")
NORM_REGISTRY.__doc__ = """
Registry of normalization layers: name -> NormType (see gn_det.layers.norm). Register with
``@register_norm("MyNorm", options=..., traits=..., module_types=...)`` on ``build(channels, options)
-> nn.Module``; the short form ``@NORM_REGISTRY.register("MyNorm")`` on ``builder(channels, options:
NormOptions) -> nn.Module`` gives default traits (its own kind, no running statistics, batch-free).
The name is then valid in every config key that takes a norm.
"""


def _short_entry(name: str, builder: Any) -> NormType:
    """The NormType of a short-form registration: default traits, or a class's ``norm_traits`` attribute."""
    if not callable(builder):
        raise TypeError(f"NORM_REGISTRY entry {name!r} must be a builder (channels, options) -> nn.Module, "
                        f"got {builder!r}")
    traits = getattr(builder, "norm_traits", None)
    return NormType(name, builder, None, traits if isinstance(traits, NormTraits) else NormTraits(kind=name),
                    module_types=(builder,) if isinstance(builder, type) else ())


def register_norm(
    name: str,
    *,
    options: Optional[type] = None,
    traits: Optional[TraitsSpec] = None,
    freeze: Optional[Callable[[nn.Module], nn.Module]] = None,
    module_types: Iterable[Union[type, str]] = (),
    module_traits: Optional[Callable[[nn.Module], NormTraits]] = None,
    batch_free_options: Optional[Mapping[str, Any]] = None,
    state_keys: Optional[Iterable[str]] = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``build(channels, options) -> nn.Module`` as the norm ``name``.

    ``options``: the family's options dataclass (with ``config_node``); ``traits``: NormTraits or a
    function of the options (default: ``NormTraits(kind=name)``); ``freeze``: default
    freeze_parameters; ``module_types``: classes recognised as this norm; ``state_keys``: declares the
    checkpoint kind of its traits as holding exactly these leaf names (for weight loading).
    """

    def deco(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        who = f"register_norm({name!r})"
        if name in NORM_REGISTRY:
            raise ValueError(f"An object named {name!r} was already registered in the NORM registry")
        if options is not None:
            check_options_type(options, who)
            _check_config_node(options, who)
        entry = NormType(
            name, build, options, traits if traits is not None else NormTraits(kind=name),
            freeze=freeze or freeze_parameters, module_types=tuple(module_types), module_traits=module_traits,
            batch_free_options=dict(batch_free_options or {}),
        )
        _check_batch_free_options(entry, who)
        kind = entry.traits_for(entry.default_options()).kind
        if state_keys is not None and kind_state_keys(kind) is None:
            declare_kind(kind, state_keys)
            entry = dataclasses.replace(entry, declared_kinds=(kind,))
        elif state_keys is not None:
            declare_kind(kind, state_keys)  # raises if it contradicts the existing declaration
        NORM_REGISTRY._do_register(name, entry)
        return build

    return deco


def _check_config_node(options_type: type, who: str) -> None:
    for entry in NORM_REGISTRY.entries():
        if entry.options_type is not None and entry.options_type is not options_type \
                and entry.config_node == options_type.config_node:
            raise ValueError(f"{who}: {options_type.__name__} and {entry.options_type.__name__} (norm "
                             f"{entry.name!r}) both claim config node {options_type.config_node}")


def _check_batch_free_options(entry: NormType, who: str) -> None:
    if not entry.batch_free_options:
        return
    if entry.options_type is None:
        raise ValueError(f"{who}: batch_free_options needs an options dataclass")
    options = dataclasses.replace(entry.default_options(), **entry.batch_free_options)
    if entry.traits_for(options).batch_dependent:
        raise ValueError(f"{who}: its traits under batch_free_options {dict(entry.batch_free_options)} are "
                         "still batch-dependent")


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


def norm_type_of(module: nn.Module) -> Optional[NormType]:
    """The registry entry ``module`` is an instance of: get_norm's tag, else by declared module types."""
    tag = getattr(module, _TAG, None)
    if isinstance(tag, NormTag) and tag.registered and tag.name in NORM_REGISTRY:
        return NORM_REGISTRY.get(tag.name)
    return _entry_for_type(type(module))


def norm_traits(module: nn.Module) -> Optional[NormTraits]:
    """The traits of a norm module (None for anything that is not a norm).

    Read from the module itself where its entry knows how (SN: its use_bn and freeze_stats now), else
    from get_norm's tag, else from the entry its type declares, else from a ``norm_traits`` class attribute.
    """
    tag = getattr(module, _TAG, None)
    entry = norm_type_of(module)
    if entry is not None and entry.module_traits is not None:
        return entry.module_traits(module)
    if isinstance(tag, NormTag):
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
    tag = getattr(module, _TAG, None)
    if isinstance(tag, NormTag):
        return tag.name
    entry = norm_type_of(module)
    if entry is not None:
        return entry.name
    return type(module).__name__ if is_norm(module) else None


def norm_tag(module: Optional[nn.Module]) -> Optional[NormTag]:
    """The NormTag get_norm (or freezing) recorded on ``module``, or None."""
    tag = getattr(module, _TAG, None)
    return tag if isinstance(tag, NormTag) else None


def applies_activation(module: Optional[nn.Module]) -> bool:
    """True when ``module`` is a norm get_norm built with ``act=True`` that applies its own nonlinearity."""
    tag = norm_tag(module)
    return tag is not None and tag.applies_activation


def tag_norm(module: nn.Module, name: str, traits: NormTraits, *, registered: bool = True,
             applies_act: bool = False) -> nn.Module:
    """Record on ``module`` which norm it is (what norm_type_of / norm_traits read); returns it."""
    object.__setattr__(module, _TAG, NormTag(name, traits, registered, applies_act))
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

    Generated from the traits, e.g. "FrozenBN, GN, LN, IN or SN/SyncSN with MODEL.SN.USE_BN=False".
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
