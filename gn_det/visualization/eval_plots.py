"""Figures of a scored result set: precision/recall curves per category (IoU 0.5 and 0.75) and COCO's
error-analysis area plots (C75, C50, Loc, Sim, Oth, BG, FN; colours of cocoapi's analyze())."""
from __future__ import annotations

import math
import os
import re
from typing import List, Optional

import numpy as np

from gn_det.benchmark.plots import plt, save_png
from gn_det.evaluation.error_analysis import ERROR_TYPES, ErrorAnalysis
from gn_det.evaluation.scoring import Scored

# cocoapi analyze()'s stage colours: C75 and C50 white, Loc blue, Sim red, Oth green, BG purple, FN orange.
STAGE_COLORS = [(1, 1, 1), (1, 1, 1), (.31, .51, .74), (.75, .31, .30), (.36, .90, .38), (.50, .39, .64), (1, .6, 0)]
TASK_LABELS = {"bbox": "box", "segm": "mask"}

__all__ = ["STAGE_COLORS", "plot_pr_curves", "plot_error_analysis", "safe_name"]


def safe_name(text: str) -> str:
    """``text`` usable in a file name (runs of other characters become one "_")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "category"


def _grid(n: int):
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def plot_pr_curves(scored: Scored, path: str, ious=(0.5, 0.75)) -> str:
    """One panel per category: interpolated precision against recall at each IoU of ``ious`` (area all,
    100 detections), its AP in the legend; categories without ground truth say so."""
    fig, axes = _grid(len(scored.cat_names))
    for k, (ax, name) in enumerate(zip(axes, scored.cat_names)):
        for iou, style in zip(ious, ("-", "--")):
            p = scored.pr_curve(k, iou)
            if (p > -1).any():
                ax.plot(scored.rec_thrs, p, style, label=f"IoU {iou:g}: AP {np.mean(p) * 100:.1f}")
        ax.set(title=name, xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="lower left", fontsize=7)
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"{TASK_LABELS.get(scored.iou_type, scored.iou_type)} precision/recall ({scored.backend})")
    fig.tight_layout()
    return save_png(fig, path)


def _stage_panel(ax, rec_thrs: np.ndarray, curves: np.ndarray, title: str) -> None:
    """Filled areas between consecutive stages; the legend gives each stage's area ([.xxx] as analyze())."""
    areas = curves.mean(axis=1)
    lower = np.zeros_like(rec_thrs, dtype=np.float64)
    for i, stage in enumerate(ERROR_TYPES):
        upper = np.maximum(curves[i], lower)
        ax.fill_between(rec_thrs, lower, upper, color=STAGE_COLORS[i], label=f"[{areas[i]:.3f}] {stage}")
        ax.plot(rec_thrs, upper, color="black", linewidth=0.5)
        lower = upper
    ax.set(title=title, xlim=(0, 1), ylim=(0, 1), xlabel="recall", ylabel="precision")
    ax.legend(loc="lower left", fontsize=7)


def plot_error_analysis(analysis: ErrorAnalysis, output_dir: str, categories: bool = True) -> List[str]:
    """``<task>_overall.png`` (mean over categories; a panel per area range) and, with ``categories``, one
    ``<task>_<category>.png`` per category. Returns the files written."""
    task = TASK_LABELS.get(analysis.iou_type, analysis.iou_type)
    targets: List[Optional[int]] = [None] + (list(range(len(analysis.cat_names))) if categories else [])
    written = []
    for target in targets:
        name = "overall" if target is None else analysis.cat_names[target]
        curves = analysis.curves(target)
        fig, axes = plt.subplots(1, len(analysis.area_names), figsize=(3.2 * len(analysis.area_names), 3.2), squeeze=False)
        for a, (ax, area) in enumerate(zip(axes[0], analysis.area_names)):
            _stage_panel(ax, analysis.rec_thrs, curves[:, :, a], f"{task} {name}: {area}")
        fig.tight_layout()
        written.append(save_png(fig, os.path.join(output_dir, f"{analysis.iou_type}_{safe_name(name)}.png")))
    return written
