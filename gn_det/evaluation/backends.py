"""The COCO evaluation backends: pycocotools' COCOeval and faster-coco-eval's C++ COCOeval_faster.

Both score the same results the same way (faster-coco-eval re-implements pycocotools' matching and
accumulation in C++; tests/evaluation/test_eval_backends.py checks AP to 1e-4 on a hand-written ground
truth); faster-coco-eval is an optional dependency, the ``faster-coco-eval`` extra of setup.py. The
config key TEST.EVAL_BACKEND (and ``tools/eval_json.py --backend``) takes one of ``EVAL_BACKENDS`` or
``"auto"``: faster-coco-eval where it is installed, else pycocotools.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
from typing import Any, Dict, List, Optional

logger = logging.getLogger(__name__)

PYCOCOTOOLS = "pycocotools"
FASTER_COCO_EVAL = "faster-coco-eval"
EVAL_BACKENDS = (PYCOCOTOOLS, FASTER_COCO_EVAL)
AUTO = "auto"  # faster-coco-eval where installed, else pycocotools
EXTRA = "faster-coco-eval"  # setup.py's extras_require key that installs faster-coco-eval

__all__ = ["PYCOCOTOOLS", "FASTER_COCO_EVAL", "EVAL_BACKENDS", "AUTO", "EXTRA", "faster_coco_eval_installed",
           "resolve_backend", "coco_from_dict", "load_results", "make_cocoeval", "quiet"]


def faster_coco_eval_installed() -> bool:
    """True when the faster_coco_eval package can be imported."""
    return importlib.util.find_spec("faster_coco_eval") is not None


def resolve_backend(name: str, key: str = "TEST.EVAL_BACKEND") -> str:
    """The backend ``name`` stands for ("auto" resolved); ValueError naming ``key`` and the fix for an
    unknown name or for faster-coco-eval when it is not installed."""
    if name == AUTO:
        return FASTER_COCO_EVAL if faster_coco_eval_installed() else PYCOCOTOOLS
    if name not in EVAL_BACKENDS:
        raise ValueError(f"{key}={name!r} is not an evaluation backend; choose one of "
                         f"{', '.join(repr(b) for b in (AUTO,) + EVAL_BACKENDS)}")
    if name == FASTER_COCO_EVAL and not faster_coco_eval_installed():
        raise ValueError(f"{key}={name!r} needs the faster-coco-eval package, which is not installed: "
                         f"pip install -e '.[{EXTRA}]' (or {key} {PYCOCOTOOLS})")
    return name


def quiet(fn, *args, **kwargs):
    """Call a chatty COCO API function, sending what it prints to the debug log."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out = fn(*args, **kwargs)
    if buf.getvalue().strip():
        logger.debug(buf.getvalue())
    return out


def coco_from_dict(dataset: Dict[str, Any], backend: str):
    """A ground-truth COCO object of ``backend`` over a COCO-format dict (deep-copied: the APIs annotate it)."""
    dataset = copy.deepcopy(dataset)
    if backend == FASTER_COCO_EVAL:
        from faster_coco_eval import COCO as FasterCOCO

        return FasterCOCO(dataset, print_function=logger.debug)
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    quiet(coco.createIndex)
    return coco


def _entry_copy(entry: dict) -> dict:
    """A copy of one results entry that loadRes may annotate (it adds id, area, bbox, rewrites segmentation)
    without touching the caller's: the dict and an RLE dict copied, the rest shared (a deep copy of a
    mask-heavy results list cost most of faster-coco-eval's evaluation time)."""
    out = dict(entry)
    if isinstance(out.get("segmentation"), dict):
        out["segmentation"] = dict(out["segmentation"])
    return out


def load_results(coco_gt, predictions: List[dict], iou_type: str):
    """``coco_gt.loadRes`` of copies of ``predictions`` for one IoU type (the segmentation is dropped for
    "bbox", or loadRes would score the box of the mask)."""
    if iou_type == "bbox":
        preds = [{k: v for k, v in p.items() if k != "segmentation"} for p in predictions]
    else:
        preds = [_entry_copy(p) for p in predictions]
    return quiet(coco_gt.loadRes, preds)


def make_cocoeval(coco_gt, coco_dt, iou_type: str, backend: str, img_ids: Optional[List[int]] = None):
    """``backend``'s COCOeval over the two COCO objects (made by the same backend), ``img_ids`` only
    when given."""
    if backend == FASTER_COCO_EVAL:
        from faster_coco_eval import COCOeval_faster

        ev = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=logger.debug)
    else:
        from pycocotools.cocoeval import COCOeval

        ev = COCOeval(coco_gt, coco_dt, iou_type)
    if img_ids is not None:
        ev.params.imgIds = sorted(set(int(i) for i in img_ids))
    return ev
