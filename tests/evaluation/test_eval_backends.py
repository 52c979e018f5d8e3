"""TEST.EVAL_BACKEND: pycocotools and faster-coco-eval give the same AP (to 1e-4) on a hand-written ground
truth, with known answers; "auto" picks faster-coco-eval where installed; a missing or unknown backend is
one line naming the extra or the choices, before a run starts."""
import copy
import importlib.util

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gn_det.config import get_cfg
from gn_det.engine import validate_run
from gn_det.evaluation import backends
from gn_det.evaluation.backends import AUTO, FASTER_COCO_EVAL, PYCOCOTOOLS, coco_from_dict, resolve_backend
from gn_det.evaluation.scoring import score
from gn_det.utils.cli import UserError

HAS_FASTER = importlib.util.find_spec("faster_coco_eval") is not None
needs_faster = pytest.mark.skipif(not HAS_FASTER, reason="faster-coco-eval is not installed: "
                                                         "pip install -e '.[faster-coco-eval]' (.ci/run does)")


def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def hand_written():
    """Two images, two categories; five objects of 10x10 or 20x20 px, polygons."""
    objects = [(1, 1, 0, 0, 20), (1, 1, 40, 40, 10), (1, 2, 60, 0, 20), (2, 2, 0, 0, 20), (2, 1, 50, 50, 20)]
    anns = [{"id": i + 1, "image_id": img, "category_id": cat, "bbox": [x, y, s, s], "area": float(s * s),
             "iscrowd": 0, "segmentation": _square(x, y, s)} for i, (img, cat, x, y, s) in enumerate(objects)]
    gt = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": anns}
    return gt


def _det(img, cat, x, y, s, score):
    rle = mask_util.merge(mask_util.frPyObjects(_square(x, y, s), 100, 100))
    return {"image_id": img, "category_id": cat, "bbox": [x, y, s, s], "score": score,
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}


def detections():
    """Category a: 3 objects; found exactly (0.9), once shifted by 2 px (IoU 2/3: 0.8), one miss, one false
    positive scoring 0.95. Category b: 2 objects, both found exactly, the second below a false positive."""
    return [_det(1, 1, 0, 0, 20, 0.9), _det(1, 1, 42, 40, 10, 0.8), _det(1, 1, 70, 70, 20, 0.95),
            _det(1, 2, 60, 0, 20, 0.9), _det(2, 2, 70, 10, 10, 0.95), _det(2, 2, 0, 0, 20, 0.6)]


def _pycocotools(gt, dets, iou_type):
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    preds = copy.deepcopy(dets) if iou_type == "segm" else [{k: v for k, v in d.items() if k != "segmentation"}
                                                            for d in dets]
    ev = COCOeval(coco, coco.loadRes(preds), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("backend", [PYCOCOTOOLS, pytest.param(FASTER_COCO_EVAL, marks=needs_faster)])
def test_backends_agree_with_independent_pycocotools_and_known_answer(backend, iou_type):
    gt, dets = hand_written(), detections()
    before = copy.deepcopy(dets)
    scored = score(coco_from_dict(gt, backend), dets, iou_type, backend)
    ref = _pycocotools(gt, dets, iou_type)
    for i, name in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        if ref.stats[i] >= 0:
            assert scored.summary[name] == pytest.approx(ref.stats[i] * 100, abs=1e-4), name
    np.testing.assert_allclose(scored.precision, ref.eval["precision"], atol=1e-6)
    # Known answer, category b at IoU 0.5: the false positive ranks first, then both objects:
    # precision 1/2 at recall 1/2 and 2/3 at recall 1 -> interpolated 2/3 at every recall threshold.
    assert scored.pr_curve(1, 0.5) == pytest.approx(np.full(101, 2 / 3))
    # category a at IoU 0.5: FP (0.95), TP (0.9), TP (0.8; IoU 2/3) -> 2/3 up to recall 2/3, then 0
    a50 = scored.pr_curve(0, 0.5)
    assert a50[:67] == pytest.approx(np.full(67, 2 / 3)) and (a50[67:] == 0).all()
    assert dets == before  # scoring never changes the caller's results


@needs_faster
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_faster_equals_pycocotools_to_1e4_on_many_results(iou_type):
    rng = np.random.default_rng(0)
    gt, dets = hand_written(), []
    for _ in range(60):
        x, y, s = rng.integers(0, 70, size=3)
        dets.append(_det(int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(x), int(y), int(s % 30 + 5),
                         float(rng.uniform())))
    a = score(coco_from_dict(gt, PYCOCOTOOLS), dets, iou_type, PYCOCOTOOLS).metrics()
    b = score(coco_from_dict(gt, FASTER_COCO_EVAL), dets, iou_type, FASTER_COCO_EVAL).metrics()
    assert a.keys() == b.keys()
    for k in a:
        assert np.isnan(a[k]) == np.isnan(b[k]) and (np.isnan(a[k]) or abs(a[k] - b[k]) <= 1e-4), k


def test_auto_picks_faster_where_installed(monkeypatch):
    assert resolve_backend(AUTO) == (FASTER_COCO_EVAL if HAS_FASTER else PYCOCOTOOLS)
    monkeypatch.setattr(backends, "faster_coco_eval_installed", lambda: False)
    assert resolve_backend(AUTO) == PYCOCOTOOLS
    assert get_cfg().TEST.EVAL_BACKEND == AUTO


def test_missing_or_unknown_backend_is_one_line_naming_the_fix(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"^TEST.EVAL_BACKEND='coco' is not an evaluation backend; choose one of "
                                         r"'auto', 'pycocotools', 'faster-coco-eval'$"):
        resolve_backend("coco")
    monkeypatch.setattr(backends, "faster_coco_eval_installed", lambda: False)
    message = (r"TEST.EVAL_BACKEND='faster-coco-eval' needs the faster-coco-eval package, which is not installed: "
               r"pip install -e '.\[faster-coco-eval\]' \(or TEST.EVAL_BACKEND pycocotools\)")
    with pytest.raises(ValueError, match=message):
        resolve_backend(FASTER_COCO_EVAL)
    cfg = get_cfg()
    cfg.merge_from_list(["TEST.EVAL_BACKEND", "faster-coco-eval", "DATASETS.TEST", ("shapes_val",),
                         "OUTPUT_DIR", str(tmp_path / "run"), "MODEL.DEVICE", "cpu"])
    with pytest.raises(UserError, match=message):  # refused before anything is built or written
        validate_run(cfg, check_inputs=False)
    assert not (tmp_path / "run").exists()
