"""The config <-> gn_det.layers bridge for norms: option nodes, NormOptions from cfg, the batch-size check.

Each registered norm family's options dataclass (gn_det.layers: GNOptions -> MODEL.GN, BNOptions ->
MODEL.BN, SNOptions -> MODEL.SN, or a user's) is the one source of its config keys: field name
upper-cased, field default as the key's default. ``add_norm_option_nodes`` writes those nodes into a
config tree (the defaults tree at import, and ``get_cfg()`` again for families registered later).
"""
from __future__ import annotations

import dataclasses
from typing import Any, List

from fvcore.common.config import CfgNode

from gn_det.layers import NORM_REGISTRY, NormOptions, batch_free_norms, synced_norms

from .config import norm_keys

# Set True to let batch-dependent norms train at 1 image per process anyway (see check_batch_dependent_norms).
ALLOW_KEY = "MODEL.ALLOW_BATCH_STATS_AT_1_IMAGE"


def option_families() -> List[type]:
    """The distinct options dataclasses of the registered norms, in registration order."""
    families: List[type] = []
    for entry in NORM_REGISTRY.entries():
        if entry.options_type is not None and entry.options_type not in families:
            families.append(entry.options_type)
    return families


def _node(cfg: CfgNode, path: str, create: bool) -> Any:
    node = cfg
    for part in path.split("."):
        if part not in node:
            if not create:
                return None
            node[part] = type(cfg)()
        node = node[part]
    return node


def add_norm_option_nodes(cfg: CfgNode) -> CfgNode:
    """Add the config node of every registered norm family missing from ``cfg``, with the field defaults.

    A node already present must hold exactly its family's keys (ValueError otherwise: two meanings for
    one node). Returns ``cfg``.
    """
    for family in option_families():
        fields = dataclasses.fields(family)
        keys = {f.name.upper() for f in fields}
        existing = _node(cfg, family.config_node, create=False)
        if existing is not None:
            if not isinstance(existing, CfgNode) or set(existing.keys()) != keys:
                raise ValueError(f"config node {family.config_node} does not hold the keys of {family.__name__} "
                                 f"({', '.join(sorted(keys))}); give the norm family another config_node")
            continue
        node = _node(cfg, family.config_node, create=True)
        for f in fields:
            node[f.name.upper()] = f.default
    return cfg


def norm_options_from_cfg(cfg: CfgNode) -> NormOptions:
    """NormOptions with one instance per registered family, read from its config node (defaults if absent)."""
    found = []
    for family in option_families():
        node = _node(cfg, family.config_node, create=False)
        if node is None:
            continue
        found.append(family(**{f.name: node[f.name.upper()] for f in dataclasses.fields(family)
                               if f.name.upper() in node}))
    return NormOptions(*found)


def check_batch_dependent_norms(cfg: CfgNode, images_per_process: int, num_processes: int = 1) -> None:
    """Refuse, before training, norms whose batch statistics would come from 1 image per process.

    Raises ValueError naming each NORM key whose norm is batch-dependent in training (BN, SyncBN on one
    process, SN with its BN branch, ...; read from the traits under cfg's options), and the norms that
    work instead (generated from the traits). Synced norms pass over more than one process; a frozen
    ResNet (MODEL.BACKBONE.FREEZE_AT 5) does not count; MODEL.ALLOW_BATCH_STATS_AT_1_IMAGE True allows it.
    """
    if images_per_process != 1 or cfg.MODEL.ALLOW_BATCH_STATS_AT_1_IMAGE:
        return
    options = norm_options_from_cfg(cfg)
    resnet_frozen = cfg.MODEL.BACKBONE.FREEZE_AT >= 5
    bad = []
    for key, name in norm_keys(cfg):
        if not name or (resnet_frozen and key.startswith("MODEL.RESNETS.")):
            continue
        entry = NORM_REGISTRY.get(name, key=key)
        traits = entry.traits_for(entry.options_in(options))
        if traits.batch_dependent and not (traits.synced and num_processes > 1):
            bad.append(f"{key}={name!r}")
    if not bad:
        return
    synced = synced_norms()
    over_processes = f" {'/'.join(synced)} over more than one process," if synced else ""
    raise ValueError(
        f"{', '.join(bad)} would compute batch statistics from 1 image per process in training; use "
        f"{batch_free_norms()} instead,{over_processes} more images per process (SOLVER.IMS_PER_BATCH), "
        f"or set {ALLOW_KEY} True to train it anyway"
    )


__all__ = ["add_norm_option_nodes", "check_batch_dependent_norms", "norm_options_from_cfg", "option_families"]
