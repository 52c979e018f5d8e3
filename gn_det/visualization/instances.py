"""What a picture shows, from the three places instances come from: a model's output (torchvision
format), a dataset dict's annotations (detectron2 format, contiguous category ids) and COCO results
entries (dataset category ids, x y w h boxes, RLE masks)."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from gn_det.data import segmentation_to_mask
from .draw import Instances

__all__ = ["class_name", "from_model_output", "from_annotations", "from_coco_results"]


def class_name(names: Sequence[str], index: int) -> str:
    """The class name at contiguous ``index``, or the index itself when the dataset has no name for it."""
    return names[index] if 0 <= index < len(names) else str(index)


def _label(name: str, score: Optional[float]) -> str:
    return name if score is None else f"{name} {score * 100:.0f}%"


def from_model_output(output: Mapping[str, torch.Tensor], class_names: Sequence[str], threshold: float,
                      mask_threshold: float = 0.5) -> Instances:
    """Detections scoring at least ``threshold``: labels ``class NN%`` (torchvision labels are contiguous + 1),
    masks (probabilities) binarized at ``mask_threshold``."""
    scores = output["scores"].detach().cpu()
    keep = scores >= threshold
    boxes = output["boxes"].detach().cpu()[keep].to(torch.float64).numpy()
    labels = [_label(class_name(class_names, int(c) - 1), float(s))
              for c, s in zip(output["labels"].cpu()[keep].tolist(), scores[keep].tolist())]
    masks = None
    if "masks" in output:
        m = output["masks"].detach().cpu()[keep]
        masks = (m[:, 0] if m.dim() == 4 else m).numpy() >= mask_threshold
    return Instances(boxes=boxes.reshape(-1, 4), labels=labels, masks=masks)


def _xywh_to_xyxy(bboxes: Sequence[Sequence[float]]) -> np.ndarray:
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 2:] += b[:, :2]
    return b


def from_annotations(annotations: Sequence[Mapping], class_names: Sequence[str], height: int, width: int) -> Instances:
    """A dataset dict's non-crowd annotations as stored (``category_id`` contiguous), masks where they have one."""
    annos = [a for a in annotations if not a.get("iscrowd", 0)]
    masks = None
    if annos and all(a.get("segmentation") for a in annos):
        masks = np.stack([segmentation_to_mask(a["segmentation"], height, width).astype(bool) for a in annos])
    return Instances(boxes=_xywh_to_xyxy([a["bbox"] for a in annos]),
                     labels=[class_name(class_names, int(a["category_id"])) for a in annos], masks=masks)


def from_coco_results(results: Sequence[Mapping], dataset_to_name: Dict[int, str], height: int, width: int,
                      threshold: float) -> Instances:
    """COCO results entries of one image scoring at least ``threshold`` (``dataset_to_name``: dataset
    category id -> name), masks where every entry has a segmentation."""
    kept: List[Mapping] = [r for r in results if float(r.get("score", 1.0)) >= threshold]
    masks = None
    if kept and all(r.get("segmentation") for r in kept):
        masks = np.stack([segmentation_to_mask(r["segmentation"], height, width).astype(bool) for r in kept])
    labels = [_label(dataset_to_name.get(int(r["category_id"]), str(r["category_id"])), float(r["score"]))
              for r in kept]
    return Instances(boxes=_xywh_to_xyxy([r["bbox"] for r in kept]), labels=labels, masks=masks)
