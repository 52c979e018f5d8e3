"""Run a predictor over image files and draw what it finds (the library side of tools/demo.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from gn_det.data import DatasetCatalog, read_image
from gn_det.evaluation.coco_evaluation import contiguous_to_dataset_ids, instances_to_coco_json
from gn_det.utils.file_io import atomic_write_json
from .draw import draw_instances
from .images import save_image
from .instances import from_model_output

PREDICTIONS_FILE = "predictions.json"

__all__ = ["PREDICTIONS_FILE", "DemoImage", "DemoResult", "class_names_and_ids", "run_demo"]


@dataclass
class DemoImage:
    """One input's outcome: its file, the detections drawn (score >= threshold) and all detections."""

    file_name: str
    num_drawn: int
    num_detections: int
    output_file: Optional[str] = None


@dataclass
class DemoResult:
    """Every input's outcome and the predictions file (None without an output folder)."""

    images: List[DemoImage] = field(default_factory=list)
    predictions_file: Optional[str] = None


def class_names_and_ids(metadata: Any, num_classes: int):
    """(class names, contiguous -> dataset category id) of the predictor's dataset; generic names and
    identity ids when it has none. A COCO json dataset is loaded if its id mapping is not known yet."""
    if metadata is None:
        return [str(i) for i in range(num_classes)], {i: i for i in range(num_classes)}
    if metadata.get("thing_dataset_id_to_contiguous_id") is None and metadata.name in DatasetCatalog:
        DatasetCatalog.get(metadata.name)  # loading a COCO json sets the category id mapping
    names = list(metadata.get("thing_classes") or [])
    names += [str(i) for i in range(len(names), num_classes)]
    return names, contiguous_to_dataset_ids(metadata, num_classes)


def run_demo(predictor, files: Sequence[str], output_dir: Optional[str], threshold: float) -> DemoResult:
    """Run ``predictor`` (a DefaultPredictor) on each file; with ``output_dir``, write each drawing under the
    input's file name (same size) and ``predictions.json``: every detection as a COCO results entry
    (dataset category ids, x y w h box, RLE mask) with the image's ``file_name`` and ``image_id`` (its
    position in ``files``)."""
    names, to_dataset = class_names_and_ids(predictor.metadata, predictor.cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    result = DemoResult()
    entries: List[Dict[str, Any]] = []
    for image_id, file_name in enumerate(files):
        bgr = read_image(file_name, "BGR")
        output = predictor(bgr)
        output = {k: v.cpu() for k, v in output.items()}
        for entry in instances_to_coco_json(output, image_id, to_dataset):
            entries.append({**entry, "file_name": file_name})
        instances = from_model_output(output, names, threshold)
        item = DemoImage(file_name, len(instances), len(output["scores"]))
        if output_dir:
            item.output_file = save_image(os.path.join(output_dir, os.path.basename(file_name)),
                                          draw_instances(bgr[:, :, ::-1].copy(), instances))
        result.images.append(item)
    if output_dir:
        result.predictions_file = atomic_write_json(os.path.join(output_dir, PREDICTIONS_FILE), entries)
    return result
