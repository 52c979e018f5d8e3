"""Re-scoring a saved COCO results JSON against a registered dataset (the library side of
tools/eval_json.py): box AP, and mask AP when every entry has a segmentation, by the same COCOeval and
ground truth as train_net's evaluation, so the numbers are the ones it reported."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from .backends import AUTO, coco_from_dict, resolve_backend
from .coco_evaluation import dataset_ground_truth
from .results_io import check_results_against, read_results_json
from .scoring import Scored, score

__all__ = ["Rescored", "rescore"]


@dataclass
class Rescored:
    """The ground truth and results read, and one ``Scored`` per task ("bbox", then "segm" when present)."""

    dataset: str
    backend: str
    gt: dict
    results: List[dict]
    scored: Dict[str, Scored] = field(default_factory=dict)

    def metrics(self) -> Dict[str, Dict[str, float]]:
        """``{task: {AP, AP50, ..., AP-<category>}}`` in percent, as inference/<DATASET>/metrics.json holds it."""
        return {task: s.metrics() for task, s in self.scored.items()}


def rescore(results_json: str, dataset_name: str, backend: str = AUTO, backend_flag: str = "--backend") -> Rescored:
    """Score the results in ``results_json`` on ``dataset_name`` (all its images) with ``backend``."""
    backend = resolve_backend(backend, key=backend_flag)
    results = read_results_json(results_json)
    if not results:
        raise ValueError(f"results file {results_json!r} holds no entries: nothing to score")
    gt = dataset_ground_truth(dataset_name)
    check_results_against(results, gt, dataset_name, results_json)
    out = Rescored(dataset=dataset_name, backend=backend, gt=gt, results=results)
    coco_gt = coco_from_dict(gt, backend)
    tasks = ["bbox"] + (["segm"] if all(r.get("segmentation") for r in results) else [])
    for task in tasks:
        out.scored[task] = score(coco_gt, results, task, backend)
    return out
