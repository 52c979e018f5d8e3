"""Synthetic shapes: a small COCO-format instance segmentation dataset for tests and the quick start.

    python -m gn_det.data.shapes --out DIR [--num-train N --num-val M --size S --seed K]

writes DIR/train/*.png, DIR/val/*.png and DIR/annotations/instances_{train,val}.json: circles,
squares, triangles and stars of varied colours, sizes and rotations on textured backgrounds, some
overlapping (later shapes occlude earlier ones; masks are the visible parts, polygons traced along
pixel edges so they decode exactly to the painted pixels). Image i of a split depends only on
(seed, split, i). The dataset is written to a temporary folder and renamed into place, so an
interrupted run never leaves a half-written dataset.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..catalog import DatasetCatalog, MetadataCatalog
from ..coco import load_coco_json
from ..mapper import segmentation_to_mask

__all__ = ["CATEGORIES", "DEFAULTS", "mask_to_polygons", "render_image", "generate_shapes_dataset",
           "ensure_shapes_dataset", "register_shapes", "is_complete", "main"]

logger = logging.getLogger(__name__)

CATEGORIES = ["circle", "square", "triangle", "star"]
# 128 px images with shapes 20-50 px across, 1-4 per image: a small GN Mask R-CNN learns them on CPU.
DEFAULTS = {"num_train": 500, "num_val": 100, "size": 128, "seed": 0}
SPLITS = ("train", "val")
MAX_SHAPES = 4
MIN_VISIBLE = 0.7  # a shape keeps at least this fraction of its area visible under later shapes
MIN_COLOR_DIST = 110.0  # RGB distance between a shape's colour and the background mean


def _outline(category: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    """Vertices of one shape centred at (cx, cy) with circumradius r, rotated by angle (radians)."""
    if category == "circle":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        radii = np.full_like(t, r)
    elif category == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full_like(t, r)
    elif category == "triangle":
        t = angle - np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        radii = np.full_like(t, r * 1.1)
    elif category == "star":
        t = angle - np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r * 1.1, r * 0.5)
    else:
        raise ValueError(f"unknown shape category {category!r}; known: {CATEGORIES}")
    return list(zip((cx + radii * np.cos(t)).tolist(), (cy + radii * np.sin(t)).tolist()))


def _raster(points: Sequence[Tuple[float, float]], size: int) -> np.ndarray:
    """Filled polygon as a size x size bool mask."""
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon(points, fill=1)
    return np.asarray(img, dtype=bool)


def mask_to_polygons(mask: np.ndarray) -> Optional[List[List[float]]]:
    """Trace a binary mask's outer boundaries along pixel edges into COCO polygons (pixel (x, y)
    covers [x, x+1] x [y, y+1], pycocotools' convention). Returns None if the mask has holes,
    which COCO polygons cannot express."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1]
    ys, xs = np.nonzero(inner)
    nxt: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
    # directed unit edges with the mask on their right (y grows downwards)
    sides = [(~m[:-2, 1:-1], (0, 0), (1, 0)), (~m[1:-1, 2:], (1, 0), (1, 1)),
             (~m[2:, 1:-1], (1, 1), (0, 1)), (~m[1:-1, :-2], (0, 1), (0, 0))]
    for outside, (ax, ay), (bx, by) in sides:
        sel = outside[ys, xs]
        for x, y in zip(xs[sel].tolist(), ys[sel].tolist()):
            nxt.setdefault((x + ax, y + ay), []).append((x + bx, y + by))
    polygons = []
    while nxt:
        start = next(iter(nxt))
        loop, prev, cur = [start], None, start
        while True:
            outs = nxt[cur]
            if prev is None or len(outs) == 1:
                nb = outs[0]
            else:  # a saddle vertex: turn right (towards the mask) first, to keep loops simple
                dx, dy = cur[0] - prev[0], cur[1] - prev[1]
                prefs = [(cur[0] - dy, cur[1] + dx), (cur[0] + dx, cur[1] + dy), (cur[0] + dy, cur[1] - dx)]
                nb = next(p for p in prefs if p in outs)
            outs.remove(nb)
            if not outs:
                del nxt[cur]
            prev, cur = cur, nb
            if cur == start:
                break
            loop.append(cur)
        pts = np.asarray(loop, dtype=np.float64)
        area = 0.5 * np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
        if area < 0:
            return None  # a hole
        keep = [i for i in range(len(loop))  # drop vertices in the middle of a straight run
                if (loop[i][0] - loop[i - 1][0], loop[i][1] - loop[i - 1][1])
                != (loop[(i + 1) % len(loop)][0] - loop[i][0], loop[(i + 1) % len(loop)][1] - loop[i][1])]
        polygons.append([float(v) for i in keep for v in loop[i]])
    return polygons


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background: a base colour, smooth blotches, faint stripes and pixel noise."""
    base = rng.uniform(40, 215, size=3)
    grid = rng.uniform(-1, 1, size=(max(size // 16, 2), max(size // 16, 2), 3))
    blotch = np.stack([np.asarray(Image.fromarray(grid[..., c].astype(np.float32), "F")
                                  .resize((size, size), Image.BILINEAR)) for c in range(3)], axis=-1)
    yy, xx = np.mgrid[0:size, 0:size]
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)[..., None]
    img = base + 35 * blotch + rng.uniform(5, 18) * stripes + rng.normal(0, 4, size=(size, size, 3))
    return img


def _shape_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A colour far enough from the background to be clearly visible."""
    while True:
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - background_mean) >= MIN_COLOR_DIST:
            return colour


def _place_shapes(rng: np.random.Generator, size: int) -> Optional[List[dict]]:
    """Draw 1..MAX_SHAPES shapes, painted in order; None if the visible masks are not clean."""
    shapes: List[dict] = []
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        for _attempt in range(20):
            category = int(rng.integers(len(CATEGORIES)))
            r = rng.uniform(0.08, 0.2) * size
            cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
            full = _raster(_outline(CATEGORIES[category], cx, cy, r, rng.uniform(0, 2 * np.pi)), size)
            if all((s["visible"] & ~full).sum() >= MIN_VISIBLE * s["full"].sum() for s in shapes):
                for s in shapes:
                    s["visible"] = s["visible"] & ~full
                shapes.append({"category": category, "full": full, "visible": full.copy()})
                break
    for s in shapes:
        s["polygons"] = mask_to_polygons(s["visible"])
        if s["polygons"] is None:
            return None
        decoded = segmentation_to_mask(s["polygons"], size, size)
        if not np.array_equal(decoded.astype(bool), s["visible"]):
            return None
    return shapes


def render_image(seed: int, split: str, index: int, size: int) -> Tuple[np.ndarray, List[dict]]:
    """Image `index` of `split`: (HxWx3 uint8 RGB, [{"category_id" (0-based), "bbox" xywh,
    "segmentation" polygons, "area"}]). Depends only on its arguments."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    shapes = None
    while shapes is None:
        shapes = _place_shapes(rng, size)
    img = _background(rng, size)
    mean = img.reshape(-1, 3).mean(0)
    annotations = []
    for s in shapes:
        colour = _shape_colour(rng, mean)
        shade = rng.normal(0, 6, size=(size, size, 3))
        img[s["full"]] = (colour + shade)[s["full"]]
        ys, xs = np.nonzero(s["visible"])
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        annotations.append({"category_id": s["category"], "bbox": [float(x0), float(y0), float(x1 - x0),
                            float(y1 - y0)], "segmentation": s["polygons"], "area": float(s["visible"].sum())})
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), annotations


def _write_split(out: str, split: str, num_images: int, size: int, seed: int) -> None:
    """Write one split's PNGs and its instances json under `out`."""
    os.makedirs(os.path.join(out, split), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        pixels, annos = render_image(seed, split, i, size)
        file_name = f"{i:06d}.png"
        Image.fromarray(pixels, "RGB").save(os.path.join(out, split, file_name))
        images.append({"id": i + 1, "file_name": file_name, "height": size, "width": size})
        for a in annos:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0,
                                **a, "category_id": a["category_id"] + 1})
    data = {"info": {"description": "gn_det synthetic shapes", "split": split, "seed": seed, "size": size,
                     "num_images": num_images},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CATEGORIES)]}
    with open(os.path.join(out, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump(data, f)


def is_complete(root: str) -> bool:
    """True when `root` holds both splits' jsons (the last files a generation writes)."""
    return all(os.path.isfile(os.path.join(root, "annotations", f"instances_{s}.json")) for s in SPLITS)


def generate_shapes_dataset(out: str, num_train: int = DEFAULTS["num_train"], num_val: int = DEFAULTS["num_val"],
                            size: int = DEFAULTS["size"], seed: int = DEFAULTS["seed"],
                            overwrite: bool = False) -> str:
    """Write the dataset to `out` atomically (a temporary sibling folder renamed into place)."""
    out = os.path.abspath(os.fspath(out))
    for key, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1), ("size", size, 32)):
        if value < low:
            raise ValueError(f"shapes: {key} must be >= {low}, got {value}")
    if os.path.exists(out) and not overwrite and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"'{out}' already exists; remove it, choose another --out, or pass --overwrite")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        os.makedirs(os.path.join(tmp, "annotations"))
        for split, n in (("train", num_train), ("val", num_val)):
            _write_split(tmp, split, n, size, seed)
        os.chmod(tmp, 0o755)
        _move_into_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(f"Wrote shapes dataset to '{out}' ({num_train} train, {num_val} val, {size} px, seed {seed})")
    return out


def _move_into_place(tmp: str, out: str, overwrite: bool) -> None:
    """Rename tmp to out. With overwrite, an existing out is set aside first and removed after;
    without, the rename fails if another process created out meanwhile (its dataset is kept)."""
    old = None
    if os.path.exists(out) and overwrite:
        if os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)
        else:
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
            os.rmdir(old)
            os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure_shapes_dataset(root: str, num_train: int = DEFAULTS["num_train"], num_val: int = DEFAULTS["num_val"],
                          size: int = DEFAULTS["size"], seed: int = DEFAULTS["seed"]) -> str:
    """Generate the dataset at `root` unless a complete one is there already; returns `root`.
    Safe when several processes call it at once (each writes its own temporary folder; the first
    rename wins)."""
    root = os.fspath(root)
    if is_complete(root):
        return root
    try:
        generate_shapes_dataset(root, num_train, num_val, size, seed, overwrite=False)
    except (FileExistsError, OSError):
        if not is_complete(root):  # lost a race to another process, which must have finished
            raise
    return root


def register_shapes(root: str, names: Sequence[str] = ("shapes_train", "shapes_val")) -> None:
    """Register shapes_train / shapes_val for the dataset at `root` (replacing earlier registrations
    of those names). Loading generates the dataset with the defaults if `root` has none yet."""
    root = os.fspath(root)
    for name, split in zip(names, SPLITS):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        json_file = os.path.join(root, "annotations", f"instances_{split}.json")
        image_root = os.path.join(root, split)
        DatasetCatalog.register(name, lambda j=json_file, r=image_root, n=name:
                                (ensure_shapes_dataset(root), load_coco_json(j, r, n))[1])
        MetadataCatalog.get(name).set(
            json_file=json_file, image_root=image_root, thing_classes=list(CATEGORIES),
            thing_dataset_id_to_contiguous_id={k + 1: k for k in range(len(CATEGORIES))})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: generate a shapes dataset."""
    parser = argparse.ArgumentParser(prog="python -m gn_det.data.shapes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--num-train", type=int, default=DEFAULTS["num_train"],
                        help="train images (default %(default)s)")
    parser.add_argument("--num-val", type=int, default=DEFAULTS["num_val"], help="val images (default %(default)s)")
    parser.add_argument("--size", type=int, default=DEFAULTS["size"], help="image side in pixels (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                        help="same seed, same dataset (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    args = parser.parse_args(argv)
    try:
        out = generate_shapes_dataset(args.out, args.num_train, args.num_val, args.size, args.seed, args.overwrite)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: train/ ({args.num_train} images), val/ ({args.num_val} images), annotations/")
    return 0

