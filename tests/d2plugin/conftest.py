"""Fixtures for the gn_det.detectron2 tests: a tiny shapes dataset registered with detectron2's
``register_coco_instances`` and a CPU-sized detectron2 config over configs/detectron2/ recipes.

The test modules skip (with the reason) where detectron2 is not installed; this file imports it lazily."""
import os
import uuid

import pytest

from gn_det.data.shapes import generate_shapes_dataset

from d2_common import SKIP_REASON, TINY, D2_CONFIGS  # noqa: F401


@pytest.fixture(scope="session")
def d2_shapes(tmp_path_factory):
    """(train, val) dataset names: 8 + 4 shapes images of 64 px registered with detectron2's register_coco_instances."""
    pytest.importorskip("detectron2", reason=SKIP_REASON)
    from detectron2.data.datasets import register_coco_instances

    root = generate_shapes_dataset(str(tmp_path_factory.mktemp("d2shapes") / "ds"), num_train=8, num_val=4,
                                   size=64, seed=3)
    suffix = uuid.uuid4().hex[:6]
    names = []
    for split in ("train", "val"):
        name = f"d2_shapes_{split}_{suffix}"
        register_coco_instances(name, {}, os.path.join(root, "annotations", f"instances_{split}.json"),
                                os.path.join(root, split))
        names.append(name)
    return tuple(names)


@pytest.fixture
def tiny_d2_cfg(d2_shapes, tmp_path):
    """make(recipe, *overrides) -> detectron2 cfg: configs/detectron2/<recipe> + TINY + overrides, OUTPUT_DIR in tmp."""
    import gn_det.detectron2  # noqa: F401  (the plugin on)
    from detectron2.config import get_cfg

    def make(recipe="Base-RCNN-FPN.yaml", *overrides):
        cfg = get_cfg()
        cfg.merge_from_file(str(D2_CONFIGS / recipe))
        cfg.merge_from_list(TINY + ["DATASETS.TRAIN", f"('{d2_shapes[0]}',)", "DATASETS.TEST", f"('{d2_shapes[1]}',)",
                                    "OUTPUT_DIR", str(tmp_path / "out")] + list(overrides))
        return cfg

    return make
