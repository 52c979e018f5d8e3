"""DefaultTrainer's override points (detectron2's build_* classmethods) and "checkpoint before
evaluate": a subclass customises one piece; an evaluation that fails leaves model_final.pth written."""
from __future__ import annotations

import os

import pytest
import torch

from gn_det.config import get_cfg
from gn_det.data import DatasetCatalog, MetadataCatalog, generate_shapes_dataset, register_coco_instances
from gn_det.engine import DefaultTrainer, default_setup
from gn_det.evaluation.evaluator import DatasetEvaluator

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_mask_rcnn.yaml")


class CountingEvaluator(DatasetEvaluator):
    """Counts the images it sees; its 'AP' is that count."""

    def __init__(self):
        self.seen = 0

    def reset(self):
        self.seen = 0

    def process(self, inputs, outputs):
        self.seen += len(inputs)

    def evaluate(self):
        return {"count": {"AP": float(self.seen)}}


class BrokenEvaluator(CountingEvaluator):
    def evaluate(self):
        raise RuntimeError("evaluation failed")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("overrides") / "shapes"
    generate_shapes_dataset(str(root), num_train=2, num_val=2, size=64, seed=5)
    for split in ("train", "val"):
        name = f"overrides_{split}"
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        register_coco_instances(name, {}, str(root / "annotations" / f"instances_{split}.json"), str(root / split))
    yield
    for split in ("train", "val"):
        DatasetCatalog.remove(f"overrides_{split}")
        MetadataCatalog.remove(f"overrides_{split}")


def _cfg(out, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["DATASETS.TRAIN", ("overrides_train",), "DATASETS.TEST", ("overrides_val",),
                         "SOLVER.MAX_ITER", 1, "SOLVER.STEPS", (), "OUTPUT_DIR", str(out), *opts])
    cfg.freeze()
    default_setup(cfg)
    return cfg


def test_subclass_overrides_build_evaluator_and_build_model(datasets, tmp_path):
    built = []

    class Trainer(DefaultTrainer):
        @classmethod
        def build_model(cls, cfg):
            model = super().build_model(cfg)
            built.append(type(model).__name__)
            return model

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return CountingEvaluator()

    cfg = _cfg(tmp_path)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert built and results == {"overrides_val": {"count": {"AP": 2.0}}}  # test() asked Trainer.build_evaluator
    assert Trainer.test(cfg, trainer.model) == {"overrides_val": {"count": {"AP": 2.0}}}
    assert Trainer.test(cfg, trainer.model, evaluators=[CountingEvaluator()])["overrides_val"]["count"]["AP"] == 2.0


def test_failed_final_evaluation_keeps_model_final(datasets, tmp_path):
    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return BrokenEvaluator()

    cfg = _cfg(tmp_path)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    ckpt = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == 0 and ckpt["scheduler"]["last_epoch"] == 1
