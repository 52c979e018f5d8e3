"""gn_det's keys in detectron2's config: the norm option nodes and the keys its registered builders read.

Setup adds them to detectron2's defaults tree (so every ``detectron2.config.get_cfg()`` has them and a
detectron2 YAML or command line can set ``MODEL.SN.USE_BN False``); ``add_gn_det_config(cfg)`` adds them
to a cfg made before setup. Values are gn_det's defaults (gn_det/config/defaults.py, the option dataclasses).
"""
from __future__ import annotations

from typing import Any, Dict

from gn_det.config import add_norm_option_nodes
from gn_det.config import get_cfg as gn_det_get_cfg

# Keys gn_det's builders read that detectron2's tree lacks (their defaults: gn_det's, "" = same as/plain/none).
BUILDER_KEYS = (
    "MODEL.RESNETS.NORM_3X3", "MODEL.RESNETS.CONV", "MODEL.RESNETS.ZERO_INIT_RESIDUAL", "MODEL.FPN.CONV",
    "MODEL.RPN.HEAD_NORM", "MODEL.RPN.HEAD_CONV", "MODEL.ROI_BOX_HEAD.CONV", "MODEL.ROI_MASK_HEAD.CONV",
)


def _builder_defaults() -> Dict[str, Any]:
    defaults = gn_det_get_cfg()
    out = {}
    for key in BUILDER_KEYS:
        node = defaults
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def add_gn_det_config(cfg):
    """Add gn_det's norm option nodes (MODEL.GN, MODEL.BN, MODEL.SN, MODEL.BRN, MODEL.FRN, MODEL.EVONORM, and
    those of norms registered later) and builder keys (BUILDER_KEYS) missing from detectron2 ``cfg``; returns it.

    Keys already present keep their values, so it is safe to call twice or on a cfg loaded from a run.
    """
    frozen = cfg.is_frozen()
    cfg.defrost()
    add_norm_option_nodes(cfg)
    for key, value in _builder_defaults().items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        if leaf not in node:
            node[leaf] = value
    if frozen:
        cfg.freeze()
    return cfg
