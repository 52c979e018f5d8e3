"""Configuration: ``get_cfg()`` returns the defaults of ``defaults.py`` as gn_det's validating CfgNode."""
from .config import CfgNode, ConfigKeyError, ConfigTypeError, iter_leaves, norm_keys, validate_norm_names
from .defaults import _C
from .norm_options import norm_options_from_cfg
from .paths import CONFIGS_DIR, resolve_config_path


def get_cfg() -> CfgNode:
    """A fresh copy of the default config (merge files and overrides into it, then freeze)."""
    return _C.clone()


__all__ = [
    "CONFIGS_DIR",
    "CfgNode",
    "ConfigKeyError",
    "ConfigTypeError",
    "get_cfg",
    "iter_leaves",
    "norm_keys",
    "norm_options_from_cfg",
    "resolve_config_path",
    "validate_norm_names",
]
