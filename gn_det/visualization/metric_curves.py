"""Training curves of runs from their metrics.json (one JSON object per logged iteration: losses, lr,
time, data_time, and ``bbox/AP``-style keys after each evaluation), overlaid per key with the iterations
aligned (the library side of tools/plot_metrics.py)."""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from gn_det.benchmark.plots import plt, save_png
from gn_det.benchmark.runs import as_float, read_metrics_lines

__all__ = ["RunCurves", "load_run_curves", "check_keys", "smooth", "plot_curves"]


@dataclass
class RunCurves:
    """One run's metrics.json as ``{key: [(iteration, value), ...]}`` (numeric values only)."""

    name: str
    run_dir: str
    series: Dict[str, List[Tuple[int, float]]] = field(default_factory=dict)

    def mean_seconds_per_iter(self) -> Optional[float]:
        """Mean of the logged "time" (seconds per training iteration), None when the run logs none."""
        times = [v for _, v in self.series.get("time", [])]
        return statistics.fmean(times) if times else None


def load_run_curves(run_dir: str, name: Optional[str] = None) -> RunCurves:
    """Read ``run_dir/metrics.json``; FileNotFoundError naming the run when it has none."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir!r} holds no metrics.json: pass a training run's OUTPUT_DIR")
    curves = RunCurves(name or os.path.basename(os.path.normpath(run_dir)), run_dir)
    for line in read_metrics_lines(path):
        it = line.get("iteration")
        if not isinstance(it, int):
            continue
        for key, value in line.items():
            v = as_float(value)
            if key != "iteration" and v is not None:
                curves.series.setdefault(key, []).append((it, v))
    for points in curves.series.values():
        points.sort()
    return curves


def check_keys(runs: Sequence[RunCurves], keys: Sequence[str]) -> None:
    """ValueError naming the keys the runs have for a key no run logged."""
    have = sorted({k for r in runs for k in r.series})
    for key in keys:
        if not any(key in r.series for r in runs):
            raise ValueError(f"no run logged {key!r}; the runs have: {', '.join(have)}")


def smooth(values: np.ndarray, k: int) -> np.ndarray:
    """Trailing mean over the last ``k`` values (the first ones over what exists); ``k`` <= 1 keeps them."""
    if k <= 1 or len(values) < 2:
        return values
    sums = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - k, 0)
    return (sums[idx] - sums[lo]) / (idx - lo)


def _unique_names(runs: Sequence[RunCurves]) -> List[str]:
    """Legend names: the run folders' names, their paths where two names collide."""
    names = [r.name for r in runs]
    return [r.run_dir if names.count(r.name) > 1 else r.name for r in runs]


def plot_curves(runs: Sequence[RunCurves], keys: Sequence[str], path: str, smooth_k: int = 1) -> str:
    """One panel per key, every run that logged it overlaid against the iteration (``smooth_k``-point
    trailing mean of series with more points than that; evaluation points drawn as markers)."""
    check_keys(runs, keys)
    cols = min(len(keys), 3)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    labels = _unique_names(runs)
    for ax, key in zip(axes.flat, keys):
        for run, label in zip(runs, labels):
            points = run.series.get(key)
            if not points:
                continue
            its = np.array([p[0] for p in points])
            vals = np.array([p[1] for p in points])
            sparse = len(points) <= max(smooth_k, 5)
            ax.plot(its, vals if sparse else smooth(vals, smooth_k), marker="o" if sparse else None, label=label)
        ax.set(title=key + (f" (mean of {smooth_k})" if smooth_k > 1 else ""), xlabel="iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return save_png(fig, path)
