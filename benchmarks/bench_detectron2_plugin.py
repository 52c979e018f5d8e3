#!/usr/bin/env python
"""Seconds per training step of detectron2's own Mask R-CNN R-50-FPN with gn_det's SN through the plugin
(gn_det.detectron2) against the same model with detectron2's GN, measured one after the other in one run.

The recipe is detectron2's Misc/mask_rcnn_R_50_FPN_3x_gn cell (configs/detectron2/Base-RCNN-FPN.yaml, R-50,
4conv1fc box head, the norm in ResNet, FPN, box and mask heads) with MODEL.RESNETS.NORM etc. set to each
``--norms`` entry; the input is bench_step's (one 3x512x640 image, 3 boxes and masks, 80 classes, random
init, 2 threads, forward + backward, no optimizer), after ``--warmup`` steps, mean +- std of ``--iters``.
Needs detectron2 installed (it says so and exits 2 otherwise).

    python benchmarks/bench_detectron2_plugin.py [--norms GN SN] [--iters 5] [KEY VALUE ...]
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Dict, List, Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import HEIGHT, NUM_CLASSES, WIDTH, synthetic_sample  # noqa: E402

from gn_det.config import CONFIGS_DIR  # noqa: E402
from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "bench_detectron2_plugin.py"
NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")


def _cfg(norm: str, overrides: Sequence[str]):
    from detectron2.config import get_cfg
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS_DIR / "detectron2" / "Base-RCNN-FPN.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.MASK_ON", "True", "MODEL.RESNETS.DEPTH", "50",
                         "MODEL.RESNETS.STRIDE_IN_1X1", "False", "MODEL.BACKBONE.FREEZE_AT", "0",
                         "MODEL.ROI_BOX_HEAD.NUM_CONV", "4", "MODEL.ROI_BOX_HEAD.NUM_FC", "1",
                         "MODEL.ROI_HEADS.NUM_CLASSES", str(NUM_CLASSES)]
                        + [x for key in NORM_KEYS for x in (key, norm)] + list(overrides))
    return cfg


def _batch():
    from detectron2.structures import BitMasks, Boxes, Instances
    image, target = synthetic_sample()
    instances = Instances((HEIGHT, WIDTH))
    instances.gt_boxes = Boxes(target["boxes"])
    instances.gt_classes = target["labels"] - 1  # detectron2's classes are 0..K-1
    instances.gt_masks = BitMasks(target["masks"].bool())
    return [{"image": image, "instances": instances, "height": HEIGHT, "width": WIDTH}]


def time_steps(norm: str, overrides: Sequence[str], warmup: int, iters: int) -> Dict[str, float]:
    """Build detectron2's model with ``norm`` everywhere and time forward + backward steps."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage
    torch.manual_seed(0)
    model = build_model(_cfg(norm, overrides))
    model.train()
    batch = _batch()
    times: List[float] = []
    with EventStorage(0):
        for step in range(warmup + iters):
            start = time.perf_counter()
            losses = model(batch)
            sum(losses.values()).backward()
            model.zero_grad(set_to_none=True)
            if step >= warmup:
                times.append(time.perf_counter() - start)
    norms = sum(type(m).__name__ in ("GroupNorm", "SwitchNorm2d", "SyncSwitchNorm2d") for m in model.modules())
    return {"mean": statistics.mean(times), "std": statistics.stdev(times) if len(times) > 1 else 0.0,
            "norm_type": type(model.backbone.bottom_up.res2[0].conv1.norm).__name__, "norms": norms}


def main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--norms", nargs="+", default=["GN", "SN"], help="norm names, the first is the baseline")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides of the detectron2 config")
    args = parser.parse_args(argv)
    try:
        import gn_det.detectron2  # noqa: F401
    except ImportError as error:
        raise UserError(str(error)) from None
    torch.set_num_threads(args.threads)
    results = {}
    for norm in args.norms:
        results[norm] = time_steps(norm, args.opts, args.warmup, args.iters)
    base = results[args.norms[0]]["mean"]
    print(f"detectron2 Mask R-CNN R-50-FPN (4conv1fc), one {HEIGHT}x{WIDTH} image, {args.threads} threads, "
          f"forward + backward, mean +- std of {args.iters} after {args.warmup} warm-up steps:")
    for norm, r in results.items():
        print(f"  {norm:>6} ({r['norms']} x {r['norm_type']}): {r['mean']:.2f} +- {r['std']:.2f} s/step "
              f"({r['mean'] / base:.2f}x {args.norms[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(PROG, main, sys.argv[1:]))
