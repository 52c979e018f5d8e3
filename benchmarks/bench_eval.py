"""COCO evaluation time of the two backends on the same results: pycocotools' COCOeval and
faster-coco-eval's COCOeval_faster (TEST.EVAL_BACKEND; gn_det/evaluation/backends.py).

A synthetic instance-segmentation set, made deterministically: --images images of 480x640 with 3-10
objects each (10 categories, polygon masks), and Mask R-CNN-like results: every object found (a
jittered box and polygon, sometimes the wrong class) plus low-scoring false positives, 100 detections
per image (DETECTIONS_PER_IMAGE). For each backend and task (bbox, segm) the best of --repeat runs of
loadRes + evaluate + accumulate + summarize, the ground truth's indexing timed apart; then the speed-up
and the largest difference of any COCOeval summary number or per-category AP between the backends.
Target (issue 18): >= 3x, AP the same to 1e-4.

    python benchmarks/bench_eval.py                    # 300 images, best of 3
    python benchmarks/bench_eval.py --images 500 --repeat 5
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.evaluation.backends import (EVAL_BACKENDS, FASTER_COCO_EVAL, coco_from_dict,  # noqa: E402
                                        faster_coco_eval_installed)
from gn_det.evaluation.scoring import score  # noqa: E402
from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "bench_eval.py"
HEIGHT, WIDTH, NUM_CATEGORIES, DETS_PER_IMAGE = 480, 640, 10, 100


def _polygon(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> List[float]:
    """An ellipse-like polygon of 12 points inside the box, its radii jittered."""
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    r = rng.uniform(0.8, 1.0, size=12)
    xs = np.clip(x + w / 2 + np.cos(angles) * w / 2 * r, 0, WIDTH - 1)
    ys = np.clip(y + h / 2 + np.sin(angles) * h / 2 * r, 0, HEIGHT - 1)
    return [float(v) for pair in zip(xs, ys) for v in pair]


def synthetic_set(num_images: int, seed: int = 0) -> Tuple[dict, List[dict]]:
    """(COCO ground truth dict, results entries with polygon segmentations) of ``num_images`` images."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": WIDTH, "height": HEIGHT, "file_name": f"{image_id:06d}.jpg"})
        objects = []
        for _ in range(int(rng.integers(3, 11))):
            w, h = rng.uniform(12, 200, size=2)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            cat = int(rng.integers(1, NUM_CATEGORIES + 1))
            poly = _polygon(rng, x, y, w, h)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": float(w * h * 0.75), "iscrowd": 0, "segmentation": [poly]})
            objects.append((x, y, w, h, cat))
        for x, y, w, h, cat in objects:  # found, more or less well, sometimes as another class
            dx, dy = rng.normal(0, 0.08, size=2) * (w, h)
            sw, sh = np.exp(rng.normal(0, 0.08, size=2))
            bx, by, bw, bh = x + dx, y + dy, w * sw, h * sh
            label = cat if rng.uniform() < 0.85 else int(rng.integers(1, NUM_CATEGORIES + 1))
            results.append({"image_id": image_id, "category_id": label, "bbox": [bx, by, bw, bh],
                            "score": float(rng.uniform(0.5, 1.0)), "segmentation": [_polygon(rng, bx, by, bw, bh)]})
        for _ in range(DETS_PER_IMAGE - len(objects)):  # false positives, scoring low
            w, h = rng.uniform(8, 160, size=2)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            results.append({"image_id": image_id, "category_id": int(rng.integers(1, NUM_CATEGORIES + 1)),
                            "bbox": [x, y, w, h], "score": float(rng.uniform(0.0, 0.6)),
                            "segmentation": [_polygon(rng, x, y, w, h)]})
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in range(1, NUM_CATEGORIES + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, _to_rle(results)


def _to_rle(results: List[dict]) -> List[dict]:
    """Segmentations as compressed RLE strings, as COCOEvaluator writes a model's masks."""
    import pycocotools.mask as mask_util

    for r in results:
        rle = mask_util.merge(mask_util.frPyObjects(r["segmentation"], HEIGHT, WIDTH))
        r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("utf-8")}
    return results


def time_backend(backend: str, gt: dict, results: List[dict], repeat: int) -> Dict[str, object]:
    """Best-of-``repeat`` seconds of indexing the ground truth and of scoring each task, and the metrics."""
    out: Dict[str, object] = {"index_s": float("inf")}
    for _ in range(repeat):
        start = time.perf_counter()
        coco_gt = coco_from_dict(gt, backend)
        out["index_s"] = min(out["index_s"], time.perf_counter() - start)
    for task in ("bbox", "segm"):
        best, scored = float("inf"), None
        for _ in range(repeat):
            start = time.perf_counter()
            scored = score(coco_gt, results, task, backend)
            best = min(best, time.perf_counter() - start)
        out[f"{task}_s"], out[f"{task}_metrics"] = best, scored.metrics()
    return out


def parse_args(argv=None) -> argparse.Namespace:
    """--images, --repeat, --seed."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="images in the synthetic set (default 300)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Time both backends, print the table, the speed-up and the largest AP difference."""
    args = parse_args(argv)
    if args.images < 1 or args.repeat < 1:
        raise UserError(f"--images and --repeat must be >= 1, got {args.images} and {args.repeat}")
    if not faster_coco_eval_installed():
        raise UserError("faster-coco-eval is not installed: pip install -e '.[faster-coco-eval]' to compare the backends")
    gt, results = synthetic_set(args.images, args.seed)
    print(f"{args.images} images, {len(gt['annotations'])} objects, {len(results)} results (masks as RLE), "
          f"best of {args.repeat}; {os.cpu_count()} CPU(s)")
    timings = {b: time_backend(b, gt, results, args.repeat) for b in EVAL_BACKENDS}
    print(f"{'backend':<18}{'index GT (s)':>14}{'bbox (s)':>10}{'segm (s)':>10}{'total (s)':>11}")
    totals = {}
    for backend, t in timings.items():
        totals[backend] = t["index_s"] + t["bbox_s"] + t["segm_s"]
        print(f"{backend:<18}{t['index_s']:>14.3f}{t['bbox_s']:>10.3f}{t['segm_s']:>10.3f}{totals[backend]:>11.3f}")
    ref, fast = timings[EVAL_BACKENDS[0]], timings[FASTER_COCO_EVAL]
    diffs = [abs(ref[f"{task}_metrics"][k] - fast[f"{task}_metrics"][k]) for task in ("bbox", "segm")
             for k in ref[f"{task}_metrics"] if not np.isnan(ref[f"{task}_metrics"][k])]
    for task in ("bbox", "segm"):
        print(f"{task}: AP {ref[f'{task}_metrics']['AP']:.4f} (pycocotools) vs {fast[f'{task}_metrics']['AP']:.4f} "
              f"(faster-coco-eval); speed-up {ref[f'{task}_s'] / fast[f'{task}_s']:.2f}x")
    print(f"speed-up, total: {totals[EVAL_BACKENDS[0]] / totals[FASTER_COCO_EVAL]:.2f}x (target >= 3x); "
          f"largest AP difference over {len(diffs)} numbers: {max(diffs):.2e} percent points (target: 1e-4 on "
          "COCOeval's 0-1 scale, 0.01 points)")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(PROG, main))
