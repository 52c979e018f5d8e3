"""gn_det's norms behind detectron2's ``get_norm``: its own names keep their meaning, gn_det's are added.

detectron2's ``get_norm(norm, out_channels)`` knows a fixed table (BN, SyncBN, FrozenBN, GN, nnSyncBN,
naiveSyncBN, naiveSyncBN_N, LN). ``get_norm`` here answers those names with detectron2's own modules and
every other name registered in gn_det's NORM_REGISTRY (SN, SyncSN, BRN, SyncBRN, FRN, EvoNormS0,
EvoNormB0, IN, and a user's) with gn_det's, built with the options of the config being built
(``options_from``, entered by the plugin's ``build_model``) or the families' defaults. ``norm(name,
**options)`` is the same as a callable, for LazyConfig's ``norm=`` with or without the plugin.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
from typing import Any, Iterator, List, Optional

from torch import nn

from gn_det.config import norm_options_from_cfg
from gn_det.layers import NORM_REGISTRY, NormOptions
from gn_det.layers import get_norm as gn_det_get_norm

logger = logging.getLogger(__name__)

# detectron2's own names (detectron2/layers/batch_norm.py); setup keeps those its get_norm accepts.
DETECTRON2_NORM_NAMES = ("BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN")

_OPTIONS: contextvars.ContextVar[Optional[NormOptions]] = contextvars.ContextVar("gn_det_d2_norm_options",
                                                                                 default=None)
_detectron2_names: List[str] = []
_warned_activation: set = set()


def detectron2_names() -> List[str]:
    """The names detectron2's own get_norm builds (probed at setup)."""
    return list(_detectron2_names)


def probe_detectron2_names(original_get_norm) -> None:
    """Record which of DETECTRON2_NORM_NAMES this detectron2's get_norm accepts."""
    names = []
    for name in DETECTRON2_NORM_NAMES:
        try:
            original_get_norm(name, 32)
        except KeyError:
            continue
        names.append(name)
    _detectron2_names[:] = names


@contextlib.contextmanager
def options_from(cfg) -> Iterator[NormOptions]:
    """Within the block, gn_det norms built through detectron2's get_norm take ``cfg``'s option nodes."""
    options = norm_options_from_cfg(cfg)
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)


def current_options() -> NormOptions:
    """The options in force: the config being built, else every family's defaults."""
    options = _OPTIONS.get()
    return options if options is not None else NormOptions()


def known_names() -> List[str]:
    """Every name detectron2's get_norm takes with the plugin on (detectron2's and gn_det's), sorted."""
    return sorted(set(_detectron2_names) | set(NORM_REGISTRY.names()), key=str.lower)


def _build_gn_det(name: str, channels: int, options: NormOptions) -> nn.Module:
    entry = NORM_REGISTRY.get(name)
    if entry.traits_for(entry.options_in(options)).includes_activation and name not in _warned_activation:
        _warned_activation.add(name)
        logger.warning("%s includes its activation, but detectron2's builders put their own ReLU after each norm: "
                       "they get %s without it; gn_det's registered builders (build_gn_det_resnet_fpn_backbone, "
                       "GnDetRPNHead, GnDetFastRCNNConvFCHead, GnDetMaskRCNNConvUpsampleHead) replace norm + ReLU "
                       "by it", name, name)
    return gn_det_get_norm(name, channels, options, key=f"norm {name!r}")


def make_get_norm(original_get_norm):
    """detectron2's get_norm with gn_det's names added (detectron2's own names and callables unchanged)."""

    def get_norm(norm, out_channels):
        """detectron2's ``get_norm``, knowing every gn_det norm name too (gn_det.detectron2)."""
        if not isinstance(norm, str) or norm == "" or norm in _detectron2_names:
            return original_get_norm(norm, out_channels)
        if norm in NORM_REGISTRY:
            return _build_gn_det(norm, out_channels, current_options())
        raise KeyError(f"Unknown norm {norm!r}; detectron2 with gn_det knows: {', '.join(known_names())}")

    get_norm.__doc__ = (original_get_norm.__doc__ or "") + "\n    gn_det.detectron2: also every name in " \
        "gn_det.layers.NORM_REGISTRY (SN, SyncSN, BRN, SyncBRN, FRN, EvoNormS0, EvoNormB0, IN, ...)."
    return get_norm


class norm:  # noqa: N801 (a LazyConfig value reads as a call: norm("SN", use_bn=False))
    """A gn_det norm as a callable ``channels -> module``: detectron2's ``norm=`` takes it with or without setup.

    ``norm("SN", use_bn=False)``, ``norm("GN", num_groups=16)``: the keyword arguments are the family's
    option fields (gn_det.layers: SNOptions, GNOptions, ...); the others keep their defaults. A plain class,
    not a dataclass, so OmegaConf (LazyConfig) keeps it as an object instead of a structured config.
    """

    def __init__(self, name: str, **options: Any) -> None:
        entry = NORM_REGISTRY.get(name, key="norm")
        if options and entry.options_type is None:
            raise TypeError(f"norm {name!r} takes no options, got {sorted(options)}")
        if entry.options_type is not None:
            valid = {f.name for f in dataclasses.fields(entry.options_type)}
            unknown = sorted(set(options) - valid)
            if unknown:
                raise TypeError(f"norm {name!r}: unknown option(s) {unknown}; {entry.options_type.__name__} "
                                f"has {sorted(valid)}")
        self.name = name
        self.options = dict(options)

    def family_options(self) -> Any:
        """The family's options instance (defaults replaced by the given keywords), or None."""
        entry = NORM_REGISTRY.get(self.name, key="norm")
        return None if entry.options_type is None else entry.options_type(**self.options)

    def __call__(self, channels: int) -> nn.Module:
        options = self.family_options()
        return _build_gn_det(self.name, channels, NormOptions(options) if options is not None else NormOptions())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, norm) and (self.name, self.options) == (other.name, other.options)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.options.items()))))

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in sorted(self.options.items()))
        return f"gn_det.detectron2.norm({self.name!r}{args})"
