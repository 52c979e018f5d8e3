"""Switchable Norm's learned importance: softmax of each SN layer's mean and variance weights.

An SN layer (Luo et al., ICLR 2019) normalizes with a weighted mix of IN, LN and BN statistics;
the weights are ``softmax(mean_weight)`` and ``softmax(var_weight)`` in the order IN, LN, BN
(docs/INTERFACES.md). Without the BN branch (MODEL.SN.USE_BN False) only IN and LN take part.
The SN paper's figures show these shares per layer; this module computes them for any model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import nn

from gn_det.layers.switch_norm import BRANCHES

from .formatting import Column, Table
from .naming import stage_of


@dataclass(frozen=True)
class SNShares:
    """The importance shares of one SN layer: ``branches[i]`` gets ``mean[i]`` / ``var[i]``."""

    name: str
    stage: str
    branches: Tuple[str, ...]
    mean: Tuple[float, ...]
    var: Tuple[float, ...]


def is_switchable_norm(module: nn.Module) -> bool:
    """True for SN layers: modules owning ``mean_weight`` and ``var_weight`` parameters."""
    return isinstance(getattr(module, "mean_weight", None), torch.Tensor) and isinstance(
        getattr(module, "var_weight", None), torch.Tensor
    )


def _branches(module: nn.Module, n: int) -> Tuple[str, ...]:
    if n not in (2, 3):
        raise ValueError(f"an SN layer has 2 (IN, LN) or 3 (IN, LN, BN) importance weights, got {n}")
    return BRANCHES[:n]


def sn_shares(model: nn.Module) -> List[SNShares]:
    """The IN/LN/BN shares of every SN layer of ``model``, in module order (computed in float64)."""
    rows = []
    for name, module in model.named_modules():
        if not is_switchable_norm(module):
            continue
        mean_w = module.mean_weight.detach().double().flatten()
        var_w = module.var_weight.detach().double().flatten()
        branches = _branches(module, mean_w.numel())
        rows.append(
            SNShares(
                name=name,
                stage=stage_of(name),
                branches=branches,
                mean=tuple(torch.softmax(mean_w, 0).tolist()),
                var=tuple(torch.softmax(var_w, 0).tolist()),
            )
        )
    return rows


def shares_table(rows: Sequence[SNShares]) -> Table:
    """One line per SN layer: stage, name and the IN/LN/BN share of mean and of variance."""
    columns = [Column("stage", "stage"), Column("name", "layer")]
    for kind in ("mean", "var"):
        columns += [Column(f"{kind}_{b}", f"{kind} {b}", 3, True) for b in BRANCHES]
    table_rows = []
    for row in rows:
        record = {"stage": row.stage, "name": row.name}
        for kind, shares in (("mean", row.mean), ("var", row.var)):
            for branch, share in zip(row.branches, shares):
                record[f"{kind}_{branch}"] = share
        table_rows.append(record)
    return Table(columns=columns, rows=table_rows, title="Switchable Norm importance (softmax shares)")
