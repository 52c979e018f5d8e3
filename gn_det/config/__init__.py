"""Configuration: ``get_cfg()`` returns the defaults of ``defaults.py`` as gn_det's validating CfgNode."""
from .config import (
    CfgNode, ConfigKeyError, ConfigTypeError, conv_keys, iter_leaves, norm_keys, validate_conv_names,
    validate_norm_names,
)
from .defaults import _C
from .from_args import config_from_args
from .norm_options import add_norm_option_nodes, check_batch_dependent_norms, norm_options_from_cfg
from .paths import CONFIGS_DIR, resolve_config_path


def get_cfg() -> CfgNode:
    """A fresh copy of the default config (merge files and overrides into it, then freeze).

    It holds a MODEL.<NODE> for every registered norm family, also one registered after import.
    """
    return add_norm_option_nodes(_C.clone())


__all__ = [
    "CONFIGS_DIR",
    "CfgNode",
    "ConfigKeyError",
    "ConfigTypeError",
    "add_norm_option_nodes",
    "check_batch_dependent_norms",
    "config_from_args",
    "conv_keys",
    "get_cfg",
    "iter_leaves",
    "norm_keys",
    "norm_options_from_cfg",
    "resolve_config_path",
    "validate_conv_names",
    "validate_norm_names",
]
