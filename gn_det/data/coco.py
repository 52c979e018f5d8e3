"""COCO-format datasets: `load_coco_json` turns an instances json + image folder into dataset dicts,
`register_coco_instances` puts one in the catalog, `register_from_cfg` does it for
cfg.DATASETS.REGISTER_COCO.

Dataset dicts follow detectron2: ``{"file_name", "height", "width", "image_id", "annotations": [
{"bbox": [x, y, w, h], "category_id": contiguous 0..K-1, "segmentation": polygons or RLE,
"iscrowd": 0/1}]}``. Category ids of the json (any integers) are mapped to 0..K-1 in id order; the
metadata's ``thing_dataset_id_to_contiguous_id`` maps them back for evaluation.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence

from pycocotools.coco import COCO

from .catalog import DatasetCatalog, MetadataCatalog

__all__ = ["load_coco_json", "register_coco_instances", "register_from_cfg"]

logger = logging.getLogger(__name__)


def _read_json(json_file: str, dataset_name: Optional[str]) -> Dict[str, Any]:
    """Parse the json file with errors that name it; check the top-level COCO structure."""
    where = f" (dataset '{dataset_name}')" if dataset_name else ""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO json file '{json_file}'{where} does not exist")
    try:
        with open(json_file, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"COCO json file '{json_file}'{where} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"COCO json file '{json_file}'{where} must hold a JSON object with 'images', "
                         f"'annotations' and 'categories', got a {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"COCO json file '{json_file}'{where} has no '{key}' list")
    data.setdefault("annotations", [])  # test-set jsons (e.g. COCO test-dev) have none
    if not isinstance(data["annotations"], list):
        raise ValueError(f"COCO json file '{json_file}'{where}: 'annotations' must be a list")
    return data


def _build_coco(data: Dict[str, Any]) -> COCO:
    """A pycocotools COCO index over already-parsed json (its own prints silenced)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _valid_polygons(segm: Sequence) -> List[List[float]]:
    """Polygons with an even number (>= 6) of coordinates, as detectron2 keeps them."""
    return [list(map(float, p)) for p in segm
            if isinstance(p, (list, tuple)) and len(p) % 2 == 0 and len(p) >= 6]


def _is_degenerate(bbox: Any) -> bool:
    """True for a bbox that is not 4 finite numbers with positive width and height."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return True
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return True
    return not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0


def _convert_annotation(ann: dict, img: dict, id_map: Dict[int, int], json_file: str,
                        counts: Dict[str, int]) -> Optional[dict]:
    """One json annotation -> one dataset-dict annotation, or None when it is dropped (counted)."""
    cat = ann.get("category_id")
    if cat not in id_map:
        raise ValueError(f"COCO json file '{json_file}': annotation id {ann.get('id')} (image id "
                         f"{img['id']}) has category_id {cat!r}, which is not in its 'categories' "
                         f"(ids {sorted(id_map)})")
    if _is_degenerate(ann.get("bbox")):
        counts["degenerate"] += 1
        return None
    obj = {"bbox": [float(v) for v in ann["bbox"]], "category_id": id_map[cat],
           "iscrowd": int(ann.get("iscrowd", 0))}
    if "id" in ann:
        obj["id"] = ann["id"]
    segm = ann.get("segmentation")
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError(f"COCO json file '{json_file}': annotation id {ann.get('id')} has an RLE "
                             f"segmentation without 'counts' and 'size'")
        if list(segm["size"]) != [img["height"], img["width"]]:
            raise ValueError(f"COCO json file '{json_file}': annotation id {ann.get('id')} has an RLE of "
                             f"size {list(segm['size'])} but its image id {img['id']} is "
                             f"{img['height']}x{img['width']}")
        obj["segmentation"] = segm
    elif isinstance(segm, list):
        polys = _valid_polygons(segm)
        if not polys:
            counts["bad_polygon"] += 1
            return None
        obj["segmentation"] = polys
    return obj


def _image_record(img: dict, image_root: str, json_file: str) -> dict:
    """The image part of a dataset dict, validating the json entry."""
    for key in ("id", "file_name", "height", "width"):
        if key not in img:
            raise ValueError(f"COCO json file '{json_file}': image entry {img.get('id', img)!r} has no '{key}'")
    return {"file_name": os.path.join(image_root, img["file_name"]), "height": int(img["height"]),
            "width": int(img["width"]), "image_id": img["id"]}


def _check_images_exist(records: List[dict], json_file: str, image_root: str) -> None:
    """One error listing how many image files are missing and the first few."""
    missing = [r for r in records if not os.path.isfile(r["file_name"])]
    if missing:
        first = ", ".join(f"'{r['file_name']}' (image id {r['image_id']})" for r in missing[:3])
        raise FileNotFoundError(f"{len(missing)} image file(s) listed in '{json_file}' are missing under "
                                f"image_root '{image_root}': {first}")


def load_coco_json(json_file: str, image_root: str, dataset_name: Optional[str] = None) -> List[dict]:
    """Read a COCO instances json into dataset dicts (images sorted by id; crowd annotations and
    images without annotations kept). Degenerate boxes and annotations without a valid polygon
    are dropped with one warning that counts them. With `dataset_name`, its metadata receives
    `thing_classes` and `thing_dataset_id_to_contiguous_id`."""
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    data = _read_json(json_file, dataset_name)
    coco = _build_coco(data)
    cat_ids = sorted(coco.getCatIds())
    cats = coco.loadCats(cat_ids)
    id_map = {cid: i for i, cid in enumerate(cat_ids)}
    img_ids = set(coco.imgs)
    for ann in data["annotations"]:
        if ann.get("image_id") not in img_ids:
            raise ValueError(f"COCO json file '{json_file}': annotation id {ann.get('id')} has image_id "
                             f"{ann.get('image_id')!r}, which is not in its 'images'")
    counts = {"degenerate": 0, "bad_polygon": 0}
    records = []
    for img_id in sorted(img_ids):
        img = coco.imgs[img_id]
        record = _image_record(img, image_root, json_file)
        objs = (_convert_annotation(a, img, id_map, json_file, counts) for a in coco.imgToAnns[img_id])
        record["annotations"] = [o for o in objs if o is not None]
        records.append(record)
    _check_images_exist(records, json_file, image_root)
    if counts["degenerate"]:
        logger.warning(f"Dropped {counts['degenerate']} annotation(s) with degenerate boxes (width or "
                       f"height <= 0, or not 4 finite numbers) from '{json_file}'")
    if counts["bad_polygon"]:
        logger.warning(f"Dropped {counts['bad_polygon']} annotation(s) without a valid polygon (an even "
                       f"number >= 6 of coordinates) from '{json_file}'")
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(thing_classes=[c["name"] for c in cats],
                                              thing_dataset_id_to_contiguous_id=id_map)
    logger.info(f"Loaded {len(records)} images from '{json_file}'")
    return records


def register_coco_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """Register a COCO-format instances dataset under `name` (loaded lazily, on first use).
    `metadata` may be {} (class names come from the json). Registering the same name again with
    the same files is a no-op; with other files, an error."""
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if name in DatasetCatalog:
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
            return
        raise KeyError(f"Dataset '{name}' is already registered with json_file={meta.get('json_file')!r}, "
                       f"image_root={meta.get('image_root')!r}; choose another name")
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, **metadata)


def register_from_cfg(cfg) -> List[str]:
    """Register each [NAME, JSON_FILE, IMAGE_ROOT] of cfg.DATASETS.REGISTER_COCO; returns the names."""
    names = []
    for i, entry in enumerate(cfg.DATASETS.REGISTER_COCO):
        if (not isinstance(entry, (list, tuple)) or len(entry) != 3
                or not all(isinstance(v, str) and v for v in entry)):
            raise ValueError(f"DATASETS.REGISTER_COCO[{i}] must be [NAME, JSON_FILE, IMAGE_ROOT] "
                             f"(three non-empty strings), got {entry!r}")
        register_coco_instances(entry[0], {}, entry[1], entry[2])
        names.append(entry[0])
    return names
