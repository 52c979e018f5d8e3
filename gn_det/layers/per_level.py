"""One norm per input domain, parameters shared: a head applied to every FPN level keeps per-level statistics.

A module run on several feature levels (the RPN head) must not mix the levels' running statistics in
one norm: they would end as an EMA dominated by whichever level ran last, and evaluation would normalise
p2 with p6's statistics. ``per_level_norms`` builds one norm per level whose parameters (affine, SN's
importance weights) are the same tensors, so the head computes the same function on every level and
only the statistics are per level: detectron2's CycleBatchNormList (shared affine, per-domain BN
statistics, Wu & Johnson, "Rethinking BN", 2021, Sec. 5.2).
"""
from __future__ import annotations

from typing import Callable

from torch import nn


def tie_parameters(source: nn.Module, target: nn.Module) -> None:
    """Make every parameter of ``target`` the very tensor ``source`` holds under the same name."""
    for name, param in source.named_parameters():
        owner_path, _, leaf = name.rpartition(".")
        owner = target.get_submodule(owner_path) if owner_path else target
        setattr(owner, leaf, param)


def per_level_norms(build: Callable[[], nn.Module], num_levels: int) -> nn.ModuleList:
    """``num_levels`` norms from ``build()``, level k at index k, all sharing level 0's parameters.

    Buffers (running statistics) stay per level; in a state dict each level lists the shared
    parameters under its own name (``<name>.<k>.weight``), all equal.
    """
    if num_levels < 1:
        raise ValueError(f"per_level_norms needs at least one level, got {num_levels}")
    norms = nn.ModuleList(build() for _ in range(num_levels))
    for norm in norms[1:]:
        tie_parameters(norms[0], norm)
    return norms
