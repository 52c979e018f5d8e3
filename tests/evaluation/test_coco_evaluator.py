"""COCOEvaluator on a registered COCO-format dataset: files written, AP equal to an independent COCOeval."""
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gn_det.data import DatasetCatalog, generate_shapes_dataset, register_coco_instances
from gn_det.evaluation import COCOEvaluator


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "ds"
    generate_shapes_dataset(str(root), num_train=2, num_val=6, size=64, seed=3)
    json_file = root / "annotations" / "instances_val.json"
    # Shift category ids to be non-contiguous (10, 20, ...): results must carry the dataset's own ids.
    data = json.loads(json_file.read_text())
    for c in data["categories"]:
        c["id"] *= 10
    for a in data["annotations"]:
        a["category_id"] *= 10
    json_file.write_text(json.dumps(data))
    register_coco_instances("evaltest_val", {}, str(json_file), str(root / "val"))
    return json_file


def _fake_outputs(d, rng):
    """Detections from the ground truth: boxes jittered, one spurious box, masks decoded from polygons."""
    boxes, labels, masks = [], [], []
    for a in d["annotations"]:
        x, y, w, h = a["bbox"]
        j = rng.uniform(-3, 3, size=4)
        boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
        labels.append(a["category_id"] + 1)
        rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], d["height"], d["width"]))
        masks.append(np.roll(mask_util.decode(rle), int(rng.integers(-2, 3)), axis=1).astype(np.float32))
    boxes.append([1.0, 1.0, 20.0, 20.0])
    labels.append(1)
    masks.append(np.zeros((d["height"], d["width"]), np.float32))
    n = len(boxes)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "scores": torch.tensor(rng.uniform(0.3, 1.0, size=n), dtype=torch.float32),
            "masks": torch.from_numpy(np.stack(masks))[:, None]}


def test_evaluator_files_and_independent_cocoeval(shapes, tmp_path):
    rng = np.random.default_rng(0)
    dicts = DatasetCatalog.get("evaltest_val")
    evaluator = COCOEvaluator("evaltest_val", str(tmp_path / "inference" / "evaltest_val"))
    evaluator.reset()
    for d in dicts:
        evaluator.process([d], [_fake_outputs(d, rng)])
    results = evaluator.evaluate()
    out = tmp_path / "inference" / "evaltest_val"
    saved = json.loads((out / "coco_instances_results.json").read_text())
    assert {p["category_id"] for p in saved} <= {10, 20, 30, 40}
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(
        {t: {k: (None if math.isnan(v) else v) for k, v in m.items()} for t, m in results.items()}))
    gt = COCO(str(shapes))
    for task in ("bbox", "segm"):
        preds = saved if task == "segm" else [{k: v for k, v in p.items() if k != "segmentation"} for p in saved]
        ev = COCOeval(gt, gt.loadRes(preds), task)
        ev.evaluate(), ev.accumulate(), ev.summarize()
        for i, name in enumerate(["AP", "AP50", "AP75"]):
            assert results[task][name] == pytest.approx(ev.stats[i] * 100, abs=1e-9), (task, name)
        assert 5 < results[task]["AP"] < 100
        names = [c["name"] for c in gt.loadCats(gt.getCatIds())]
        assert {f"AP-{n}" for n in names} <= set(results[task])
