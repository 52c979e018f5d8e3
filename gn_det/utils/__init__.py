"""Helpers with no dependency on the rest of gn_det (the lowest layer)."""
from .registry import Registry, UnknownNameError

__all__ = ["Registry", "UnknownNameError"]
