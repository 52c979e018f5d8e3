"""LoadReport: what happened to every key when weights were loaded, printed as one table."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from .converted import DetectedFormat

Shape = Tuple[int, ...]


def group_keys(keys: Iterable[str]) -> List[str]:
    """Collapse keys of one module: ``a.b.weight``, ``a.b.bias`` -> ``a.b.{bias,weight}``."""
    groups: Dict[str, List[str]] = defaultdict(list)
    for key in keys:
        prefix, _, leaf = key.rpartition(".")
        groups[prefix].append(leaf)
    out = []
    for prefix in sorted(groups):
        leaves = sorted(groups[prefix])
        body = leaves[0] if len(leaves) == 1 else "{" + ",".join(leaves) + "}"
        out.append(f"{prefix}.{body}" if prefix else body)
    return out


@dataclass
class NormMismatch:
    """A norm layer whose checkpoint kind (BN statistics, GN, SN, ...) differs from the model's."""

    module: str
    checkpoint_kind: str
    model_kind: str
    keys: List[str]


@dataclass
class LoadReport:
    """Outcome of ``load_weights``: matched / missing / unexpected / shape-mismatched keys and why.

    Keys are gn_det names, except ``unexpected`` which uses the file's own names. ``skipped_predictors``
    are class-specific layers whose shapes differ (another class count): left at their initialisation.
    """

    path: str
    format: DetectedFormat
    matched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatched: List[Tuple[str, Shape, Shape]] = field(default_factory=list)
    skipped_predictors: List[Tuple[str, Shape, Shape]] = field(default_factory=list)
    norm_mismatches: List[NormMismatch] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    convention_warnings: List[str] = field(default_factory=list)  # filled when load_weights gets a cfg

    def table(self, max_rows: Optional[int] = 12) -> str:
        """The report as text: a header, one row per category with its (grouped) keys, then notes."""
        lines = [f"Weights {self.path}: {self.format.description} [format '{self.format.name}']"]
        rows = [
            ("matched", len(self.matched), group_keys(self.matched) if max_rows is None else []),
            ("missing (left at init)", len(self.missing), group_keys(self.missing)),
            ("unexpected (not loaded)", len(self.unexpected), group_keys(self.unexpected)),
            ("shape mismatched (not loaded)", len(self.shape_mismatched),
             [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.shape_mismatched]),
            ("class-specific, skipped", len(self.skipped_predictors),
             [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.skipped_predictors
              if k.endswith(".weight")]),
            ("norm kind mismatch (not loaded)", sum(len(m.keys) for m in self.norm_mismatches),
             self._norm_mismatch_lines()),
        ]
        width = max(len(name) for name, _, _ in rows)
        lines.append(f"  {'status':<{width}} | keys | which")
        lines.append(f"  {'-' * width}-+------+------")
        for name, count, details in rows:
            shown = details if max_rows is None else details[:max_rows]
            first = shown[0] if shown else ""
            lines.append(f"  {name:<{width}} | {count:>4} | {first}")
            lines.extend(f"  {'':<{width}} | {'':>4} | {d}" for d in shown[1:])
            if len(details) > len(shown):
                lines.append(f"  {'':<{width}} | {'':>4} | ... {len(details) - len(shown)} more")
        for module, a, b in self.skipped_predictors:
            if module.endswith(".weight"):
                lines.append(
                    f"Skipped {module.rsplit('.', 1)[0]}: {a[0]} outputs in the checkpoint, {b[0]} in the "
                    "model (another class count): re-initialised, to be trained on the new classes"
                )
        lines.extend(self._norm_mismatch_summary())
        lines.extend(f"Note: {n}" for n in self.notes)
        lines.extend(f"WARNING: {w}" for w in self.convention_warnings)
        return "\n".join(lines)

    def _norm_mismatch_lines(self) -> List[str]:
        return [f"{m.module}: checkpoint {m.checkpoint_kind}, model {m.model_kind}" for m in self.norm_mismatches]

    def _norm_mismatch_summary(self) -> List[str]:
        by_pair: Dict[Tuple[str, str], int] = defaultdict(int)
        for m in self.norm_mismatches:
            by_pair[(m.checkpoint_kind, m.model_kind)] += 1
        return [
            f"Norm kind mismatch: {n} norm layers hold {ck} parameters/statistics but the model uses {mk} "
            f"there; they were NOT loaded (the other layers were). Use weights trained with {mk}, or build "
            f"the model with the checkpoint's norm."
            for (ck, mk), n in sorted(by_pair.items())
        ]

    def __str__(self) -> str:
        return self.table()
