"""The config -> gn_det.layers bridge: MODEL.GN / MODEL.BN / MODEL.SN become one NormOptions."""
from __future__ import annotations

from fvcore.common.config import CfgNode

from gn_det.layers import NormOptions


def norm_options_from_cfg(cfg: CfgNode) -> NormOptions:
    """NormOptions for every norm the model builds, from MODEL.GN, MODEL.BN and MODEL.SN."""
    gn, bn, sn = cfg.MODEL.GN, cfg.MODEL.BN, cfg.MODEL.SN
    return NormOptions(
        gn_num_groups=gn.NUM_GROUPS,
        gn_dim_per_gp=gn.DIM_PER_GP,
        gn_eps=gn.EPSILON,
        bn_momentum=bn.MOMENTUM,
        bn_eps=bn.EPSILON,
        sn_use_bn=sn.USE_BN,
        sn_momentum=sn.MOMENTUM,
        sn_eps=sn.EPSILON,
        sn_freeze_stats=sn.FREEZE_STATS,
        gn_groups_key="MODEL.GN.DIM_PER_GP" if gn.DIM_PER_GP > 0 else "MODEL.GN.NUM_GROUPS",
    )
