"""Scoring COCO results with a backend's COCOeval, and reading its accumulated precision array.

``score(coco_gt, predictions, iou_type, backend)`` runs evaluate/accumulate/summarize once and returns
a ``Scored``: the summary in percent (AP, AP50, AP75, APs, APm, APl, as detectron2 reports), and the
precision array ``[IoU threshold, recall threshold, category, area range, max detections]`` from which
per-category metrics and precision/recall curves are read without evaluating again.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .backends import FASTER_COCO_EVAL, PYCOCOTOOLS, coco_from_dict, load_results, make_cocoeval, quiet

logger = logging.getLogger(__name__)

SUMMARY_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]  # order of COCOeval.stats[:6]
AREA_NAMES = ["all", "small", "medium", "large"]  # COCOeval.params.areaRngLbl

__all__ = ["SUMMARY_NAMES", "AREA_NAMES", "Scored", "gt_for_backend", "score", "mean_precision"]


def gt_for_backend(coco_gt, backend: str):
    """``coco_gt`` as a COCO object of ``backend`` (the same object when it already is one)."""
    is_faster = type(coco_gt).__module__.startswith("faster_coco_eval")
    if (backend == FASTER_COCO_EVAL) == is_faster:
        return coco_gt
    return coco_from_dict(coco_gt.dataset, FASTER_COCO_EVAL if backend == FASTER_COCO_EVAL else PYCOCOTOOLS)


def mean_precision(p: np.ndarray) -> float:
    """Mean of the precision values present (COCOeval's -1 marks "no ground truth"), in percent; NaN if none."""
    p = np.asarray(p)
    p = p[p > -1]
    return float(np.mean(p) * 100) if p.size else float("nan")


@dataclass
class Scored:
    """One COCOeval run: ``summary`` in percent and the accumulated arrays needed to read more from it."""

    iou_type: str
    backend: str
    summary: Dict[str, float]
    precision: np.ndarray  # [T, R, K, A, M]; -1 where a category has no ground truth
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    cat_ids: List[int]
    cat_names: List[str]
    summary_text: str = ""

    def metrics(self) -> Dict[str, float]:
        """The summary plus ``AP-<category name>`` (what train_net's evaluation reports and saves)."""
        out = dict(self.summary)
        for row in self.per_category():
            out[f"AP-{row['category']}"] = row["AP"]
        return out

    def iou_index(self, iou: float) -> int:
        """Index of an IoU threshold in the precision array (ValueError if it was not evaluated)."""
        hits = np.flatnonzero(np.isclose(self.iou_thrs, iou))
        if not hits.size:
            raise ValueError(f"IoU {iou} was not evaluated (thresholds: {list(np.round(self.iou_thrs, 2))})")
        return int(hits[0])

    def per_category(self) -> List[Dict[str, float]]:
        """One row per category: AP, AP50, AP75, APs, APm, APl in percent (maxDets 100; NaN where the
        category has no ground truth in that area range)."""
        i50, i75 = self.iou_index(0.5), self.iou_index(0.75)
        rows = []
        for k, name in enumerate(self.cat_names):
            p = self.precision[:, :, k, :, -1]  # T, R, A
            rows.append({"category": name, "AP": mean_precision(p[:, :, 0]), "AP50": mean_precision(p[i50, :, 0]),
                         "AP75": mean_precision(p[i75, :, 0]), "APs": mean_precision(p[:, :, 1]),
                         "APm": mean_precision(p[:, :, 2]), "APl": mean_precision(p[:, :, 3])})
        return rows

    def pr_curve(self, category: int, iou: float) -> np.ndarray:
        """Interpolated precision at each recall threshold (``rec_thrs``) of one category (index into
        ``cat_names``) at one IoU, area all, maxDets 100; -1 where the category has no ground truth."""
        return self.precision[self.iou_index(iou), :, category, 0, -1]


def score(coco_gt, predictions: List[dict], iou_type: str, backend: str = PYCOCOTOOLS,
          img_ids: Optional[Iterable[int]] = None) -> Scored:
    """Evaluate ``predictions`` (COCO results entries) against ``coco_gt`` for "bbox" or "segm" with
    ``backend`` (a resolved name, see backends.resolve_backend); ``img_ids``: only those images."""
    gt = gt_for_backend(coco_gt, backend)
    dt = load_results(gt, predictions, iou_type)
    ev = make_cocoeval(gt, dt, iou_type, backend, None if img_ids is None else list(img_ids))
    quiet(ev.evaluate)
    quiet(ev.accumulate)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        ev.summarize()
    # COCOeval's -1 means "no ground truth in this area range": NaN, as detectron2 reports it.
    summary = {name: float(ev.stats[i] * 100) if ev.stats[i] >= 0 else float("nan")
               for i, name in enumerate(SUMMARY_NAMES)}
    cat_ids = [int(c) for c in ev.params.catIds]
    names = [gt.cats[c]["name"] for c in cat_ids]
    return Scored(iou_type=iou_type, backend=backend, summary=summary, precision=np.asarray(ev.eval["precision"]),
                  iou_thrs=np.asarray(ev.params.iouThrs), rec_thrs=np.asarray(ev.params.recThrs), cat_ids=cat_ids,
                  cat_names=names, summary_text=text.getvalue().rstrip())


def nan_metrics(cat_names: Sequence[str]) -> Dict[str, float]:
    """Every summary and per-category metric as NaN (no predictions at all)."""
    return {k: float("nan") for k in SUMMARY_NAMES + [f"AP-{n}" for n in cat_names]}
