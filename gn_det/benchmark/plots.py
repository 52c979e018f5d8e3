"""matplotlib figures of the analyses and of the norm sweep, written as PNG (headless Agg backend)."""
from __future__ import annotations

from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gn_det.utils.file_io import atomic_write  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .estimation_shift import ShiftRow  # noqa: E402
from .sn_importance import BRANCHES, SNShares  # noqa: E402

BRANCH_COLORS = {"IN": "#4c72b0", "LN": "#55a868", "BN": "#c44e52"}


def _save(fig: "plt.Figure", path: str) -> str:
    """Save as PNG atomically (gn_det.utils.file_io) and close the figure."""
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_sn_importance(rows: Sequence[SNShares], path: str) -> str:
    """Stacked IN/LN/BN shares per SN layer: one row of panels per stage, mean (left) and var (right)."""
    if not rows:
        raise ValueError("no SN layers to plot: the model has no Switchable Norm (set a NORM key to 'SN')")
    stages: Dict[str, List[SNShares]] = {}
    for row in rows:
        stages.setdefault(row.stage, []).append(row)
    fig, axes = plt.subplots(len(stages), 2, figsize=(10, 1.8 * len(stages) + 0.6), squeeze=False)
    for r, (stage, layers) in enumerate(stages.items()):
        for c, kind in enumerate(("mean", "var")):
            ax = axes[r][c]
            bottom = [0.0] * len(layers)
            for b, branch in enumerate(BRANCHES):
                heights = [getattr(l, kind)[b] if b < len(l.branches) else 0.0 for l in layers]
                ax.bar(range(len(layers)), heights, bottom=bottom, color=BRANCH_COLORS[branch],
                       label=branch if (r == 0 and c == 0) else None, width=0.85)
                bottom = [x + h for x, h in zip(bottom, heights)]
            ax.set_ylim(0, 1)
            ax.set_xticks([])
            ax.set_title(f"{stage}: {kind} ({len(layers)} layers)", fontsize=9)
    fig.suptitle("Switchable Norm importance shares per layer", y=1.07)
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 1.03), ncol=3, frameon=False)
    return _save(fig, path)


def plot_estimation_shift(rows: Sequence[ShiftRow], path: str) -> str:
    """Mean and variance shift per BN-like layer in network order (log scale), stages marked."""
    if not rows:
        raise ValueError("no BN-like layers reached: the model has no BN/SyncBN/FrozenBN/SN-with-BN layer")
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    x = [r.index for r in rows]
    for ax, key, label in ((axes[0], "mean_shift", "||running mean - E[x]||"),
                           (axes[1], "var_shift", "||running var - Var[x]||")):
        values = [max(getattr(r, key), 1e-12) for r in rows]
        ax.plot(x, values, marker="o", markersize=3, linewidth=1)
        ax.set_yscale("log")
        ax.set_ylabel(label, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        previous = None
        for r in rows:
            if r.stage != previous:
                if previous is not None:
                    ax.axvline(r.index - 0.5, color="0.8", linewidth=0.8)
                if ax is axes[0]:
                    ax.text(r.index, ax.get_ylim()[1], r.stage, fontsize=7, va="bottom", rotation=45)
                previous = r.stage
    axes[1].set_xlabel("BN-like layer (network order)")
    fig.suptitle("BN estimation shift", y=1.04)
    return _save(fig, path)


def plot_sweep(rows: Sequence[Dict[str, object]], path: str, metrics: Sequence[str] = ("box_AP", "mask_AP")) -> str:
    """Grouped bars: AP per norm recipe, one bar per images-per-process value; one panel per metric.

    ``rows`` hold "recipe", "ims_per_process" and the metrics (None = missing, drawn as no bar).
    """
    recipes: List[str] = []
    sizes: List[int] = []
    for row in rows:
        if row["recipe"] not in recipes:
            recipes.append(str(row["recipe"]))
        if row["ims_per_process"] not in sizes:
            sizes.append(int(row["ims_per_process"]))  # type: ignore[arg-type]
    sizes.sort()
    lookup = {(r["recipe"], r["ims_per_process"]): r for r in rows}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / max(len(sizes), 1)
    for ax, metric in zip(axes[0], metrics):
        for s, size in enumerate(sizes):
            xs, hs, missing = [], [], []
            for i, recipe in enumerate(recipes):
                value = lookup.get((recipe, size), {}).get(metric)
                x = i - 0.4 + width * (s + 0.5)
                if isinstance(value, (int, float)):
                    xs.append(x)
                    hs.append(value)
                else:
                    missing.append(x)
            bars = ax.bar(xs, hs, width=width, label=f"{size} img/process")
            ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
            for x in missing:  # no result (not run, diverged, nothing detected): say so, do not draw 0
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=6, rotation=90, color="0.4")
        ax.set_xticks(range(len(recipes)))
        ax.set_xticklabels(recipes, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", color="0.9")
        ax.set_axisbelow(True)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Mask R-CNN from scratch on shapes: AP per norm", y=1.02)
    return _save(fig, path)
