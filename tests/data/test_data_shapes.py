"""Synthetic shapes: determinism per seed, masks that match boxes and painted pixels, polygon
tracing, atomic writing, the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gn_det.data.shapes as shapes
from gn_det.data import DatasetCatalog, MetadataCatalog, ensure_shapes_dataset, register_shapes
from gn_det.data.mapper import segmentation_to_mask
from gn_det.data.shapes import CATEGORIES, generate_shapes_dataset, mask_to_polygons


def _read(root, split):
    with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
        data = json.load(f)
    pixels = [np.asarray(Image.open(os.path.join(root, split, im["file_name"]))) for im in data["images"]]
    return data, pixels


def test_deterministic_per_seed(tmp_path):
    a = generate_shapes_dataset(str(tmp_path / "a"), num_train=3, num_val=2, size=64, seed=11)
    b = generate_shapes_dataset(str(tmp_path / "b"), num_train=3, num_val=2, size=64, seed=11)
    c = generate_shapes_dataset(str(tmp_path / "c"), num_train=3, num_val=2, size=64, seed=12)
    for split in ("train", "val"):
        (ja, pa), (jb, pb), (jc, pc) = _read(a, split), _read(b, split), _read(c, split)
        assert ja == jb and all(np.array_equal(x, y) for x, y in zip(pa, pb))
        assert ja["annotations"] != jc["annotations"] and not np.array_equal(pa[0], pc[0])
    # image i does not depend on how many images the split has
    d = generate_shapes_dataset(str(tmp_path / "d"), num_train=1, num_val=1, size=64, seed=11)
    assert np.array_equal(_read(d, "train")[1][0], _read(a, "train")[1][0])


def test_masks_match_boxes_and_pixels(shapes_root):
    data, pixels = _read(shapes_root, "train")
    assert [c["name"] for c in data["categories"]] == CATEGORIES
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    assert len(by_image) == len(data["images"])  # every image has shapes
    for im, px in zip(data["images"], pixels):
        masks = [segmentation_to_mask(a["segmentation"], im["height"], im["width"]).astype(bool)
                 for a in by_image[im["id"]]]
        union = np.zeros((im["height"], im["width"]), dtype=int)
        for ann, mask in zip(by_image[im["id"]], masks):
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert ann["area"] == mask.sum() and mask.sum() >= 40
            colours = px[mask].astype(float)
            # one shape's visible pixels share its colour (up to the shading noise): occlusion is right
            assert np.abs(colours - np.median(colours, axis=0)).max() < 40
            union += mask
        assert union.max() <= 1  # visible parts are disjoint


def test_mask_to_polygons_exact_and_rejects_holes():
    rng = np.random.default_rng(0)
    for k in range(12):
        cat = CATEGORIES[k % 4]
        mask = shapes._raster(shapes._outline(cat, 16, 16, rng.uniform(4, 12), rng.uniform(0, 6)), 32)
        mask[0, 0] = mask[1, 1] = True  # two pixels touching diagonally: a saddle vertex
        mask[30, 2:6] = True  # a second component
        polys = mask_to_polygons(mask)
        assert polys is not None and len(polys) >= 3
        np.testing.assert_array_equal(segmentation_to_mask(polys, 32, 32).astype(bool), mask)
    square = np.zeros((6, 6), dtype=bool)
    square[1:4, 2:5] = True
    assert mask_to_polygons(square) == [[2.0, 1.0, 5.0, 1.0, 5.0, 4.0, 2.0, 4.0]]
    ring = np.zeros((10, 10), dtype=bool)
    ring[2:8, 2:8] = True
    ring[4:6, 4:6] = False
    assert mask_to_polygons(ring) is None


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    real = shapes._write_split

    def fail_on_val(out, split, *args):
        if split == "val":
            raise KeyboardInterrupt("interrupted")
        return real(out, split, *args)

    monkeypatch.setattr(shapes, "_write_split", fail_on_val)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes_dataset(str(tmp_path / "ds"), num_train=2, num_val=1, size=48)
    assert os.listdir(tmp_path) == []  # neither the dataset nor its temporary folder


def test_ensure_generates_once_and_register(tmp_path, unique_name):
    root = str(tmp_path / "s")
    names = (unique_name("shp"), unique_name("shp"))
    register_shapes(root, names=names)  # lazily generates with the defaults when loaded
    meta = MetadataCatalog.get(names[1])
    assert meta.thing_classes == CATEGORIES
    assert meta.json_file == os.path.join(root, "annotations", "instances_val.json")
    ensure_shapes_dataset(root, num_train=3, num_val=2, size=48)
    stamp = os.stat(meta.json_file).st_mtime_ns
    ensure_shapes_dataset(root, num_train=3, num_val=2, size=48)
    assert os.stat(meta.json_file).st_mtime_ns == stamp
    assert len(DatasetCatalog.get(names[0])) == 3 and len(DatasetCatalog.get(names[1])) == 2


def test_lazy_generation_on_first_load(tmp_path, unique_name, monkeypatch):
    monkeypatch.setitem(shapes.DEFAULTS, "num_train", 2)
    root = str(tmp_path / "lazy")
    names = (unique_name("shp"), unique_name("shp"))
    monkeypatch.setattr(shapes, "ensure_shapes_dataset",
                        lambda r: shapes.generate_shapes_dataset(r, num_train=2, num_val=1, size=48)
                        if not shapes.is_complete(r) else r)
    register_shapes(root, names=names)
    assert not os.path.exists(root)
    assert len(DatasetCatalog.get(names[0])) == 2 and shapes.is_complete(root)


def test_command_line(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = ["--out", out, "--num-train", "2", "--num-val", "1", "--size", "48", "--seed", "3"]
    done = subprocess.run([sys.executable, "-m", "gn_det.data.shapes"] + args, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr
    assert sorted(os.listdir(out)) == ["annotations", "train", "val"]
    assert sorted(os.listdir(os.path.join(out, "train"))) == ["000000.png", "000001.png"]
    assert shapes.main(args) == 2
    assert f"error: '{out}' already exists; remove it, choose another --out, or pass --overwrite" \
        in capsys.readouterr().err
    assert shapes.main(args[:3] + ["1", "--size", "48", "--overwrite"]) == 0
    assert sorted(os.listdir(os.path.join(out, "train"))) == ["000000.png"]
    assert sorted(os.listdir(tmp_path)) == ["cli"]  # the replaced dataset is gone, no temporaries


def test_ensure_loses_race_cleanly(tmp_path, monkeypatch):
    """Another process finishes the dataset while this one is writing: its copy is kept."""
    root = str(tmp_path / "race")
    real, state = shapes._write_split, {"other_done": False}

    def write(out, split, *args):
        if split == "val" and not state["other_done"]:
            state["other_done"] = True
            generate_shapes_dataset(root, num_train=2, num_val=1, size=48, seed=99)  # the "other process"
        return real(out, split, *args)

    monkeypatch.setattr(shapes, "_write_split", write)
    assert ensure_shapes_dataset(root, num_train=2, num_val=1, size=48, seed=1) == root
    with open(os.path.join(root, "annotations", "instances_train.json")) as f:
        assert json.load(f)["info"]["seed"] == 99
    assert sorted(os.listdir(tmp_path)) == ["race"]
