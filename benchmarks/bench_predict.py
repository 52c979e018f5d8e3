#!/usr/bin/env python
"""Seconds per image of ``DefaultPredictor`` on one 800x1067 image, gn_det vs detectron2 with the same weights.

For each recipe (FrozenBN 1x and GN 3x R-50-FPN Mask R-CNN, 80 classes) a gn_det model is built with a
fixed random init made well-conditioned (see ``write_weights``), saved as a gn_det
checkpoint, and loaded by gn_det's ``DefaultPredictor`` (MODEL.WEIGHTS) and by detectron2's, built from
detectron2's own zoo config of that recipe with the weights converted by gn_det's checkpoint code
(``gn_det.detectron2.checkpoint.load_into_detectron2``). Both run on the same BGR image; the score
threshold is 0 on both sides so that a random model still sends its 100 detections through the mask head
(as a trained model does), and the script reports the median s/image of each, their ratio (target <= 0.85)
and how well the detections match (same count, boxes, scores, classes, mask IoU).

Without detectron2 installed it times gn_det alone and says so.

    python benchmarks/bench_predict.py [--iters 5] [--threads 2] [--recipes frozenbn gn] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.config import get_cfg, resolve_config_path  # noqa: E402
from gn_det.utils.cli import ArgumentParser, run_tool  # noqa: E402

PROG = "bench_predict.py"
HEIGHT, WIDTH = 800, 1067
RECIPES = {  # name: (gn_det recipe, detectron2 zoo config)
    "frozenbn": ("mask_rcnn_R_50_FPN_1x_frozenbn.yaml", "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"),
    "gn": ("mask_rcnn_R_50_FPN_3x_gn.yaml", "Misc/mask_rcnn_R_50_FPN_3x_gn.yaml"),
}
COMMON = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", 80, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
          "INPUT.MIN_SIZE_TEST", HEIGHT, "INPUT.MAX_SIZE_TEST", 1333, "DATASETS.TEST", ()]


def test_image(seed: int = 0) -> np.ndarray:
    """A smooth HxWx3 uint8 BGR image with noise (structure for the RPN to respond to)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH] / max(HEIGHT, WIDTH)
    base = np.stack([128 + 90 * np.sin(9 * xx + c) * np.cos(7 * yy - 2 * c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def gn_det_cfg(recipe: str):
    cfg = get_cfg()
    cfg.merge_from_file(resolve_config_path(recipe))
    cfg.merge_from_list(list(COMMON))
    return cfg


def write_weights(cfg, path: str, image: np.ndarray, seed: int = 0) -> None:
    """A random model of ``cfg`` saved as a gn_det checkpoint, made well-conditioned like a trained one: norm
    affines drawn at random, and each FrozenBN's running statistics set, layer after layer, to the mean and
    variance of its input on ``image`` (a data-dependent init), so activations stay O(1) through the 50 layers
    (with random statistics they reach 1e4 and the top-k proposals hinge on rounding); box-delta weights
    zeroed (boxes stay at their proposals) and class-score weights scaled down (spread scores)."""
    from gn_det.engine import DefaultPredictor
    from gn_det.layers import FrozenBatchNorm2d

    torch.manual_seed(seed)
    predictor = DefaultPredictor(cfg)  # MODEL.WEIGHTS empty: random init
    model = predictor.model
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("norm.weight", "bn.weight")) or (name.endswith(".weight") and t.dim() == 1):
                t.uniform_(0.5, 1.5, generator=g)
            elif name.endswith(("norm.bias", "bn.bias")) or (name.endswith(".bias") and "norm" in name):
                t.uniform_(-0.2, 0.2, generator=g)
            elif name.endswith("bbox_pred.weight"):
                t.zero_()
            elif name.endswith("cls_score.weight"):
                t.mul_(1e-3)

    def calibrate(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    with torch.no_grad():
        predictor(image)
    for h in hooks:
        h.remove()
    torch.save({"model": model.state_dict()}, path)


def detectron2_predictor(zoo_config: str, ours, weights: str):
    """detectron2's DefaultPredictor of its zoo config with our input convention and test settings."""
    import detectron2
    from detectron2.config import get_cfg as d2_get_cfg
    from detectron2.engine import DefaultPredictor as D2Predictor

    from gn_det.detectron2.checkpoint import load_into_detectron2

    cfg = d2_get_cfg()
    # the zoo's files ship inside the package (detectron2.model_zoo needs pkg_resources, gone from recent setuptools)
    cfg.merge_from_file(os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs", zoo_config))
    cfg.merge_from_list(list(COMMON) + [
        "MODEL.WEIGHTS", "", "INPUT.FORMAT", ours.INPUT.FORMAT, "MODEL.PIXEL_MEAN", list(ours.MODEL.PIXEL_MEAN),
        "MODEL.PIXEL_STD", list(ours.MODEL.PIXEL_STD), "MODEL.RESNETS.STRIDE_IN_1X1", ours.MODEL.RESNETS.STRIDE_IN_1X1,
        "MODEL.ROI_HEADS.NMS_THRESH_TEST", ours.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        "TEST.DETECTIONS_PER_IMAGE", ours.TEST.DETECTIONS_PER_IMAGE if "DETECTIONS_PER_IMAGE" in ours.TEST
        else ours.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE])
    predictor = D2Predictor(cfg)
    result = load_into_detectron2(predictor.model, weights)
    if result.missing:
        raise RuntimeError(f"detectron2 model keys left at init: {result.missing[:5]}")
    return predictor


def time_calls(fn, image: np.ndarray, iters: int, warmup: int = 1):
    out = None
    for _ in range(warmup):
        out = fn(image)
    times: List[float] = []
    for _ in range(iters):
        start = time.perf_counter()
        out = fn(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def match(ours: Dict[str, torch.Tensor], theirs) -> Dict[str, float]:
    """How the two detection sets agree. Each of our detections is paired with detectron2's detection of the
    same class whose box overlaps it most (score order alone is ambiguous: random weights give tied scores);
    reported: the share paired at box IoU >= 0.99, the largest box and score differences of the pairs, and
    the mean mask IoU of the pairs (masks > 0.5)."""
    from torchvision.ops import box_iou

    inst = theirs["instances"].to("cpu")
    res: Dict[str, float] = {"detections": len(ours["scores"]), "detections_detectron2": len(inst)}
    if len(ours["scores"]) == 0 or len(inst) == 0:
        return res
    iou = box_iou(ours["boxes"], inst.pred_boxes.tensor)
    iou[(ours["labels"][:, None] - 1) != inst.pred_classes[None, :]] = -1  # pair within a class only
    best, j = iou.max(dim=1)
    res["matched"] = float((best >= 0.99).float().mean())
    res["max_box_diff_px"] = float((ours["boxes"] - inst.pred_boxes.tensor[j]).abs().max())
    res["max_score_diff"] = float((ours["scores"] - inst.scores[j]).abs().max())
    if "masks" in ours and inst.has("pred_masks"):
        a = ours["masks"][:, 0] > 0.5
        b = inst.pred_masks[j]
        inter = (a & b).flatten(1).sum(1).float()
        union = (a | b).flatten(1).sum(1).float().clamp(min=1)
        res["mean_mask_iou"] = float((inter / union).mean())
    return res


def bench_recipe(name: str, iters: int, tmp: str, with_d2: bool) -> Dict[str, object]:
    from gn_det.engine import DefaultPredictor

    recipe, zoo = RECIPES[name]
    cfg = gn_det_cfg(recipe)
    weights = os.path.join(tmp, f"{name}.pth")
    image = test_image()
    write_weights(cfg, weights, image)
    cfg.MODEL.WEIGHTS = weights
    ours = DefaultPredictor(cfg)
    with torch.no_grad():
        t_ours, out_ours = time_calls(ours, image, iters)
    row: Dict[str, object] = {"recipe": recipe, "s_per_image": t_ours, "iters": iters}
    if with_d2:
        d2 = detectron2_predictor(zoo, cfg, weights)
        t_d2, out_d2 = time_calls(d2, image, iters)
        row.update(detectron2_config=zoo, detectron2_s_per_image=t_d2, ratio=t_ours / t_d2, **match(out_ours, out_d2))
    return row


def detectron2_available() -> bool:
    try:
        import detectron2  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv: Optional[List[str]] = None) -> List[Dict[str, object]]:
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=5, help="timed images per predictor (median), after 1 warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["frozenbn", "gn"])
    parser.add_argument("--no-detectron2", action="store_true", help="time gn_det only")
    parser.add_argument("--json", action="store_true", help="print one JSON line per recipe")
    args = parser.parse_args(argv)
    if args.iters < 1 or args.threads < 1:
        parser.error("--iters and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    with_d2 = not args.no_detectron2 and detectron2_available()
    if not with_d2 and not args.no_detectron2:
        print("detectron2 is not installed: timing gn_det only (pip install the wheel in ../shared/wheels/ "
              "for the side-by-side figures)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes:
            row = bench_recipe(name, args.iters, tmp, with_d2)
            rows.append(row)
            if args.json:
                print(json.dumps(row))
            elif with_d2:
                print(f"{row['recipe']}: gn_det {row['s_per_image']:.3f} s/image, detectron2 "
                      f"{row['detectron2_s_per_image']:.3f} s/image, ratio {row['ratio']:.2f} (target <= 0.85); "
                      f"detections {row['detections']} vs {row['detections_detectron2']}, {row.get('matched', 0):.0%} paired "
                      f"(same class, box IoU >= 0.99), max box diff {row.get('max_box_diff_px', float('nan')):.2g} px, "
                      f"max score diff {row.get('max_score_diff', float('nan')):.2g}, "
                      f"mean mask IoU {row.get('mean_mask_iou', float('nan')):.3f} "
                      f"[{HEIGHT}x{WIDTH}, median of {args.iters}, {args.threads} threads]")
            else:
                print(f"{row['recipe']}: gn_det {row['s_per_image']:.3f} s/image [{HEIGHT}x{WIDTH}, median of "
                      f"{args.iters}, {args.threads} threads]")
    return rows


if __name__ == "__main__":
    sys.exit(run_tool(PROG, main))
