"""COCO box and mask AP of a detector's outputs on a registered dataset, by COCOeval (pycocotools or
faster-coco-eval, TEST.EVAL_BACKEND; see backends.py).

``COCOEvaluator`` collects torchvision-style outputs (labels 1..K, x1y1x2y2 boxes, mask probabilities)
per image, converts them to the COCO results format with the dataset's own category ids and RLE masks,
gathers them across processes, and reports AP/AP50/AP75/APs/APm/APl and per-category AP in percent,
as detectron2's COCOEvaluator does. Files are written atomically into ``output_dir``.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch

from gn_det.utils import comm
from gn_det.utils.file_io import atomic_write_json
from .backends import AUTO, PYCOCOTOOLS, coco_from_dict, resolve_backend
from .evaluator import DatasetEvaluator
from .scoring import nan_metrics, score

logger = logging.getLogger(__name__)

RESULTS_FILE = "coco_instances_results.json"
METRICS_FILE = "metrics.json"


def _meta(metadata: Any, key: str) -> Any:
    """A metadata attribute, or None when the dataset does not define it."""
    return getattr(metadata, key, None)


def contiguous_to_dataset_ids(metadata: Any, num_classes: Optional[int] = None) -> Dict[int, int]:
    """Map contiguous class index (0..K-1) -> the dataset's category id (identity when unmapped)."""
    mapping = _meta(metadata, "thing_dataset_id_to_contiguous_id")
    if mapping:
        return {int(c): int(d) for d, c in mapping.items()}
    k = num_classes if num_classes is not None else len(_meta(metadata, "thing_classes") or [])
    return {c: c for c in range(k)}


def instances_to_coco_json(output: Mapping[str, torch.Tensor], image_id: int,
                           contiguous_to_dataset: Mapping[int, int], mask_threshold: float = 0.5) -> List[dict]:
    """One image's model output as COCO result entries (x y w h boxes, dataset category ids, RLE masks).

    ``output["labels"]`` are 1..K (0 is torchvision's background), i.e. contiguous id + 1.
    """
    boxes = output["boxes"].detach().to("cpu", torch.float64)
    if len(boxes) == 0:
        return []
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = output["scores"].detach().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    rles = None
    if "masks" in output:
        masks = output["masks"].detach().cpu()
        if masks.dim() == 4:
            masks = masks[:, 0]
        # bool: thresholded already, on the model's device (inference_on_dataset); else probabilities
        binary = (masks if masks.dtype == torch.bool else masks >= mask_threshold).numpy().astype(np.uint8)
        rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")
    results = []
    for i, (box, score, label) in enumerate(zip(xywh, scores, labels)):
        contiguous = int(label) - 1
        if contiguous not in contiguous_to_dataset:
            raise ValueError(
                f"model output label {label} (contiguous id {contiguous}) has no dataset category: the "
                f"dataset has {len(contiguous_to_dataset)} classes; check MODEL.ROI_HEADS.NUM_CLASSES")
        entry = {"image_id": int(image_id), "category_id": contiguous_to_dataset[contiguous],
                 "bbox": [float(v) for v in box], "score": float(score)}
        if rles is not None:
            entry["segmentation"] = rles[i]
        results.append(entry)
    return results


def dataset_dicts_to_coco(dataset_dicts: Sequence[Mapping[str, Any]], metadata: Any) -> dict:
    """A COCO-format ground-truth dict from detectron2 dataset dicts (for datasets with no json file)."""
    to_dataset = contiguous_to_dataset_ids(metadata)
    classes = list(_meta(metadata, "thing_classes") or [])
    categories = [{"id": to_dataset[c], "name": classes[c] if c < len(classes) else str(c)}
                  for c in sorted(to_dataset)]
    images, annotations = [], []
    for d in dataset_dicts:
        images.append({"id": d["image_id"], "width": d["width"], "height": d["height"],
                       "file_name": d.get("file_name", "")})
        for ann in d.get("annotations", []):
            x, y, w, h = [float(v) for v in ann["bbox"]]
            entry = {"id": len(annotations) + 1, "image_id": d["image_id"], "bbox": [x, y, w, h],
                     "category_id": to_dataset[int(ann["category_id"])], "iscrowd": int(ann.get("iscrowd", 0)),
                     "area": w * h}
            seg = ann.get("segmentation")
            if seg:
                if isinstance(seg, list):
                    rle = mask_util.merge(mask_util.frPyObjects(seg, d["height"], d["width"]))
                    entry["segmentation"] = seg
                else:
                    rle = seg if not isinstance(seg.get("counts"), list) else \
                        mask_util.frPyObjects(seg, d["height"], d["width"])
                    entry["segmentation"] = _json_rle(seg)
                entry["area"] = float(mask_util.area(rle))
            annotations.append(entry)
    return {"info": {}, "images": images, "annotations": annotations, "categories": categories}


def _json_rle(rle: Mapping[str, Any]) -> dict:
    """An RLE dict with ``counts`` as str (bytes are not JSON)."""
    out = dict(rle)
    if isinstance(out.get("counts"), bytes):
        out["counts"] = out["counts"].decode("utf-8")
    return out


def dataset_ground_truth(dataset_name: str) -> dict:
    """The COCO-format ground truth of a registered dataset: its json file when it has one, else built
    from its dataset dicts. Loads the dataset first when needed, so its metadata (category id mapping)
    is set."""
    from gn_det.data import DatasetCatalog, MetadataCatalog

    metadata = MetadataCatalog.get(dataset_name)
    if _meta(metadata, "thing_dataset_id_to_contiguous_id") is None:
        DatasetCatalog.get(dataset_name)  # loading a COCO json sets the category id mapping
    json_file = _meta(metadata, "json_file")
    if json_file and os.path.isfile(json_file):
        with open(json_file, encoding="utf-8") as f:
            return json.load(f)
    return dataset_dicts_to_coco(DatasetCatalog.get(dataset_name), metadata)


def evaluate_predictions(coco_gt, predictions: List[dict], iou_type: str,
                         img_ids: Optional[Iterable[int]] = None, backend: str = PYCOCOTOOLS) -> Dict[str, float]:
    """COCOeval summary (percent) plus ``AP-<category name>`` for one IoU type ("bbox" or "segm"), scored by
    ``backend`` (a resolved name: "pycocotools" or "faster-coco-eval")."""
    if not predictions:
        logger.warning("No %s predictions: every %s metric is NaN.", iou_type, iou_type)
        return nan_metrics([c["name"] for c in coco_gt.loadCats(sorted(coco_gt.getCatIds()))])
    scored = score(coco_gt, predictions, iou_type, backend, img_ids)
    logger.info("COCOeval %s (%s):\n%s", iou_type, backend,
                scored.summary_text or "  ".join(f"{k}={v:.2f}" for k, v in scored.summary.items()))
    return scored.metrics()


class COCOEvaluator(DatasetEvaluator):
    """Box (and mask, when outputs carry masks) AP of a registered dataset, detectron2-style.

    ``process(inputs, outputs)`` takes the dataset dicts of a batch and the model's outputs for it;
    ``evaluate()`` gathers every process's predictions, writes ``coco_instances_results.json`` and
    ``metrics.json`` into ``output_dir`` (rank 0, atomically) and returns ``{"bbox": {...}, "segm": {...}}``
    in percent on every rank.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str], distributed: bool = True, backend: str = AUTO):
        from gn_det.data import MetadataCatalog

        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        self.backend = resolve_backend(backend)
        self.metadata = MetadataCatalog.get(dataset_name)
        self.coco_gt = coco_from_dict(dataset_ground_truth(dataset_name), self.backend)
        num_classes = len(_meta(self.metadata, "thing_classes") or []) or len(self.coco_gt.getCatIds())
        self._to_dataset = contiguous_to_dataset_ids(self.metadata, num_classes)
        self.reset()

    def reset(self) -> None:
        """Forget predictions collected so far."""
        self._predictions: List[dict] = []
        self._image_ids: List[int] = []
        self._has_masks = False

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, torch.Tensor]]) -> None:
        """Convert one batch of outputs (torchvision format) to COCO results and keep them."""
        for inp, out in zip(inputs, outputs):
            self._image_ids.append(int(inp["image_id"]))
            self._predictions.extend(instances_to_coco_json(out, inp["image_id"], self._to_dataset))
            self._has_masks = self._has_masks or "masks" in out

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """Gather, save and score the predictions; the same result dict on every rank."""
        predictions, image_ids = self._predictions, self._image_ids
        has_masks = self._has_masks
        if self.distributed and comm.get_world_size() > 1:
            comm.synchronize()
            gathered = comm.gather((predictions, image_ids, has_masks))  # to the main process only
            predictions = list(itertools.chain.from_iterable(g[0] for g in gathered))
            image_ids = list(itertools.chain.from_iterable(g[1] for g in gathered))
            has_masks = any(g[2] for g in gathered)
        results: Dict[str, Dict[str, float]] = {}
        if comm.is_main_process() or not self.distributed:
            if not image_ids:
                raise RuntimeError(f"COCOEvaluator for dataset '{self.dataset_name}' received no images: "
                                   "the test loader is empty")
            if self.output_dir:
                atomic_write_json(os.path.join(self.output_dir, RESULTS_FILE), predictions)
            tasks = ["bbox"] + (["segm"] if has_masks else [])
            for task in tasks:
                results[task] = evaluate_predictions(self.coco_gt, predictions, task, image_ids, self.backend)
            if self.output_dir:
                atomic_write_json(os.path.join(self.output_dir, METRICS_FILE), _json_safe(results))
        if self.distributed:
            results = comm.broadcast(results)
        return results


def _json_safe(results: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, Optional[float]]]:
    """NaN (no prediction / no ground truth) becomes null so metrics.json is strict JSON."""
    return {task: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
            for task, m in results.items()}


json_safe_metrics = _json_safe  # public name for the tools that write metrics files
