"""Norm options, one dataclass per norm family, each paired with its config node.

A family's options dataclass (GNOptions, BNOptions, SNOptions, or a user's) names its config node in the
class attribute ``config_node`` (e.g. "MODEL.GN"); each field is a key of that node, upper-cased
(``num_groups`` -> MODEL.GN.NUM_GROUPS), and the field's default is the key's default: gn_det.config
generates those nodes from the dataclasses, so the defaults live in one place. ``NormOptions`` bundles
one instance per family (what ``gn_det.config.norm_options_from_cfg(cfg)`` returns); a family missing
from it takes its defaults.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Iterator


class FamilyOptions:
    """Convenience base for a family's options dataclass: ``config_node`` and ``key(field)``."""

    config_node: ClassVar[str] = ""

    @classmethod
    def key(cls, field_name: str) -> str:
        """The config key of ``field_name``, e.g. GNOptions.key("num_groups") == "MODEL.GN.NUM_GROUPS"."""
        return option_key(cls, field_name)


def option_key(options_type: Any, field_name: str) -> str:
    """``<config_node>.<FIELD>`` for an options dataclass (or instance) and one of its fields."""
    node = getattr(options_type, "config_node", "")
    return f"{node}.{field_name.upper()}" if node else field_name


def check_options_type(options_type: Any, who: str) -> None:
    """Raise TypeError unless ``options_type`` is a dataclass type with a dotted ``config_node``."""
    if not (isinstance(options_type, type) and dataclasses.is_dataclass(options_type)):
        raise TypeError(f"{who}: options must be a dataclass type, got {options_type!r}")
    node = getattr(options_type, "config_node", None)
    if not isinstance(node, str) or not node or not all(part.isidentifier() for part in node.split(".")):
        raise TypeError(f"{who}: {options_type.__name__}.config_node must name a config node such as "
                        f"'MODEL.MYNORM', got {node!r}")
    for f in dataclasses.fields(options_type):
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{who}: {options_type.__name__}.{f.name} needs a default (it is the default of "
                            f"{option_key(options_type, f.name)})")


class NormOptions:
    """The options of every norm family: at most one instance per options dataclass.

    ``NormOptions(GNOptions(num_groups=8), SNOptions(use_bn=False))``; ``of(GNOptions)`` returns the
    given instance or the family's defaults.
    """

    def __init__(self, *family_options: Any) -> None:
        by_type: Dict[type, Any] = {}
        for options in family_options:
            if not dataclasses.is_dataclass(options) or isinstance(options, type):
                raise TypeError(f"NormOptions takes options dataclass instances (GNOptions(...), ...), got {options!r}")
            if type(options) in by_type:
                raise ValueError(f"NormOptions got two {type(options).__name__} instances")
            by_type[type(options)] = options
        self._by_type = by_type

    def of(self, options_type: type) -> Any:
        """The instance of ``options_type`` held here, else ``options_type()`` (its defaults)."""
        found = self._by_type.get(options_type)
        return found if found is not None else options_type()

    def replace(self, *family_options: Any) -> "NormOptions":
        """A copy in which ``family_options`` replace the instances of their types."""
        merged = dict(self._by_type)
        merged.update((type(o), o) for o in NormOptions(*family_options))
        return NormOptions(*merged.values())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._by_type.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NormOptions) and self._by_type == other._by_type

    def __repr__(self) -> str:
        return f"NormOptions({', '.join(map(repr, self))})"
