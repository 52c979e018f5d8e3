"""COCO error analysis (cocoapi MATLAB analyze()) on a hand-built case whose seven areas are worked out by
hand; per-category metrics and PR curves against pycocotools run independently."""
import copy

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gn_det.evaluation.backends import PYCOCOTOOLS, coco_from_dict
from gn_det.evaluation.error_analysis import ERROR_TYPES, analyze_errors
from gn_det.evaluation.scoring import score


def _ann(i, cat, box):
    return {"id": i, "image_id": 1, "category_id": cat, "bbox": box, "area": float(box[2] * box[3]), "iscrowd": 0}


def _gt(supercategories=("animal", "animal", "vehicle")):
    cats = [{"id": i + 1, "name": n} for i, n in enumerate("ABC")]
    for c, s in zip(cats, supercategories):
        if s:
            c["supercategory"] = s
    anns = [_ann(1, 1, [0, 0, 20, 20]), _ann(2, 1, [100, 0, 20, 20]), _ann(3, 1, [0, 100, 20, 20]),
            _ann(4, 1, [100, 100, 20, 20]), _ann(5, 2, [50, 50, 20, 20]), _ann(6, 3, [150, 150, 20, 20])]
    return {"images": [{"id": 1, "width": 200, "height": 200}], "categories": cats, "annotations": anns}


def _dets():
    """Category A's detections, best score first: background, on C's object (other supercategory), on B's
    (same supercategory), exact on A1, on A2 at IoU 0.6, on A3 at IoU 1/3; A4 is never found."""
    boxes = [([170, 20, 20, 20], .95), ([150, 150, 20, 20], .9), ([50, 50, 20, 20], .85), ([0, 0, 20, 20], .8),
             ([100, 0, 20, 12], .7), ([10, 100, 20, 20], .6)]
    return [{"image_id": 1, "category_id": 1, "bbox": b, "score": s} for b, s in boxes]


def test_stages_of_a_hand_built_case():
    ea = analyze_errors(_gt(), _dets(), "bbox")
    # 4 objects of A; 101 recall thresholds 0, .01, ..., 1. Each stage forgives one more error type:
    # C75: F F F T F F -> precision 1/4 up to recall 1/4 (26 thresholds); C50: ... T T -> 2/5 up to 1/2 (51);
    # Loc: ... T T T -> 3/6 up to 3/4 (76); Sim: B's object ignored -> 3/5; Oth: C's too -> 3/4;
    # BG: 1 wherever Oth > 0 (76 thresholds); FN: 1 everywhere.
    expected = np.array([.25 * 26, .4 * 51, .5 * 76, .6 * 76, .75 * 76, 76, 101]) / 101
    np.testing.assert_allclose(ea.areas(0)[:, 0], expected, atol=1e-12)
    np.testing.assert_allclose(ea.areas(0)[:, 1], expected, atol=1e-12)  # all objects are small
    np.testing.assert_allclose(ea.areas(0)[:, 2], [0, 0, 0, 0, 0, 0, 1])  # no medium object: 0 as analyze(), FN 1
    # B and C have no detection: precision 0 until FN; overall = mean over categories
    np.testing.assert_allclose(ea.areas(1)[:, 0], [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(ea.areas(None)[:, 0], (expected + 2 * np.array([0, 0, 0, 0, 0, 0, 1])) / 3)
    rows = ea.table(0)
    assert [r["category"] for r in rows] == ["A", "B", "C", "overall"] and list(rows[0])[1:] == list(ERROR_TYPES)
    assert ea.has_supercategories and not ea.single_family


@pytest.mark.parametrize("supers", [("", "", ""), ("shape", "shape", "shape")])
def test_one_family_makes_sim_equal_oth(supers):
    ea = analyze_errors(_gt(supers), _dets(), "bbox")
    np.testing.assert_allclose(ea.precision[3], ea.precision[4])
    assert ea.areas(0)[3, 0] == pytest.approx(.75 * 76 / 101) and ea.single_family
    assert ea.has_supercategories == bool(supers[0])


def test_ignored_objects_keep_their_iou_and_match_once():
    # Two detections of A on B's object: in Sim, the first is ignored (it matches the ignored object);
    # the second cannot match it again (as in MATLAB; a crowd object would absorb both) -> a false positive.
    dets = [{"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "score": .95},
            {"image_id": 1, "category_id": 1, "bbox": [52, 50, 20, 20], "score": .93},
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": .9}]
    ea = analyze_errors(_gt(), dets, "bbox")
    assert ea.areas(0)[3, 0] == pytest.approx(0.5 * 26 / 101)  # F (ignored), F, T -> precision 1/2 at recall 1/4


def test_per_category_metrics_and_curves_match_pycocotools():
    gt = _gt()
    rng = np.random.default_rng(1)
    dets = [{"image_id": 1, "category_id": int(rng.integers(1, 4)), "score": float(rng.uniform()),
             "bbox": [float(v) for v in rng.uniform(0, 150, 2)] + [float(v) for v in rng.uniform(10, 40, 2)]}
            for _ in range(30)] + [{**d, "category_id": d["category_id"]} for d in _dets()]
    scored = score(coco_from_dict(gt, PYCOCOTOOLS), dets, "bbox", PYCOCOTOOLS)
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
    ev.evaluate()
    ev.accumulate()
    for k, row in enumerate(scored.per_category()):
        ev_k = copy.deepcopy(ev)  # pycocotools' own summary restricted to one category
        ev_k.params.catIds = [ev.params.catIds[k]]
        ev_k.evaluate()
        ev_k.accumulate()
        ev_k.summarize()
        for i, name in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
            if ev_k.stats[i] < 0:
                assert np.isnan(row[name])
            else:
                assert row[name] == pytest.approx(ev_k.stats[i] * 100, abs=1e-9), (row["category"], name)
        np.testing.assert_array_equal(scored.pr_curve(k, 0.75), ev.eval["precision"][5, :, k, 0, 2])
