"""The issue-18 benchmark scripts' own logic (the timings they print are figures, not asserted): the
predictor benchmark's detection pairing, and the quick-start benchmark's dataset timing."""
import importlib.util
import os

import pytest
import torch

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_predict_pairs_detections_by_class_and_box_despite_tied_scores():
    pytest.importorskip("detectron2")
    from detectron2.structures import Boxes, Instances

    bench = _load("bench_predict")
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 50], [5, 5, 30, 30]])
    masks = torch.zeros(3, 1, 60, 60)
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[i, 0, y1:y2, x1:x2] = 0.9
    ours = {"boxes": boxes, "scores": torch.tensor([0.5, 0.5, 0.5]), "labels": torch.tensor([1, 2, 1]), "masks": masks}
    order = torch.tensor([2, 0, 1])  # detectron2 lists them in another order (tied scores)
    inst = Instances((60, 60))
    inst.pred_boxes = Boxes(boxes[order].clone())
    inst.scores = ours["scores"][order].clone()
    inst.pred_classes = ours["labels"][order] - 1
    inst.pred_masks = masks[order, 0] > 0.5
    res = bench.match(ours, {"instances": inst})
    assert res["matched"] == 1.0 and res["max_box_diff_px"] == 0.0 and res["mean_mask_iou"] == 1.0
    inst.pred_boxes.tensor[0] += torch.tensor([0.0, 0.0, 5.0, 5.0])  # ours[2] now overlaps 25^2/30^2 = 0.69
    inst.pred_classes[2] = 3  # ours[1]'s class differs: paired with nothing of its class
    res = bench.match(ours, {"instances": inst})
    assert res["matched"] == pytest.approx(1 / 3)


def test_quickstart_dataset_span_is_first_to_last_file(tmp_path):
    bench = _load("bench_quickstart")
    for name, t in (("a", 1000.0), ("sub/b", 1012.5), ("sub/c", 1003.0)):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
        os.utime(path, (t, t))
    assert bench._dataset_span(str(tmp_path)) == pytest.approx(12.5)
    assert bench._dataset_span(str(tmp_path / "missing")) is None
