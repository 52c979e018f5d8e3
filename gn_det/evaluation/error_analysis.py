"""COCO's error analysis (Hoiem-style breakdown of false positives): C75, C50, Loc, Sim, Oth, BG, FN.

As cocoapi's MATLAB ``CocoEval.analyze()`` defines it (mmdetection's coco_error_analysis.py follows it),
each stage is a precision/recall curve (maxDets 100, COCO's four area ranges) that forgives one more
kind of error than the stage before:

- C75, C50: precision at IoU 0.75 and 0.5 (the ordinary COCO curves);
- Loc: at IoU 0.1 (localization errors forgiven);
- Sim: at IoU 0.1 with the category's detections scored against the ground truth of its supercategory,
  the other categories' objects set to *ignore* (matching one is neither right nor wrong) and category
  labels not used: confusions with similar categories forgiven;
- Oth: the same against every category's objects: any class confusion forgiven;
- BG: precision 1 wherever Oth's is positive (false positives on background forgiven);
- FN: 1 everywhere (missed objects forgiven).

The area under each stage (mean precision over the recall thresholds) is reported per category and
overall (the mean over categories, with COCOeval's "no ground truth" -1 counted as 0, as analyze() does).
When the dataset declares no supercategory, every category is in one group and Sim equals Oth.

pycocotools' COCOeval overwrites an annotation's ``ignore`` flag with ``iscrowd`` in ``_prepare``; the
MATLAB code honours it. ``_FlaggedCOCOeval`` restores it, so an ignored object keeps its IoU (not the
crowd's intersection-over-detection) and matches one detection at most, exactly as in analyze().
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from .backends import PYCOCOTOOLS, coco_from_dict, load_results, quiet
from .scoring import AREA_NAMES

ERROR_TYPES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
_IGNORE_KEY = "analysis_ignore"  # our own flag: pycocotools rewrites "ignore"

__all__ = ["ERROR_TYPES", "ErrorAnalysis", "analyze_errors"]


class _FlaggedCOCOeval(COCOeval):
    """pycocotools' COCOeval that also ignores the ground truth flagged ``analysis_ignore`` (MATLAB's ``ignore``)."""

    def _prepare(self):
        super()._prepare()
        for gts in self._gts.values():
            for gt in gts:
                if gt.get(_IGNORE_KEY):
                    gt["ignore"] = 1


@dataclass
class ErrorAnalysis:
    """The seven stages' interpolated precision, ``precision[stage, recall threshold, category, area]``."""

    iou_type: str
    precision: np.ndarray
    rec_thrs: np.ndarray
    cat_names: List[str]
    has_supercategories: bool  # some category declares a supercategory
    single_family: bool  # every category in one supercategory (or none declared): Sim equals Oth
    area_names: Sequence[str] = tuple(AREA_NAMES)

    def curves(self, category: Optional[int] = None) -> np.ndarray:
        """``[stage, recall threshold, area]`` of one category (index into ``cat_names``), or the mean over
        categories (None)."""
        if category is None:
            return self.precision.mean(axis=2)
        return self.precision[:, :, category, :]

    def areas(self, category: Optional[int] = None) -> np.ndarray:
        """``[stage, area]``: the area under each stage's curve (mean precision over recall), 0..1."""
        return self.curves(category).mean(axis=1)

    def table(self, area: int = 0) -> List[Dict[str, object]]:
        """Rows of one area range (index into ``area_names``): each category, then "overall"; a column per stage."""
        rows = []
        for k, name in enumerate(list(self.cat_names) + ["overall"]):
            values = self.areas(None if k == len(self.cat_names) else k)[:, area]
            rows.append({"category": name, **{t: float(v) for t, v in zip(ERROR_TYPES, values)}})
        return rows


def _evaluate(gt_dict: dict, dt_anns: List[dict], iou_type: str, iou_thrs: Sequence[float],
              use_cats: bool) -> np.ndarray:
    """Precision ``[T, R, K, A]`` (maxDets 100) of the results ``dt_anns`` against ``gt_dict``."""
    gt = coco_from_dict(gt_dict, PYCOCOTOOLS)
    dt = load_results(gt, dt_anns, iou_type) if dt_anns else _empty_results(gt)
    ev = _FlaggedCOCOeval(gt, dt, iou_type)
    ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
    ev.params.maxDets = [100]
    ev.params.useCats = int(use_cats)
    quiet(ev.evaluate)
    quiet(ev.accumulate)
    return np.asarray(ev.eval["precision"])[..., 0]


def _empty_results(gt):
    """A results COCO object with no detections (loadRes refuses an empty list)."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": copy.deepcopy(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                  "annotations": []}
    quiet(dt.createIndex)
    return dt


def _flag_others(gt_dict: dict, cat_id: int, keep_cats: Optional[set]) -> dict:
    """``gt_dict`` with only the objects of ``keep_cats`` (all when None), those not of ``cat_id`` flagged ignore."""
    out = dict(gt_dict)
    anns = []
    for ann in gt_dict["annotations"]:
        if keep_cats is not None and ann["category_id"] not in keep_cats:
            continue
        ann = dict(ann)
        if ann["category_id"] != cat_id:
            ann[_IGNORE_KEY] = 1
        anns.append(ann)
    out["annotations"] = anns
    return out


def analyze_errors(gt_dict: dict, predictions: List[dict], iou_type: str = "bbox") -> ErrorAnalysis:
    """The error analysis of ``predictions`` (COCO results entries) against the COCO-format ground truth
    ``gt_dict``, for "bbox" or "segm"."""
    cats = sorted(gt_dict["categories"], key=lambda c: c["id"])
    cat_ids = [int(c["id"]) for c in cats]
    has_super = any(c.get("supercategory") for c in cats)
    supercategory = {int(c["id"]): (c.get("supercategory") or "") for c in cats}
    if iou_type == "bbox":
        predictions = [{k: v for k, v in p.items() if k != "segmentation"} for p in predictions]
    first = _evaluate(gt_dict, predictions, iou_type, [0.75, 0.5, 0.1], use_cats=True)  # [3, R, K, A]
    _, num_rec, _, num_areas = first.shape
    ps = np.zeros((len(ERROR_TYPES), num_rec, len(cat_ids), num_areas))
    ps[:3] = first
    for k, cat_id in enumerate(cat_ids):
        dets = [p for p in predictions if int(p["category_id"]) == cat_id]
        family = {c for c in cat_ids if supercategory[c] == supercategory[cat_id]}
        ps[3, :, k] = _evaluate(_flag_others(gt_dict, cat_id, family), dets, iou_type, [0.1], use_cats=False)[0, :, 0]
        ps[4, :, k] = _evaluate(_flag_others(gt_dict, cat_id, None), dets, iou_type, [0.1], use_cats=False)[0, :, 0]
    ps[ps == -1] = 0
    ps[5] = ps[4] > 0
    ps[6] = 1.0
    names = [c["name"] for c in cats]
    return ErrorAnalysis(iou_type=iou_type, precision=ps, rec_thrs=np.linspace(0, 1, num_rec), cat_names=names,
                         has_supercategories=has_super, single_family=len(set(supercategory.values())) == 1)
