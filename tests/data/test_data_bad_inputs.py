"""Bad inputs: each a clear error naming the file, entry or config key (message text pinned)."""
import itertools
import json
import logging
import os
import re

import pytest
from PIL import Image

from gn_det.data import (DatasetCatalog, build_detection_test_loader, build_detection_train_loader,
                         load_coco_json, register_coco_instances, register_from_cfg)

IMAGES = [{"id": 1, "file_name": "a.png", "height": 12, "width": 16},
          {"id": 2, "file_name": "b.png", "height": 12, "width": 16}]
CATS = [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]


def _ann(i, image_id=1, cat=1, bbox=(1, 1, 5, 5), **kw):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": list(bbox), "iscrowd": 0,
            "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]], **kw}


@pytest.fixture
def make(tmp_path, coco_writer, unique_name, small_cfg):
    """Write a dataset, register it and point DATASETS.TRAIN at it; returns (cfg, name, json, root)."""
    def build(images=IMAGES, anns=(_ann(1), _ann(2, image_id=2)), cats=CATS):
        json_file, root = coco_writer(str(tmp_path), list(images), list(anns), list(cats))
        name = unique_name()
        register_coco_instances(name, {}, json_file, root)
        small_cfg.DATASETS.TRAIN = (name,)
        small_cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
        return small_cfg, name, json_file, root
    return build


def _first_batch(cfg, world_size=1):
    return next(iter(build_detection_train_loader(cfg, rank=0, world_size=world_size)))


def test_missing_json(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=re.escape(f"COCO json file '{path}' (dataset 'x') does not exist")):
        load_coco_json(path, str(tmp_path), "x")


def test_malformed_json(make):
    _, name, json_file, _ = make()
    with open(json_file, "w") as f:
        f.write('{"images": [')
    with pytest.raises(ValueError, match=re.escape(f"COCO json file '{json_file}' (dataset '{name}') is not "
                                                   f"valid JSON: Expecting value: line 1 column 13")):
        DatasetCatalog.get(name)


def test_json_without_categories(make):
    _, name, json_file, _ = make()
    with open(json_file, "w") as f:
        json.dump({"images": [], "annotations": []}, f)
    with pytest.raises(ValueError, match=re.escape(f"COCO json file '{json_file}' (dataset '{name}') has no "
                                                   f"'categories' list")):
        DatasetCatalog.get(name)


def test_missing_image_file(make):
    _, name, json_file, root = make()
    os.remove(os.path.join(root, "b.png"))
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"1 image file(s) listed in '{json_file}' are missing under image_root '{root}': "
            f"'{os.path.join(root, 'b.png')}' (image id 2)")):
        DatasetCatalog.get(name)


def test_unreadable_image(make):
    cfg, _, _, root = make()
    bad = os.path.join(root, "a.png")
    with open(bad, "wb") as f:
        f.write(b"not a png at all")
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    with pytest.raises(OSError, match=re.escape(f"Cannot read image file '{bad}': cannot identify image file")):
        for _ in itertools.islice(iter(build_detection_train_loader(cfg, rank=0, world_size=1)), 4):
            pass


def test_image_size_differs_from_json(make):
    images = [dict(IMAGES[0], height=13)]
    cfg, name, _, root = make(images=images, anns=[_ann(1)])
    Image.new("RGB", (16, 12)).save(os.path.join(root, "a.png"))  # the file is 12 high, the json says 13
    with pytest.raises(ValueError, match=re.escape(
            f"Image file '{os.path.join(root, 'a.png')}' (image id 1) is 12x16 (HxW, after EXIF orientation) "
            f"but its dataset entry says 13x16")):
        next(iter(build_detection_test_loader(cfg, name)))


def test_unknown_category(make):
    _, name, json_file, _ = make(anns=[_ann(1), _ann(5, cat=99)])
    with pytest.raises(ValueError, match=re.escape(
            f"COCO json file '{json_file}': annotation id 5 (image id 1) has category_id 99, which is not in "
            f"its 'categories' (ids [1, 2])")):
        DatasetCatalog.get(name)


def test_annotation_of_unknown_image(make):
    _, name, json_file, _ = make(anns=[_ann(3, image_id=7)])
    with pytest.raises(ValueError, match=re.escape(
            f"COCO json file '{json_file}': annotation id 3 has image_id 7, which is not in its 'images'")):
        DatasetCatalog.get(name)


def test_degenerate_boxes_dropped_with_one_warning(make, caplog):
    anns = [_ann(1), _ann(2, bbox=(1, 1, 0, 5)), _ann(3, bbox=(1, 1, 4, -2)), _ann(4, bbox=(1, 1, 4)),
            _ann(5, image_id=2)]
    _, name, json_file, _ = make(anns=anns)
    with caplog.at_level(logging.WARNING, logger="gn_det.data"):
        dicts = DatasetCatalog.get(name)
    assert [a["id"] for d in dicts for a in d["annotations"]] == [1, 5]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"Dropped 3 annotation(s) with degenerate boxes (width or height <= 0, or not 4 finite "
                        f"numbers) from '{json_file}'"]


def test_empty_training_set(make):
    cfg, name, _, _ = make(anns=[_ann(1, iscrowd=1)])
    with pytest.raises(ValueError, match=re.escape(
            f"Empty training set: DATASETS.TRAIN=('{name}',) has no images; all 2 image(s) have no non-crowd "
            f"annotation and DATALOADER.FILTER_EMPTY_ANNOTATIONS=True dropped them")):
        build_detection_train_loader(cfg, rank=0, world_size=1)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False  # then empty images train with empty targets
    batch = _first_batch(cfg)
    assert [tuple(t["boxes"].shape) for _, t in batch] == [(0, 4), (0, 4)]
    # 12x16 images resized to the default short side 800: 800x1067 (16 * 800 / 12 = 1066.67, rounded)
    assert [tuple(t["masks"].shape) for _, t in batch] == [(0, 800, 1067), (0, 800, 1067)]
    assert [tuple(image.shape) for image, _ in batch] == [(3, 800, 1067), (3, 800, 1067)]


def test_ims_per_batch_not_divisible(make):
    cfg, _, _, _ = make()
    cfg.SOLVER.IMS_PER_BATCH = 3
    with pytest.raises(ValueError, match=re.escape(
            "SOLVER.IMS_PER_BATCH=3 must be a positive multiple of the number of processes (2); each process "
            "takes IMS_PER_BATCH / 2 images")):
        build_detection_train_loader(cfg, rank=0, world_size=2)


def test_num_classes_too_small(make):
    cfg, name, _, _ = make()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    with pytest.raises(ValueError, match=re.escape(
            f"MODEL.ROI_HEADS.NUM_CLASSES=1 is smaller than the 2 classes of {name} (['one', 'two']); set it to 2")):
        build_detection_train_loader(cfg, rank=0, world_size=1)


def test_mask_on_without_segmentation(make):
    anns = [{k: v for k, v in _ann(1).items() if k != "segmentation"}]
    cfg, _, _, root = make(anns=anns)
    with pytest.raises(ValueError, match=re.escape(
            f"An annotation of image '{os.path.join(root, 'a.png')}' has no 'segmentation', but MODEL.MASK_ON=True "
            f"needs masks for every instance")):
        _first_batch(cfg)
    cfg.MODEL.MASK_ON = False
    assert "masks" not in _first_batch(cfg)[0][1]


def test_unknown_dataset_name(small_cfg):
    small_cfg.DATASETS.TRAIN = ("no_such_set",)
    with pytest.raises(KeyError, match=re.escape("Dataset 'no_such_set' is not registered. Registered: [")):
        build_detection_train_loader(small_cfg, rank=0, world_size=1)


def test_register_conflict_and_bad_cfg_entry(make, small_cfg, tmp_path):
    _, name, json_file, root = make()
    with pytest.raises(KeyError, match=re.escape(f"Dataset '{name}' is already registered with "
                                                 f"json_file='{json_file}', image_root='{root}'; choose another name")):
        register_coco_instances(name, {}, str(tmp_path / "other.json"), root)
    small_cfg.DATASETS.REGISTER_COCO = [["only_two", "x.json"]]
    with pytest.raises(ValueError, match=re.escape(
            "DATASETS.REGISTER_COCO[0] must be [NAME, JSON_FILE, IMAGE_ROOT] (three non-empty strings), got "
            "['only_two', 'x.json']")):
        register_from_cfg(small_cfg)


def test_bad_random_flip_and_format(make):
    cfg, name, _, _ = make()
    cfg.INPUT.RANDOM_FLIP = "diagonal"
    with pytest.raises(ValueError, match=re.escape("INPUT.RANDOM_FLIP must be one of ['horizontal', 'none'], "
                                                   "got 'diagonal'")):
        build_detection_train_loader(cfg, rank=0, world_size=1)
    cfg.INPUT.RANDOM_FLIP, cfg.INPUT.FORMAT = "none", "YUV"
    with pytest.raises(ValueError, match=re.escape("INPUT.FORMAT must be one of ['BGR', 'RGB'], got 'YUV'")):
        next(iter(build_detection_test_loader(cfg, name)))
