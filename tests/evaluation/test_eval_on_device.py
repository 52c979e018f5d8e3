"""Evaluation moves little to the host and to other processes (issue 21, defect 8): pasted masks are
thresholded on the model's device before the copy (bool, not float32), with the same COCO results as
thresholding on the host, and the predictions go to the main process only (gather, not all-gather)."""
import json

import pytest
import torch
from PIL import Image

from gn_det.data import register_coco_instances
from gn_det.evaluation import COCOEvaluator, DatasetEvaluator, inference_on_dataset, instances_to_coco_json
from gn_det.evaluation.evaluator import outputs_to_host
from gn_det.utils import comm


def _output(seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(3, 1, 20, 24, generator=g)
    masks[0, 0, :2, :2] = 0.5  # exactly at the threshold: in the mask
    return {"boxes": torch.tensor([[1.0, 2.0, 10.0, 12.0], [0.0, 0.0, 5.0, 5.0], [4.0, 3.0, 20.0, 18.0]]),
            "scores": torch.tensor([0.9, 0.8, 0.3]), "labels": torch.tensor([1, 2, 1]), "masks": masks}


def test_masks_are_thresholded_before_the_host_copy_with_the_same_coco_results():
    out = _output()
    host = outputs_to_host(out)
    assert host["masks"].dtype == torch.bool and host["masks"].device.type == "cpu"
    assert torch.equal(host["masks"], out["masks"] >= 0.5) and host["masks"][0, 0, 0, 0]
    assert host["scores"].dtype == torch.float32 and torch.equal(host["boxes"], out["boxes"])
    to_ds = {0: 1, 1: 2}
    assert instances_to_coco_json(host, 5, to_ds) == instances_to_coco_json(out, 5, to_ds)


class _Recorder(DatasetEvaluator):
    def reset(self):
        self.seen = []

    def process(self, inputs, outputs):
        self.seen.extend(outputs)

    def evaluate(self):
        return {}


class _FakeDetector(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images, original_sizes=None):
        return [_output(i) for i in range(len(images))]


def test_inference_on_dataset_hands_the_evaluator_bool_masks():
    rec = _Recorder()
    loader = [[(torch.zeros(3, 8, 8), {"image_id": 1, "height": 20, "width": 24})]]
    inference_on_dataset(_FakeDetector(), loader, rec)
    assert len(rec.seen) == 1 and rec.seen[0]["masks"].dtype == torch.bool


@pytest.fixture
def tiny_gt(tmp_path):
    gt = {"images": [{"id": 5, "file_name": "a.png", "height": 20, "width": 24}],
          "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [1.0, 2.0, 9.0, 10.0], "area": 90.0,
                           "segmentation": [[1, 2, 10, 2, 10, 12, 1, 12]], "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    Image.new("RGB", (24, 20)).save(tmp_path / "a.png")
    name = f"eval_on_device_{tmp_path.name}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    return name


@pytest.mark.parametrize("rank", [0, 1])
def test_predictions_are_gathered_to_the_main_process_only(tiny_gt, rank, monkeypatch):
    calls = []
    other = [{"image_id": 5, "category_id": 2, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.5}]
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "get_rank", lambda: rank)
    monkeypatch.setattr(comm, "is_main_process", lambda: rank == 0)
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "all_gather", lambda obj: pytest.fail("all_gather: every process got every prediction"))

    def gather(obj, dst=0):
        calls.append(dst)
        return [obj, (other, [6], False)] if rank == dst else []

    monkeypatch.setattr(comm, "gather", gather)
    monkeypatch.setattr(comm, "broadcast", lambda obj, src=0: obj if rank == src else {"from": "rank 0"})
    ev = COCOEvaluator(tiny_gt, None, backend="pycocotools")
    ev.reset()
    out = {k: v for k, v in _output().items() if k != "masks"}
    ev.process([{"image_id": 5}], [out])
    results = ev.evaluate()
    assert calls == [0]
    if rank == 0:
        assert results["bbox"]["AP"] >= 0
    else:
        assert results == {"from": "rank 0"}
