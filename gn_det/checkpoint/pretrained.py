"""Pretrained backbones for the fine-tuning comparison: which one a recipe loads, and what loading does.

The load table (``LOAD_TABLE``): a backbone pretrained by tools/pretrain_backbone.py with the norm in the
first column loads into a detection recipe whose MODEL.RESNETS.NORM is in the second as the third says.
The tensor-level rules are gn_det.checkpoint.matching's (a norm loads only checkpoint kinds its traits
accept); this module adds the recipe-level view the sweep plans with, and turns a mismatch, which
``load_weights`` reports and skips, into an error naming both sides and the fix.
"""
from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Optional

from torch import nn

from .load import load_weights
from .report import LoadReport

__all__ = ["LOAD_TABLE", "LoadRule", "PRETRAIN_RECIPES", "pretrained_backbone_for", "check_backbone_report",
           "check_pretrained_recipe", "load_pretrained_backbone"]

BACKBONE_PREFIX = "backbone.bottom_up."


class LoadRule(NamedTuple):
    """A row of the load table."""

    pretrained: str  # the pretraining recipe's backbone: bn, gn, sn, gnws
    norm: str  # MODEL.RESNETS.NORM of the detection recipe
    conv: str  # MODEL.RESNETS.CONV of the detection recipe ("" = plain)
    becomes: str


LOAD_TABLE = (
    LoadRule("bn", "FrozenBN", "", "FrozenBN holding the pretrained running mean/var and affine (fixed: the BN* row)"),
    LoadRule("bn", "BN", "", "BN initialised from the pretrained running statistics and affine, then trained "
                             "with each process's batch statistics"),
    LoadRule("bn", "SyncBN", "", "BN initialised from the pretrained statistics and affine, then trained with "
                                 "statistics pooled over the processes"),
    LoadRule("gn", "GN", "", "GN with its pretrained affine (no statistics to hold)"),
    LoadRule("sn", "SN", "", "SN with its pretrained affine, importance weights and BN-branch running statistics"),
    LoadRule("gnws", "GN", "WS", "GN affine and the weight-standardised convs' raw weights"),
)
# Pretraining recipe of each backbone kind (configs/tiny/pretrain/<file>.yaml).
PRETRAIN_RECIPES: Dict[str, str] = {"bn": "R_18_bn", "gn": "R_18_gn", "sn": "R_18_sn", "gnws": "R_18_gnws"}


def pretrained_backbone_for(norm: str, conv: str = "") -> str:
    """The pretrained backbone (bn, gn, sn, gnws) a recipe with MODEL.RESNETS.NORM ``norm`` and CONV ``conv`` loads."""
    for rule in LOAD_TABLE:
        if rule.norm == norm and rule.conv == (conv or ""):
            return rule.pretrained
    known = ", ".join(f"{r.norm}{'+' + r.conv if r.conv else ''}" for r in LOAD_TABLE)
    raise ValueError(f"no pretrained backbone for MODEL.RESNETS.NORM={norm!r} CONV={conv!r}; the load table "
                     f"covers {known}")


def _recipe_of_weights(path: str) -> Optional[Dict[str, str]]:
    """MODEL.RESNETS.NORM/CONV recorded in config.yaml beside ``path`` (None when there is none)."""
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    if not os.path.isfile(config):
        return None
    import yaml

    with open(config, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    resnets = (data.get("MODEL") or {}).get("RESNETS") or {}
    return {"norm": str(resnets.get("NORM", "")), "conv": str(resnets.get("CONV", "") or "")}


def check_pretrained_recipe(cfg, path: str) -> None:
    """Raise ValueError when the backbone at ``path`` was pretrained with a norm/conv other than the one
    ``cfg``'s recipe loads (read from the run's config.yaml; a file without one is not judged here)."""
    recorded = _recipe_of_weights(path)
    if recorded is None:
        return
    want = pretrained_backbone_for(cfg.MODEL.RESNETS.NORM, cfg.MODEL.RESNETS.CONV)
    try:
        have = pretrained_backbone_for(recorded["norm"], recorded["conv"])
    except ValueError:
        have = f"{recorded['norm']}{'+' + recorded['conv'] if recorded['conv'] else ''}"
    if have != want:
        raise ValueError(
            f"MODEL.WEIGHTS {path} is a {have} backbone but MODEL.RESNETS.NORM={cfg.MODEL.RESNETS.NORM!r} "
            f"CONV={cfg.MODEL.RESNETS.CONV!r} loads a {want} backbone; pretrain one with "
            f"configs/tiny/pretrain/{PRETRAIN_RECIPES[want]}.yaml")


def check_backbone_report(report: LoadReport) -> None:
    """Raise ValueError when a backbone norm held another kind (not loaded) or a backbone tensor stayed at
    its initialisation: a fine-tuning cell must start from the whole pretrained backbone."""
    mismatched = [m for m in report.norm_mismatches if m.module.startswith(BACKBONE_PREFIX)]
    if mismatched:
        first = mismatched[0]
        raise ValueError(
            f"{report.path}: {len(mismatched)} backbone norm layers hold {first.checkpoint_kind} parameters but "
            f"the recipe uses {first.model_kind} (e.g. {first.module}); load a backbone pretrained with "
            f"{first.model_kind} (configs/tiny/pretrain/) or change MODEL.RESNETS.NORM")
    missing: List[str] = [k for k in report.missing + [k for k, _, _ in report.shape_mismatched]
                          if k.startswith(BACKBONE_PREFIX)]
    if missing:
        raise ValueError(f"{report.path}: {len(missing)} backbone tensors did not load (e.g. {missing[0]}); "
                         "is it a backbone of this depth and width?")


def load_pretrained_backbone(model: nn.Module, path: str, cfg=None, verbose: bool = False) -> LoadReport:
    """``load_weights`` plus the checks above: the whole backbone loads, every norm from its own kind."""
    if cfg is not None:
        check_pretrained_recipe(cfg, path)
    report = load_weights(model, path, cfg=cfg, verbose=verbose)
    check_backbone_report(report)
    return report
