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


def save_png(fig: "plt.Figure", path: str, dpi: int = 90) -> str:
    """Save as PNG atomically (gn_det.utils.file_io) and close the figure."""
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)


_save = save_png


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


SCRATCH_TITLE = "Mask R-CNN from scratch on shapes: AP per norm (mean +- std over seeds)"
FINETUNE_TITLE = "Mask R-CNN fine-tuned from pretrained backbones on shapes: AP per cell (mean +- std over seeds)"


def plot_sweep(rows: Sequence[Dict[str, object]], path: str, metrics: Sequence[str] = ("box_AP", "mask_AP"),
               title: str = SCRATCH_TITLE) -> str:
    """AP per norm recipe with +- one standard deviation over seeds; one row of panels per metric.

    Left: grouped bars, one bar per images-per-process value of 1 and 2 (every recipe has them). Right:
    AP against images per process (log2 axis) for the recipes run at more sizes (the GN paper's
    batch-size axis). ``rows`` hold "recipe", "ims_per_process", the metrics and ``<metric>_std``
    (None = missing: no bar, an "n/a" mark; no std = no error bar).
    """
    recipes: List[str] = []
    sizes_of: Dict[str, List[int]] = {}
    for row in rows:
        recipe = str(row["recipe"])
        if recipe not in recipes:
            recipes.append(recipe)
        sizes_of.setdefault(recipe, []).append(int(row["ims_per_process"]))  # type: ignore[arg-type]
    bar_sizes = [1, 2]
    axis_recipes = [r for r in recipes if len(set(sizes_of[r])) > 2]
    lookup = {(str(r["recipe"]), int(r["ims_per_process"])): r for r in rows}  # type: ignore[arg-type]

    def value(recipe: str, size: int, key: str):
        v = lookup.get((recipe, size), {}).get(key)
        return v if isinstance(v, (int, float)) else None

    panels = 2 if axis_recipes else 1
    fig, axes = plt.subplots(len(metrics), panels, figsize=(7.5 + 4.5 * (panels - 1), 3.6 * len(metrics)),
                             squeeze=False, gridspec_kw={"width_ratios": [5, 3][:panels]})
    width = 0.8 / len(bar_sizes)
    for m, metric in enumerate(metrics):
        ax = axes[m][0]
        for s, size in enumerate(bar_sizes):
            xs, hs, errs, missing = [], [], [], []
            for i, recipe in enumerate(recipes):
                x = i - 0.4 + width * (s + 0.5)
                v = value(recipe, size, metric)
                if v is None:
                    missing.append(x)
                    continue
                xs.append(x)
                hs.append(v)
                std = value(recipe, size, f"{metric}_std")
                errs.append(float("nan") if std is None else std)  # NaN: no error bar (one seed)
            bars = ax.bar(xs, hs, width=width, yerr=errs, capsize=2, error_kw={"linewidth": 0.8},
                          label=f"{size} img/process")
            ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
            for x in missing:  # no result (not run, diverged, nothing detected): say so, do not draw 0
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=6, rotation=90, color="0.4")
        ax.set_xticks(range(len(recipes)))
        ax.set_xticklabels(recipes, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", color="0.9")
        ax.set_axisbelow(True)
        ax.legend(fontsize=7)
        if axis_recipes:
            ax = axes[m][1]
            for recipe in axis_recipes:
                pts = [(k, value(recipe, k, metric), value(recipe, k, f"{metric}_std"))
                       for k in sorted(set(sizes_of[recipe]))]
                pts = [(k, v, float("nan") if std is None else std) for k, v, std in pts]
                pts = [p for p in pts if p[1] is not None]
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                                markersize=3, capsize=2, linewidth=1, label=recipe)
            ax.set_xscale("log", base=2)
            ax.set_xticks([1, 2, 4, 8])
            ax.set_xticklabels(["1", "2", "4", "8"])
            ax.set_xlabel("images per process")
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_ylim(bottom=0)
            ax.grid(color="0.9")
            ax.legend(fontsize=7)
    fig.suptitle(title, y=1.01)
    fig.tight_layout()
    return _save(fig, path)
