"""Declared norm types: ``NormType`` (one registry entry), ``NORM_REGISTRY`` and the ``register_norm`` decorator.

A registry entry declares, in one place, everything the rest of gn_det needs to know about a norm: how to
build it from ``(channels, options)``, its options dataclass (and so its config node), its traits
(gn_det.layers.traits), how to freeze it, and the module types that identify it when get_norm did not
build it. A new norm is one decorated builder::

    @register_norm("MyNorm", options=MyOptions, traits=NormTraits(kind="MyNorm", running_stats=True,
                   batch_dependent=True), module_types=(MyNorm2d,), state_keys=("weight", "bias", ...))
    def build_my_norm(channels: int, options: MyOptions) -> MyNorm2d: ...
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Mapping, Optional, Tuple, Union

from torch import nn

from gn_det.utils.registry import Registry

from .options import NormOptions, check_options_type
from .traits import NormTraits, declare_kind, kind_state_keys, undeclare_kind

TraitsSpec = Union[NormTraits, Callable[[Any], NormTraits]]


@dataclass(frozen=True)
class NormType:
    """One registered norm: everything the rest of gn_det needs to know about it, declared in one place.

    - ``build(channels, options) -> nn.Module``; a norm whose traits include the activation is also
      passed ``apply_act`` (True where a ReLU would follow it, and it applies its own nonlinearity).
    - ``options_type``: its options dataclass (config node ``options_type.config_node``); None for
      entries registered the short way, whose builder receives the whole NormOptions.
    - ``traits``: a NormTraits, or a function of the options returning one (SN: USE_BN, FREEZE_STATS).
    - ``freeze(module) -> module``: what a frozen stage does to it (None: freeze_parameters, see convert.py).
    - ``module_types``: classes (or dotted paths, resolved only once their module is imported) whose
      instances are this norm when get_norm did not build them (torch's BatchNorm2d, GroupNorm, ...).
    - ``module_traits(module)``: the traits read from a built module, for traits that depend on options.
    - ``batch_free_options``: option values that make it batch-free (SN: use_bn=False), quoted in errors.
    """

    name: str
    build: Callable[..., nn.Module]
    options_type: Optional[type] = None
    traits: TraitsSpec = None  # type: ignore[assignment]
    freeze: Optional[Callable[[nn.Module], nn.Module]] = None  # None: gn_det.layers.freeze_parameters
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


class NormRegistry(Registry):
    """The NORM registry: name -> NormType. ``register("Name")(builder)`` still works (default traits)."""

    def _do_register(self, name: str, obj: Any) -> None:
        if not isinstance(obj, NormType):
            obj = _short_entry(name, obj)
        super()._do_register(name, obj)

    def unregister(self, name: str) -> NormType:
        """Remove and return the entry ``name`` (and the checkpoint kinds it declared)."""
        entry = super().unregister(name)
        for kind in entry.declared_kinds:
            undeclare_kind(kind)
        return entry

    def entries(self) -> List[NormType]:
        """Every entry, in registration order."""
        return list(self._obj_map.values())


NORM_REGISTRY = NormRegistry("NORM")
NORM_REGISTRY.__doc__ = """
Registry of normalization layers: name -> NormType (see gn_det.layers.norm_type). Register with
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
    gn_det.layers.freeze_parameters; ``module_types``: classes recognised as this norm; ``state_keys``: declares the
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
            freeze=freeze, module_types=tuple(module_types), module_traits=module_traits,
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
