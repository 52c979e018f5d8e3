"""COCO evaluation: our conversion + AP against pycocotools run independently, and known-answer cases."""
import json
import math
import types

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gn_det.evaluation.coco_evaluation import (dataset_dicts_to_coco, evaluate_predictions,
                                               instances_to_coco_json)

# Non-contiguous dataset ids (as COCO's 1..90) to check the mapping back from contiguous labels.
METADATA = types.SimpleNamespace(thing_classes=["square", "disk"],
                                 thing_dataset_id_to_contiguous_id={3: 0, 7: 1})


def _dataset(rng, n_images=6, size=48):
    dicts = []
    for i in range(n_images):
        anns = []
        for _ in range(3):
            w, h = rng.integers(8, 20, size=2)
            x, y = rng.integers(0, size - 20, size=2)
            poly = [float(v) for v in (x, y, x + w, y, x + w, y + h, x, y + h)]
            anns.append({"bbox": [float(x), float(y), float(w), float(h)], "category_id": int(rng.integers(0, 2)),
                         "segmentation": [poly], "iscrowd": 0})
        dicts.append({"file_name": f"{i}.png", "height": size, "width": size, "image_id": 100 + i,
                      "annotations": anns})
    return dicts


def _outputs_for(d, rng, jitter):
    """Torchvision-style outputs: GT boxes jittered, label = contiguous + 1, masks as probabilities."""
    boxes, labels, masks = [], [], []
    for a in d["annotations"]:
        x, y, w, h = a["bbox"]
        dx, dy = rng.uniform(-jitter, jitter, size=2)
        boxes.append([x + dx, y + dy, x + w + dx, y + h + dy])
        labels.append(a["category_id"] + 1)
        rle = mask_util.frPyObjects(a["segmentation"], d["height"], d["width"])
        masks.append(mask_util.decode(mask_util.merge(rle)).astype(np.float32) * 0.9)
    n = len(boxes)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "scores": torch.tensor(rng.uniform(0.5, 1.0, size=n), dtype=torch.float32),
            "masks": torch.from_numpy(np.stack(masks))[:, None]}


def _gt(dicts):
    coco = COCO()
    coco.dataset = dataset_dicts_to_coco(dicts, METADATA)
    coco.createIndex()
    return coco


def test_perfect_predictions_score_100():
    rng = np.random.default_rng(0)
    dicts = _dataset(rng)
    to_ds = {0: 3, 1: 7}
    preds = [p for d in dicts for p in instances_to_coco_json(_outputs_for(d, rng, 0.0), d["image_id"], to_ds)]
    assert {p["category_id"] for p in preds} <= {3, 7}
    gt = _gt(dicts)
    for task in ("bbox", "segm"):
        res = evaluate_predictions(gt, preds, task)
        assert res["AP"] == pytest.approx(100.0) and res["AP-square"] == pytest.approx(100.0)


def _coco_json_by_hand(dicts):
    """The ground truth in COCO's format written out here, not by gn_det: the rectangles of ``_dataset`` as
    polygons, their area w * h, dataset ids 3 (square) and 7 (disk)."""
    images, annotations = [], []
    for d in dicts:
        images.append({"id": d["image_id"], "file_name": d["file_name"], "height": d["height"], "width": d["width"]})
        for a in d["annotations"]:
            x, y, w, h = a["bbox"]
            annotations.append({"id": len(annotations) + 1, "image_id": d["image_id"],
                                "category_id": (3, 7)[a["category_id"]], "bbox": [x, y, w, h], "area": w * h,
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "disk"}]}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ap_matches_independent_cocoeval_on_saved_json(tmp_path, seed):
    rng = np.random.default_rng(seed)
    dicts = _dataset(rng)
    preds = [p for d in dicts for p in instances_to_coco_json(_outputs_for(d, rng, 4.0), d["image_id"], {0: 3, 1: 7})]
    assert len(preds) == sum(len(d["annotations"]) for d in dicts)  # no NaN-vs-NaN "agreement" on nothing
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(_coco_json_by_hand(dicts)))
    res_path.write_text(json.dumps(preds))
    ours = {t: evaluate_predictions(_gt(dicts), preds, t) for t in ("bbox", "segm")}
    # Independent: pycocotools straight from the two files on disk.
    gt = COCO(str(gt_path))
    for task in ("bbox", "segm"):
        loaded = json.loads(res_path.read_text())
        if task == "bbox":
            loaded = [{k: v for k, v in p.items() if k != "segmentation"} for p in loaded]
        ev = COCOeval(gt, gt.loadRes(loaded), task)
        ev.evaluate(), ev.accumulate(), ev.summarize()
        for i, name in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
            want = ev.stats[i] * 100
            got = ours[task][name]
            if name in ("AP", "AP50", "AP75"):
                assert want >= 0 and not math.isnan(got), (task, name, got, want)
            assert (math.isnan(got) and want < 0) or got == pytest.approx(want, abs=1e-9), (task, name)
    assert 0 < ours["bbox"]["AP"] < 100  # jittered boxes: a non-trivial value


def test_per_category_ap_known_answer():
    """Only 'square' predicted (perfectly): square AP = 100, disk AP = 0, AP = their mean."""
    rng = np.random.default_rng(4)
    dicts = _dataset(rng)
    preds = []
    for d in dicts:
        out = _outputs_for(d, rng, 0.0)
        keep = out["labels"] == 1
        preds += instances_to_coco_json({k: v[keep] for k, v in out.items()}, d["image_id"], {0: 3, 1: 7})
    res = evaluate_predictions(_gt(dicts), preds, "bbox")
    assert res["AP-square"] == pytest.approx(100.0) and res["AP-disk"] == pytest.approx(0.0)
    assert res["AP"] == pytest.approx(50.0)


def test_rle_mask_and_xywh_box_conversion():
    mask = torch.zeros(1, 1, 10, 12)
    mask[0, 0, 2:5, 3:9] = 0.8
    out = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 5.0]]), "labels": torch.tensor([2]),
           "scores": torch.tensor([0.7]), "masks": mask}
    (entry,) = instances_to_coco_json(out, 5, {0: 3, 1: 7})
    assert entry["bbox"] == [3.0, 2.0, 6.0, 3.0] and entry["category_id"] == 7 and entry["image_id"] == 5
    assert isinstance(entry["segmentation"]["counts"], str)
    decoded = mask_util.decode({"size": entry["segmentation"]["size"],
                                "counts": entry["segmentation"]["counts"].encode()})
    assert decoded.shape == (10, 12) and decoded.sum() == 18 and decoded[2:5, 3:9].all()


def test_unknown_label_is_a_clear_error():
    out = {"boxes": torch.tensor([[0.0, 0, 4, 4]]), "labels": torch.tensor([5]), "scores": torch.tensor([0.9])}
    with pytest.raises(ValueError, match=r"label 5 \(contiguous id 4\) has no dataset category.*"
                                         r"MODEL.ROI_HEADS.NUM_CLASSES"):
        instances_to_coco_json(out, 0, {0: 3, 1: 7})


def test_no_predictions_gives_nan_not_crash():
    rng = np.random.default_rng(5)
    res = evaluate_predictions(_gt(_dataset(rng)), [], "bbox")
    assert math.isnan(res["AP"]) and set(res) >= {"AP-square", "AP-disk"}
