"""COCO loading: polygons, RLE, crowd, empty images and category mapping, checked against
pycocotools' own decoding and hand-built masks."""
import contextlib
import io

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO

from gn_det.data import (DatasetCatalog, MetadataCatalog, annotations_to_target, build_detection_test_loader,
                         get_detection_dataset_dicts, load_coco_json, register_coco_instances, register_from_cfg)

H, W = 20, 30


def _rect_mask(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE, computed by hand: run lengths of the column-major flattening,
    starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


@pytest.fixture
def coco_set(tmp_path, coco_writer):
    """Image 1 with polygon, multi-polygon, uncompressed-RLE and crowd annotations; image 2 empty;
    image 3 with only a crowd region. Category ids 3, 7, 10 (listed out of order)."""
    crowd_rle = mask_util.encode(np.asfortranarray(_rect_mask(0, 5, 0, 8)))
    crowd_rle["counts"] = crowd_rle["counts"].decode("ascii")
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
              {"id": 2, "file_name": "b.png", "height": 24, "width": 16},
              {"id": 3, "file_name": "c.png", "height": H, "width": W}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 7], "iscrowd": 0,
         "segmentation": [[2, 3, 12, 3, 12, 10, 2, 10]]},
        {"id": 2, "image_id": 1, "category_id": 10, "bbox": [1, 2, 24, 16], "iscrowd": 0,
         "segmentation": [[15, 2, 25, 2, 20, 12], [1, 12, 6, 12, 6, 18, 1, 18]]},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [20, 14, 9, 5], "iscrowd": 0,
         "segmentation": _uncompressed_rle(_rect_mask(14, 19, 20, 29))},
        {"id": 4, "image_id": 1, "category_id": 7, "bbox": [0, 0, 8, 5], "iscrowd": 1, "segmentation": crowd_rle},
        {"id": 5, "image_id": 3, "category_id": 3, "bbox": [0, 0, 8, 5], "iscrowd": 1,
         "segmentation": _uncompressed_rle(_rect_mask(0, 5, 0, 8))},
    ]
    cats = [{"id": 10, "name": "ten"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]
    json_file, image_root = coco_writer(str(tmp_path), images, anns, cats)
    return json_file, image_root, anns


def test_category_mapping_and_back(coco_set, unique_name):
    json_file, image_root, _ = coco_set
    name = unique_name()
    dicts = load_coco_json(json_file, image_root, name)
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["three", "seven", "ten"]  # sorted by dataset id
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 10: 2}
    assert [d["image_id"] for d in dicts] == [1, 2, 3]
    back = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    assert [back[a["category_id"]] for a in dicts[0]["annotations"]] == [7, 10, 3, 7]
    assert [a["iscrowd"] for a in dicts[0]["annotations"]] == [0, 0, 0, 1]
    assert dicts[1]["annotations"] == [] and dicts[1]["height"] == 24 and dicts[1]["width"] == 16


def test_masks_match_pycocotools(coco_set):
    json_file, image_root, anns = coco_set
    dicts = load_coco_json(json_file, image_root)
    target = annotations_to_target(dicts[0]["annotations"], H, W, mask_on=True)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_file)
    non_crowd = [a for a in anns if a["image_id"] == 1 and not a["iscrowd"]]
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (3, H, W)
    for mask, ann in zip(target["masks"], non_crowd):
        np.testing.assert_array_equal(mask.numpy(), coco.annToMask(coco.anns[ann["id"]]))
    # the uncompressed RLE decodes to the rectangle it was built from
    np.testing.assert_array_equal(target["masks"][2].numpy(), _rect_mask(14, 19, 20, 29))
    # crowd dropped; labels are contiguous id + 1; boxes x1y1x2y2
    assert target["labels"].tolist() == [2, 3, 1]
    expected = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in non_crowd]
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == expected


def test_empty_and_crowd_only_images(coco_set, unique_name, small_cfg):
    json_file, image_root, _ = coco_set
    name = unique_name()
    register_coco_instances(name, {}, json_file, image_root)
    assert [d["image_id"] for d in get_detection_dataset_dicts([name], filter_empty=True)] == [1]
    assert [d["image_id"] for d in get_detection_dataset_dicts([name], filter_empty=False)] == [1, 2, 3]
    loader = build_detection_test_loader(small_cfg, name)
    seen = [batch for batch in loader]
    assert all(len(b) == 1 for b in seen)
    assert [b[0][1]["image_id"] for b in seen] == [1, 2, 3]  # empty images kept for evaluation
    assert seen[1][0][0].shape == (3, 1200, 800)  # 24x16 resized to short side 800 (INPUT.MIN_SIZE_TEST)
    assert (seen[1][0][1]["height"], seen[1][0][1]["width"]) == (24, 16)  # the original size, for the outputs


def test_register_coco_instances_metadata(coco_set, unique_name):
    json_file, image_root, _ = coco_set
    name = unique_name()
    register_coco_instances(name, {"extra": 1}, json_file, image_root)
    register_coco_instances(name, {}, json_file, image_root)  # same files again: no-op
    meta = MetadataCatalog.get(name)
    assert (meta.json_file, meta.image_root, meta.extra) == (json_file, image_root, 1)
    assert len(DatasetCatalog.get(name)) == 3
    assert meta.thing_classes == ["three", "seven", "ten"]


def test_register_from_cfg(coco_set, unique_name, small_cfg):
    json_file, image_root, _ = coco_set
    name = unique_name()
    small_cfg.DATASETS.REGISTER_COCO = [[name, json_file, image_root]]
    assert register_from_cfg(small_cfg) == [name]
    assert MetadataCatalog.get(name).json_file == json_file
    assert len(DatasetCatalog.get(name)) == 3


def test_builtin_coco_layout(tmp_path, monkeypatch):
    from gn_det.data.builtin import register_builtin_coco
    try:
        register_builtin_coco(str(tmp_path))
        meta = MetadataCatalog.get("coco_2017_val")
        assert meta.json_file == str(tmp_path / "coco/annotations/instances_val2017.json")
        assert meta.image_root == str(tmp_path / "coco/val2017")
        assert len(meta.thing_classes) == 80 and meta.thing_dataset_id_to_contiguous_id[90] == 79
        with pytest.raises(FileNotFoundError, match=r"set GN_DET_DATASETS to the folder that holds coco/"):
            DatasetCatalog.get("coco_2017_train")
        monkeypatch.setenv("GN_DET_DATASETS", str(tmp_path / "elsewhere"))
        register_builtin_coco()
        assert MetadataCatalog.get("coco_2017_train").image_root == str(tmp_path / "elsewhere/coco/train2017")
    finally:
        monkeypatch.delenv("GN_DET_DATASETS", raising=False)
        register_builtin_coco()
