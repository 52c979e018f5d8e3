"""Run both norm analyses on a model and write their tables and plots (used by tools/analyze_norms.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional

from torch import nn

from .estimation_shift import ShiftRow, bn_like_layers, estimation_shift, measure_input_statistics, shift_table
from gn_det.utils.file_io import atomic_write_text

from .formatting import Table, render
from .sn_importance import SNShares, shares_table, sn_shares


@dataclass
class NormAnalysis:
    """Results of the analyses and the files written for them."""

    sn_rows: List[SNShares]
    shift_rows: List[ShiftRow]
    # BN-like layers the data never reached (e.g. the mask head when nothing was detected)
    unreached: List[str] = field(default_factory=list)
    tables: Dict[str, Table] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)


def write_table(table: Table, stem: str) -> List[str]:
    """``stem``.md and ``stem``.csv of ``table``."""
    return [atomic_write_text(f"{stem}.md", render(table, "markdown")), atomic_write_text(f"{stem}.csv", render(table, "csv"))]


def analyze_norms(
    model: nn.Module,
    batches: Iterable[Any],
    output_dir: Optional[str] = None,
    forward: Optional[Callable[[nn.Module, Any], Any]] = None,
) -> NormAnalysis:
    """SN importance shares and BN estimation shift of ``model`` (expected statistics over ``batches``).

    With ``output_dir``, writes sn_importance.{md,csv,png} and estimation_shift.{md,csv,png} there
    (each only when the model has such layers).
    """
    from .plots import plot_estimation_shift, plot_sn_importance  # matplotlib only when needed

    sn_rows = sn_shares(model)
    layers = [name for name, _ in bn_like_layers(model)]
    shift_rows = estimation_shift(model, measure_input_statistics(model, batches, forward)) if layers else []
    reached = {row.name for row in shift_rows}
    result = NormAnalysis(sn_rows=sn_rows, shift_rows=shift_rows, unreached=[n for n in layers if n not in reached])
    if sn_rows:
        result.tables["sn_importance"] = shares_table(sn_rows)
    if shift_rows:
        result.tables["estimation_shift"] = shift_table(shift_rows)
    if output_dir:
        for name, table in result.tables.items():
            result.files += write_table(table, os.path.join(output_dir, name))
        if sn_rows:
            result.files.append(plot_sn_importance(sn_rows, os.path.join(output_dir, "sn_importance.png")))
        if shift_rows:
            result.files.append(plot_estimation_shift(shift_rows, os.path.join(output_dir, "estimation_shift.png")))
    return result

