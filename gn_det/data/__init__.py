"""Data: dataset catalog, COCO-format loading, image reading, transforms, samplers, loaders and the
synthetic shapes generator.

Importing this package pre-registers (lazily; nothing is read until used):
- ``coco_2017_train`` / ``coco_2017_val`` under ``$GN_DET_DATASETS/coco`` (default ``./datasets``),
  detectron2's layout: ``coco/annotations/instances_{train,val}2017.json``, ``coco/{train,val}2017/``;
- ``shapes_train`` / ``shapes_val`` under ``$GN_DET_DATASETS/shapes``, generated on first use.
"""
from .build import (TrainLoader, build_detection_test_loader, build_detection_train_loader,
                    get_detection_dataset_dicts, resolve_seed)
from .builtin import DATASETS_ENV, datasets_root, register_builtin_coco
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .coco import load_coco_json, register_coco_instances, register_from_cfg
from .image_io import read_image
from .mapper import DatasetMapper, annotations_to_target, segmentation_to_mask
from .samplers import InferenceSampler, TrainingBatchSampler
from .shapes import ensure_shapes_dataset, generate_shapes_dataset, register_shapes
from .transforms import ResizeShortestEdge, hflip, resize_image, shortest_edge_size

register_builtin_coco()
register_shapes(f"{datasets_root()}/shapes")

__all__ = [
    "DatasetCatalog", "MetadataCatalog", "Metadata", "load_coco_json", "register_coco_instances",
    "register_from_cfg", "register_builtin_coco", "datasets_root", "DATASETS_ENV", "read_image",
    "DatasetMapper", "annotations_to_target", "segmentation_to_mask", "ResizeShortestEdge", "hflip",
    "resize_image", "shortest_edge_size", "TrainingBatchSampler", "InferenceSampler", "TrainLoader",
    "build_detection_train_loader", "build_detection_test_loader", "get_detection_dataset_dicts",
    "resolve_seed", "ensure_shapes_dataset", "generate_shapes_dataset", "register_shapes",
]
