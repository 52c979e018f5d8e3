"""Configuration: ``get_cfg()`` returns the defaults of ``defaults.py`` as a CfgNode."""
from fvcore.common.config import CfgNode

from .defaults import _C


def get_cfg() -> CfgNode:
    """A fresh copy of the default config (merge files and overrides into it, then freeze)."""
    return _C.clone()


__all__ = ["CfgNode", "get_cfg"]
