"""COCO 2017 pre-registered as ``coco_2017_train`` / ``coco_2017_val`` (lazily: nothing is read
until a dataset is used).

Datasets root: the environment variable ``GN_DET_DATASETS`` (default ``./datasets``), read when
gn_det.data is imported (call `register_builtin_coco(root)` to point elsewhere later). Layout, as
in detectron2::

    $GN_DET_DATASETS/coco/annotations/instances_train2017.json
    $GN_DET_DATASETS/coco/annotations/instances_val2017.json
    $GN_DET_DATASETS/coco/train2017/*.jpg
    $GN_DET_DATASETS/coco/val2017/*.jpg
"""
from __future__ import annotations

import os
from typing import Optional

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json

__all__ = ["DATASETS_ENV", "COCO_2017_SPLITS", "COCO_CATEGORIES", "datasets_root", "register_builtin_coco"]

DATASETS_ENV = "GN_DET_DATASETS"

# name -> (image folder, instances json), relative to the datasets root (detectron2's layout)
COCO_2017_SPLITS = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}

# COCO 2017 thing categories: (dataset id, name); ids 1..90 with gaps, as in instances_*2017.json.
COCO_CATEGORIES = [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"),
    (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"),
    (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"),
    (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"),
    (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"),
    (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"),
    (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
]


def datasets_root() -> str:
    """The datasets root: $GN_DET_DATASETS, or ./datasets when unset."""
    return os.environ.get(DATASETS_ENV) or "datasets"


def _load_coco_split(json_file: str, image_root: str, name: str):
    """Load one COCO split, explaining the expected layout when its json is absent."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"Dataset '{name}' needs '{json_file}', which does not exist. Put COCO 2017 under the datasets "
            f"root (${DATASETS_ENV}, now '{os.path.dirname(os.path.dirname(os.path.dirname(json_file)))}') "
            f"as coco/annotations/instances_{{train,val}}2017.json and coco/{{train,val}}2017/, or set "
            f"{DATASETS_ENV} to the folder that holds coco/")
    return load_coco_json(json_file, image_root, name)


def register_builtin_coco(root: Optional[str] = None) -> None:
    """(Re-)register coco_2017_train / coco_2017_val under `root` (default: `datasets_root()`)."""
    root = datasets_root() if root is None else os.fspath(root)
    ids = [cid for cid, _ in COCO_CATEGORIES]
    for name, (image_dir, json_rel) in COCO_2017_SPLITS.items():
        json_file, image_root = os.path.join(root, json_rel), os.path.join(root, image_dir)
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda j=json_file, r=image_root, n=name: _load_coco_split(j, r, n))
        MetadataCatalog.get(name).set(
            json_file=json_file, image_root=image_root,
            thing_classes=[n for _, n in COCO_CATEGORIES],
            thing_dataset_id_to_contiguous_id={cid: i for i, cid in enumerate(ids)})
