#!/usr/bin/env python
"""Seconds per training step (forward + backward, no optimizer) of a recipe on CPU.

The input is the one detectron2's CPU figures were taken on (issue 4, Speed): one 3x512x640 image
with 3 ground-truth boxes and masks, 80 classes, random-init model, 2 threads, 2 warm-up steps.
The model runs on the image as given (512x640: the loader resizes, not the model, as in detectron2);
INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN are set to 512 / 640 to record that size in the config.

    python benchmarks/bench_step.py --config mask_rcnn_R_50_FPN_3x_frozenbn.yaml [--iters 5] [KEY VALUE ...]
    python benchmarks/bench_step.py --torchvision-reference   # torchvision's maskrcnn_resnet50_fpn, same input
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from typing import Dict, List, Optional

import torch

from gn_det.config import get_cfg, resolve_config_path
from gn_det.modeling import build_model

HEIGHT, WIDTH, NUM_GT, NUM_CLASSES = 512, 640, 3, 80


def synthetic_sample(seed: int = 0):
    """One 0-255 image (3, 512, 640) and a target with 3 boxes, labels in 1..80 and box-filling ellipse masks."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, HEIGHT, WIDTH, generator=g) * 255
    x1 = torch.randint(0, WIDTH // 2, (NUM_GT,), generator=g).float()
    y1 = torch.randint(0, HEIGHT // 2, (NUM_GT,), generator=g).float()
    w = torch.randint(32, WIDTH // 2, (NUM_GT,), generator=g).float()
    h = torch.randint(32, HEIGHT // 2, (NUM_GT,), generator=g).float()
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], dim=1)
    ys, xs = torch.meshgrid(torch.arange(HEIGHT).float(), torch.arange(WIDTH).float(), indexing="ij")
    masks = torch.stack([(((xs - (b[0] + b[2]) / 2) / ((b[2] - b[0]) / 2)) ** 2
                          + ((ys - (b[1] + b[3]) / 2) / ((b[3] - b[1]) / 2)) ** 2 <= 1) for b in boxes]).to(torch.uint8)
    labels = torch.randint(1, NUM_CLASSES + 1, (NUM_GT,), generator=g)
    return image, {"boxes": boxes, "labels": labels, "masks": masks}


def torchvision_reference() -> torch.nn.Module:
    """torchvision's own Mask R-CNN R-50-FPN as maskrcnn_resnet50_fpn builds it for pretrained weights (FrozenBN,
    stem + res2 frozen, 2fc head), random init, 81 outputs, sized to keep the 512x640 input: the same-machine
    reference for the issue's 4.71 s figure (without weights the torchvision builder would switch to BN)."""
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    return MaskRCNN(backbone, num_classes=NUM_CLASSES + 1, min_size=HEIGHT, max_size=WIDTH)


def bench(model: torch.nn.Module, iters: int, warmup: int = 2) -> Dict[str, float]:
    """Mean/stdev s/step, forward and backward means, peak RSS (MB) and parameter counts."""
    model.train()
    image, target = synthetic_sample()
    fwd: List[float] = []
    bwd: List[float] = []
    cpu: List[float] = []  # process CPU seconds per step: less sensitive than wall time to other load
    for step in range(warmup + iters):
        model.zero_grad(set_to_none=True)
        c0, t0 = time.process_time(), time.perf_counter()
        losses = model([image], [{k: v.clone() for k, v in target.items()}])
        t1 = time.perf_counter()
        sum(losses.values()).backward()
        t2, c2 = time.perf_counter(), time.process_time()
        if step >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            cpu.append(c2 - c0)
    total = [f + b for f, b in zip(fwd, bwd)]
    params = list(model.parameters())
    return {
        "s_per_step": statistics.mean(total),
        "s_per_step_stdev": statistics.stdev(total) if len(total) > 1 else 0.0,
        "forward_s": statistics.mean(fwd),
        "backward_s": statistics.mean(bwd),
        "cpu_s_per_step": statistics.mean(cpu),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,  # ru_maxrss is KiB on Linux
        "params_m": sum(p.numel() for p in params) / 1e6,
        "trainable_params_m": sum(p.numel() for p in params if p.requires_grad) / 1e6,
        "iters": iters,
    }


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Parse args, build the recipe with 80 classes at 512x640, time it and print one line (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="", help="YAML recipe: a path or a file name in configs/")
    parser.add_argument("--torchvision-reference", action="store_true",
                        help="time torchvision's maskrcnn_resnet50_fpn (FrozenBN) instead of a recipe")
    parser.add_argument("--iters", type=int, default=5, help="timed steps after the 2 warm-up steps")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)
    if bool(args.config) == args.torchvision_reference:
        parser.error("give exactly one of --config FILE and --torchvision-reference")
    if args.iters < 1:
        parser.error(f"--iters must be >= 1, got {args.iters}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.torchvision_reference:
        model, name = torchvision_reference(), "torchvision_maskrcnn_resnet50_fpn"
    else:
        cfg = get_cfg()
        cfg.merge_from_file(resolve_config_path(args.config))
        cfg.merge_from_list(list(args.opts) + [
            "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", NUM_CLASSES,
            "INPUT.MIN_SIZE_TRAIN", (HEIGHT,), "INPUT.MAX_SIZE_TRAIN", WIDTH,
        ])
        model, name = build_model(cfg), args.config
    result = bench(model, args.iters)
    result["config"] = name
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{name}: {result['s_per_step']:.2f} +- {result['s_per_step_stdev']:.2f} s/step "
              f"(forward {result['forward_s']:.2f} s, backward {result['backward_s']:.2f} s), "
              f"peak RSS {result['peak_rss_mb']:.0f} MB, params {result['params_m']:.1f} M "
              f"({result['trainable_params_m']:.1f} M trainable), {args.iters} steps, {args.threads} threads, "
              f"{result['cpu_s_per_step']:.2f} CPU s/step")
    return result


if __name__ == "__main__":
    main()
