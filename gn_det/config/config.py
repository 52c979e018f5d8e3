"""gn_det's CfgNode: fvcore's (``_BASE_`` inheritance) with errors that name the key and the fix.

yacs reports an unknown key as "Non-existent config key" (or an AssertionError from
``merge_from_list``), a wrong type without saying which type is expected, and accepts any string as
a norm name. Here every merge (file, list, other node) is checked first, against the defaults tree:
- an unknown key names the key and the closest valid keys;
- a wrong type names the key, the value and the expected type (an int is accepted for a float key);
- every string key whose name contains NORM must be "" or a name in gn_det.layers.NORM_REGISTRY;
- every string key named CONV or *_CONV must be a name in gn_det.layers.CONV_REGISTRY ("" = plain).
"""
from __future__ import annotations

import difflib
from typing import Any, Iterator, List, Optional, Tuple

from fvcore.common.config import BASE_KEY
from fvcore.common.config import CfgNode as _FvcoreCfgNode

from gn_det.utils.registry import UnknownNameError


class ConfigKeyError(KeyError):
    """A config key that does not exist; prints its message without KeyError's quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigTypeError(ValueError):
    """A config value whose type does not match the default's."""


def _type_name(value: Any) -> str:
    """Name of a value's type as a user reads it in YAML terms (tuple and list both read 'list')."""
    return "list" if isinstance(value, (list, tuple)) else type(value).__name__


def _coerce(value: Any, default: Any, full_key: str) -> Any:
    """``value`` converted to the type of ``default`` where that is lossless, else ConfigTypeError."""
    if default is None or value is None or type(value) is type(default):
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigTypeError(
        f"Config key {full_key} has value {value!r} of type {_type_name(value)}, "
        f"expected type {_type_name(default)} (default: {default!r})"
    )


class CfgNode(_FvcoreCfgNode):
    """fvcore's CfgNode (``_BASE_`` in YAML files) whose merges validate keys, types and norm names.

    ``merge_from_file(path)``, ``merge_from_list([KEY, VALUE, ...])`` and ``merge_from_other_cfg``
    raise ConfigKeyError (unknown key, with close valid keys), ConfigTypeError (wrong type) or
    gn_det.utils.UnknownNameError (a NORM / CONV key naming an unregistered norm / conv) before changing anything.
    """

    def merge_from_other_cfg(self, cfg_other: "_FvcoreCfgNode") -> Any:
        """Merge ``cfg_other`` into this node after checking every key, type and norm name in it."""
        if BASE_KEY in cfg_other:
            raise ConfigKeyError(f"The key {BASE_KEY} can only be used in YAML files, not in overrides")
        self._check_other(cfg_other, self, [])
        trial = self.clone()  # check norm names on the merged result before touching self
        _FvcoreCfgNode.merge_from_other_cfg(trial, cfg_other.clone())
        validate_norm_names(trial)
        validate_conv_names(trial)
        return super().merge_from_other_cfg(cfg_other)

    def merge_from_list(self, cfg_list: List[Any]) -> Any:
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` (values as strings are parsed as Python literals)."""
        if len(cfg_list) % 2 != 0:
            raise ValueError(
                f"Config overrides must come in KEY VALUE pairs, got {len(cfg_list)} items: {list(cfg_list)}"
            )
        nested: dict = {}
        for full_key, raw in zip(cfg_list[0::2], cfg_list[1::2]):
            if not isinstance(full_key, str) or not full_key:
                raise ConfigKeyError(f"Config override key must be a dotted name like MODEL.FPN.NORM, got {full_key!r}")
            parts = full_key.split(".")
            node = nested
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigKeyError(f"Config key {full_key} is given both as a value and as a section")
            node[parts[-1]] = self._decode_cfg_value(raw)
        return self.merge_from_other_cfg(type(self)(nested))

    def _check_other(self, other: dict, default: "CfgNode", key_list: List[str]) -> None:
        """Raise on the first unknown key or wrongly typed value of ``other``; coerce lossless types."""
        for key in list(other.keys()):
            full_key = ".".join(key_list + [key])
            if key not in default:
                if default.is_new_allowed():
                    continue
                value = other[key]
                if isinstance(value, dict) and value:  # an unknown section: name a full key inside it
                    full_key = next(iter_leaves(_FvcoreCfgNode(value), full_key + "."), (full_key, None))[0]
                raise ConfigKeyError(self._unknown_key_message(full_key))
            value, reference = other[key], default[key]
            if isinstance(reference, _FvcoreCfgNode):
                if not isinstance(value, dict):
                    raise ConfigTypeError(
                        f"Config key {full_key} is a section ({', '.join(sorted(reference))}); "
                        f"got the value {value!r}"
                    )
                self._check_other(value, reference, key_list + [key])
            elif isinstance(value, dict):
                raise ConfigTypeError(
                    f"Config key {full_key} has value {value!r} of type section, "
                    f"expected type {_type_name(reference)} (default: {reference!r})"
                )
            else:
                value = self._decode_cfg_value(value)
                other[key] = _coerce(value, reference, full_key)

    def _unknown_key_message(self, full_key: str) -> str:
        """'Unknown config key X. Did you mean: A, B?' with the closest valid full key names."""
        valid = [name for name, _ in iter_leaves(self)]
        close = difflib.get_close_matches(full_key, valid, n=3, cutoff=0.6)
        if not close:
            # The same last component elsewhere in the tree (a mistyped or misplaced section).
            leaf = full_key.rsplit(".", 1)[-1]
            close = [v for v in valid if v.rsplit(".", 1)[-1] == leaf][:3]
        hint = f" Did you mean: {', '.join(close)}?" if close else " See gn_det/config/defaults.py for the keys."
        return f"Unknown config key {full_key}.{hint}"


def iter_leaves(node: _FvcoreCfgNode, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """(full dotted key, value) of every non-section entry of ``node``, depth first."""
    for key, value in node.items():
        full_key = f"{prefix}{key}"
        if isinstance(value, _FvcoreCfgNode):
            yield from iter_leaves(value, full_key + ".")
        else:
            yield full_key, value


def norm_keys(cfg: _FvcoreCfgNode) -> List[Tuple[str, Optional[str]]]:
    """(key, value) of every config key that names a norm: a string leaf whose name contains NORM."""
    return [
        (key, value)
        for key, value in iter_leaves(cfg)
        if "NORM" in key.rsplit(".", 1)[-1] and (isinstance(value, str) or value is None)
    ]


def validate_norm_names(cfg: _FvcoreCfgNode) -> None:
    """Raise UnknownNameError naming the key and the registered norms for any unregistered norm name."""
    from gn_det.layers import NORM_REGISTRY  # imported late: config sits above layers, keep import cheap

    for key, value in norm_keys(cfg):
        if value:
            try:
                NORM_REGISTRY.get(value, key=key)
            except UnknownNameError as exc:
                raise UnknownNameError(f"{exc} Use '' for no norm.") from None


def conv_keys(cfg: _FvcoreCfgNode) -> List[Tuple[str, Optional[str]]]:
    """(key, value) of every config key that names a conv: a string leaf named CONV or ending in _CONV."""
    return [
        (key, value)
        for key, value in iter_leaves(cfg)
        if (key.rsplit(".", 1)[-1] == "CONV" or key.endswith("_CONV")) and (isinstance(value, str) or value is None)
    ]


def validate_conv_names(cfg: _FvcoreCfgNode) -> None:
    """Raise UnknownNameError naming the key and the registered convs for any unregistered conv name."""
    from gn_det.layers import CONV_REGISTRY  # imported late, as validate_norm_names

    for key, value in conv_keys(cfg):
        CONV_REGISTRY.get(value or "", key=key)
