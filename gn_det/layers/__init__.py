"""Normalization layers behind one registry: ``get_norm(name, channels, options)``."""
from .norm import NORM_REGISTRY, NormOptions, get_norm, norm_layer
from . import batch_norm, group_norm  # noqa: F401  (register BN, GN, LN, IN)

__all__ = ["NORM_REGISTRY", "NormOptions", "get_norm", "norm_layer"]
