"""Saved results beside the ground truth, one picture per image of a registered dataset (the library
side of tools/visualize_json_results.py): predictions on the left, annotations on the right."""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Sequence

from gn_det.data import DatasetCatalog, MetadataCatalog, read_image
from gn_det.evaluation.coco_evaluation import contiguous_to_dataset_ids
from .draw import draw_instances, side_by_side
from .images import save_image
from .instances import class_name, from_annotations, from_coco_results

__all__ = ["draw_json_results"]


def draw_json_results(results: Sequence[dict], dataset_name: str, output_dir: str, threshold: float) -> List[str]:
    """For each image of ``dataset_name``: its results scoring at least ``threshold`` (left) and its ground
    truth (right), saved under the image's file name. ``results`` are COCO results entries (dataset
    category ids), e.g. read by gn_det.evaluation.results_io. Returns the files written."""
    dicts = DatasetCatalog.get(dataset_name)  # first: loading a COCO json sets the metadata's id mapping
    metadata = MetadataCatalog.get(dataset_name)
    names = list(metadata.get("thing_classes") or [])
    to_dataset = contiguous_to_dataset_ids(metadata, len(names))
    dataset_to_name = {d: class_name(names, c) for c, d in to_dataset.items()}
    by_image: Dict[int, List[dict]] = defaultdict(list)
    for r in results:
        by_image[int(r["image_id"])].append(r)
    known = {int(d["image_id"]) for d in dicts}
    if results and not known & set(by_image):
        raise ValueError(f"no image id of the results is in dataset '{dataset_name}' (results: "
                         f"{sorted(by_image)[:5]}..., dataset: {sorted(known)[:5]}...): is --dataset the one they were made on?")
    written = []
    for d in dicts:
        rgb = read_image(d["file_name"], "RGB")
        h, w = rgb.shape[:2]
        predicted = draw_instances(rgb, from_coco_results(by_image.get(int(d["image_id"]), []), dataset_to_name, h, w,
                                                          threshold))
        truth = draw_instances(rgb, from_annotations(d.get("annotations", []), names, h, w))
        written.append(save_image(os.path.join(output_dir, os.path.basename(d["file_name"])),
                                  side_by_side(predicted, truth)))
    return written
