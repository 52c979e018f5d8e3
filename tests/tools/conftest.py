"""Shared, session-wide fixtures of the command-line tests: the tool runner and a workspace holding a
tiny COCO dataset, broken variants of it and broken weights files (each written by the test itself)."""
from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from cli_runner import TINY_CONFIG, ToolRunner  # noqa: E402


class _Payload:
    """Unpickling this would run ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@dataclass
class Workspace:
    """The test data under ``root``: the good splits (train.json + train/, val.json + val/), broken
    jsons, weights files and output directories; ``p(name)`` is the path of one."""

    root: Path

    def p(self, name: str) -> str:
        return str(self.root / name)

    def data_flags(self, train_json: str = "train.json") -> list:
        """--register-coco t <train_json> train/ and v val.json val/, trained on t and tested on v."""
        return ["--register-coco", "t", self.p(train_json), self.p("train"), "--register-coco", "v",
                self.p("val.json"), self.p("val"), "DATASETS.TRAIN", "('t',)", "DATASETS.TEST", "('v',)"]


def _write_json(path: Path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    from gn_det.data import generate_shapes_dataset

    root = tmp_path_factory.mktemp("cli")
    shapes = root / "shapes"
    generate_shapes_dataset(str(shapes), num_train=4, num_val=2, size=64, seed=3)
    ws = Workspace(root)
    for split in ("train", "val"):
        os.rename(shapes / "annotations" / f"instances_{split}.json", root / f"{split}.json")
        os.rename(shapes / split, root / split)
    shutil.rmtree(shapes)
    good = json.loads((root / "train.json").read_text())
    first = good["images"][0]

    # Broken datasets: each a copy of the good train json with one thing wrong.
    (root / "invalid.json").write_text('{"images": [')
    _write_json(root / "list.json", [good])
    _write_json(root / "no_images.json", {"categories": good["categories"], "annotations": []})
    missing = copy.deepcopy(good)
    missing["images"][0]["file_name"] = "gone.png"
    _write_json(root / "missing_image.json", missing)
    (root / "train" / "corrupt.png").write_text("this is not a PNG")
    corrupt = copy.deepcopy(good)
    corrupt["images"][0]["file_name"] = "corrupt.png"
    _write_json(root / "corrupt_image.json", corrupt)
    sized = copy.deepcopy(good)
    sized["images"][0]["height"] = first["height"] + 10
    _write_json(root / "wrong_size.json", sized)
    unknown_cat = copy.deepcopy(good)
    unknown_cat["annotations"][0]["category_id"] = 99
    _write_json(root / "unknown_category.json", unknown_cat)
    _write_json(root / "empty.json", {"images": [], "annotations": [], "categories": good["categories"]})
    _write_json(root / "unannotated.json", {**good, "annotations": []})

    # Weights: good (a state dict of the tiny model), truncated, refused, unknown, fitting nothing.
    from gn_det.config import get_cfg
    from gn_det.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(TINY_CONFIG)
    state = build_model(cfg).state_dict()
    torch.save(state, root / "good.pth")
    data = (root / "good.pth").read_bytes()
    (root / "truncated.pth").write_bytes(data[: len(data) // 2])
    with open(root / "evil.pkl", "wb") as f:
        pickle.dump({"conv1_w": [0.0], "x": _Payload(f"touch {root / 'pwned'}")}, f, protocol=2)
    torch.save({"encoder.weight": torch.zeros(2)}, root / "bert.pth")
    torch.save({"roi_heads.keypoint_head.conv1.weight": torch.zeros(2)}, root / "keypoints.pth")

    # A directory holding another run's checkpoints, one whose last_checkpoint names a lost file, one
    # with checkpoints but no last_checkpoint; a run of the tiny model to resume, and one cut short.
    for name, files in (("other_run", {"last_checkpoint": "model_final.pth", "model_final.pth": "x",
                                       "metrics.json": '{"iteration": 0}\n', "config.yaml": "SEED: 1\n"}),
                        ("lost_checkpoint", {"last_checkpoint": "model_0000009.pth", "model_0000004.pth": "x"}),
                        ("no_last_checkpoint", {"model_0000004.pth": "x", "model_0000009.pth": "x"}),
                        ("resumable", {"last_checkpoint": "model_0000003.pth"}),
                        ("cut_checkpoint", {"last_checkpoint": "model_0000003.pth"})):
        (root / name).mkdir()
        for fname, text in files.items():
            (root / name / fname).write_text(text)
    torch.save({"model": state, "iteration": 3}, root / "resumable" / "model_0000003.pth")
    data = (root / "resumable" / "model_0000003.pth").read_bytes()
    (root / "cut_checkpoint" / "model_0000003.pth").write_bytes(data[: len(data) // 2])
    (root / "a_file").write_text("")
    return ws


@pytest.fixture(scope="session")
def runner(tmp_path_factory):
    datasets = tmp_path_factory.mktemp("datasets_root")  # builtin datasets point here, never at the repo
    r = ToolRunner(env={"GN_DET_DATASETS": str(datasets), "OMP_NUM_THREADS": "1"})
    yield r
    r.close()
