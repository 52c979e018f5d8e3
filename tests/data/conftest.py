"""Helpers for data tests: tiny COCO-format datasets written to tmp_path, unique catalog names."""
import json
import os
import uuid

import numpy as np
import pytest
from PIL import Image

from gn_det.config import get_cfg
from gn_det.data import DatasetCatalog, MetadataCatalog
from gn_det.data.shapes import generate_shapes_dataset


def write_coco(root, images, annotations, categories, *, pixels=None):
    """Write `images` (dicts with id/file_name/height/width) as random PNGs (or `pixels[file_name]`)
    under root/images and the json under root/ann.json; returns (json_file, image_root)."""
    image_root = os.path.join(root, "images")
    os.makedirs(image_root, exist_ok=True)
    rng = np.random.default_rng(0)
    for img in images:
        arr = (pixels or {}).get(img["file_name"])
        if arr is None:
            arr = rng.integers(0, 256, size=(img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(arr).save(os.path.join(image_root, img["file_name"]))
    json_file = os.path.join(root, "ann.json")
    with open(json_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_file, image_root


@pytest.fixture
def coco_writer():
    """The `write_coco` helper."""
    return write_coco


@pytest.fixture
def unique_name():
    """Catalog names unique to the test, removed afterwards."""
    made = []

    def make(prefix="t"):
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        made.append(name)
        return name

    yield make
    for name in made:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A small shapes dataset shared by the data tests (12 train, 4 val, 64 px)."""
    root = tmp_path_factory.mktemp("shapes") / "ds"
    return str(generate_shapes_dataset(str(root), num_train=12, num_val=4, size=64, seed=5))


@pytest.fixture
def small_cfg():
    """A config for data tests: 2 images per batch, mask on, 4 classes, fixed seed, no workers."""
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 4
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SEED = 7
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg
