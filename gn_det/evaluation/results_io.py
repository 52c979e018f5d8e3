"""Reading a saved COCO results JSON (``coco_instances_results.json``, a demo's ``predictions.json``,
another tool's output) and checking it against the dataset it claims to score, with one-line errors."""
from __future__ import annotations

import json
from typing import Any, Dict, List

__all__ = ["REQUIRED_KEYS", "read_results_json", "check_results_against"]

REQUIRED_KEYS = ("image_id", "category_id", "bbox", "score")


def read_results_json(path: str) -> List[Dict[str, Any]]:
    """The list of result entries in ``path``; ValueError naming the file for what is not COCO results."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"results file {path!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"results file {path!r} is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list):
        raise ValueError(f"results file {path!r} must hold a list of COCO result entries "
                         f"({', '.join(REQUIRED_KEYS)}), got a {type(data).__name__}")
    for i, entry in enumerate(data):
        missing = [k for k in REQUIRED_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"results file {path!r}: entry {i} lacks {', '.join(missing)} (COCO results need "
                             f"{', '.join(REQUIRED_KEYS)}, and 'segmentation' for mask AP)")
    return data


def check_results_against(results: List[Dict[str, Any]], gt: Dict[str, Any], dataset_name: str, path: str) -> None:
    """ValueError when an entry's image or category is not in the ground truth ``gt`` (a COCO dict)."""
    image_ids = {int(img["id"]) for img in gt["images"]}
    cat_ids = {int(c["id"]) for c in gt["categories"]}
    bad_images = sorted({int(r["image_id"]) for r in results} - image_ids)
    if bad_images:
        raise ValueError(f"{path!r} scores image id(s) {bad_images[:5]} that dataset '{dataset_name}' does not have "
                         f"(its ids: {min(image_ids, default=None)}..{max(image_ids, default=None)}): "
                         "is --dataset the one these results were made on?")
    bad_cats = sorted({int(r["category_id"]) for r in results} - cat_ids)
    if bad_cats:
        raise ValueError(f"{path!r} has category id(s) {bad_cats[:5]} that dataset '{dataset_name}' does not have "
                         f"(its ids: {sorted(cat_ids)})")
