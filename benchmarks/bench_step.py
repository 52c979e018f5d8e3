#!/usr/bin/env python
"""Seconds per training step of a recipe: on CPU (forward + backward) or on a GPU (a full iteration).

CPU (default): the input detectron2's CPU figures were taken on (issue 4, Speed): one 3x512x640 image
with 3 ground-truth boxes and masks, 80 classes, random-init model, 2 threads, 2 warm-up steps, no
optimizer. The model runs on the image as given (the loader resizes, not the model, as in detectron2);
INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN are set to the image size to record that size in the config.

CUDA (``--device cuda``, issue 10): a full iteration (forward, backward, SGD step) with 2 images per
GPU at 800x1333, in float32 or with ``--amp`` (float16 autocast + GradScaler; ``--amp-dtype bfloat16``
without a scaler), reporting the median s/iter, the peak allocated memory, and the share of the wall
time the GPU is busy: the union of the profiler's CUDA kernel (and copy) intervals over a few extra
iterations divided by their wall time. ``--profile-table FILE`` writes the profiler's kernel table.

    python benchmarks/bench_step.py --config mask_rcnn_R_50_FPN_3x_frozenbn.yaml [--iters 5] [KEY VALUE ...]
    python benchmarks/bench_step.py --torchvision-reference   # torchvision's maskrcnn_resnet50_fpn, same input
    python benchmarks/bench_step.py --device cuda --amp --config mask_rcnn_R_50_FPN_1x_gn.yaml --json
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from gn_det.config import get_cfg, resolve_config_path
from gn_det.modeling import build_model
from gn_det.utils.cli import ArgumentParser, run_tool
from gn_det.utils.device import synchronizer, use_device

PROG = "bench_step.py"

HEIGHT, WIDTH, NUM_GT, NUM_CLASSES = 512, 640, 3, 80
CUDA_HEIGHT, CUDA_WIDTH, CUDA_IMAGES = 800, 1333, 2  # detectron2's training size, 2 images per GPU (issue 10)


def synthetic_sample(seed: int = 0, height: int = HEIGHT, width: int = WIDTH):
    """One 0-255 image (3, height, width) and a target with 3 boxes, labels in 1..80 and box-filling ellipse masks."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, height, width, generator=g) * 255
    x1 = torch.randint(0, width // 2, (NUM_GT,), generator=g).float()
    y1 = torch.randint(0, height // 2, (NUM_GT,), generator=g).float()
    w = torch.randint(min(32, width // 4), width // 2, (NUM_GT,), generator=g).float()
    h = torch.randint(min(32, height // 4), height // 2, (NUM_GT,), generator=g).float()
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], dim=1)
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    masks = torch.stack([(((xs - (b[0] + b[2]) / 2) / ((b[2] - b[0]) / 2)) ** 2
                          + ((ys - (b[1] + b[3]) / 2) / ((b[3] - b[1]) / 2)) ** 2 <= 1) for b in boxes]).to(torch.uint8)
    labels = torch.randint(1, NUM_CLASSES + 1, (NUM_GT,), generator=g)
    return image, {"boxes": boxes, "labels": labels, "masks": masks}


def torchvision_reference(height: int = HEIGHT, width: int = WIDTH) -> torch.nn.Module:
    """torchvision's own Mask R-CNN R-50-FPN as maskrcnn_resnet50_fpn builds it for pretrained weights (FrozenBN,
    stem + res2 frozen, 2fc head), random init, 81 outputs, sized to keep the 512x640 input: the same-machine
    reference for the issue's 4.71 s figure (without weights the torchvision builder would switch to BN)."""
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    return MaskRCNN(backbone, num_classes=NUM_CLASSES + 1, min_size=height, max_size=width)


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


def busy_time(intervals: Sequence[Tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals: time the GPU ran at least one kernel or copy."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def _device_events(prof) -> List:
    from torch.autograd import DeviceType

    return [e for e in prof.events() if e.device_type == DeviceType.CUDA]


def kernel_table(prof, rows: int = 25) -> str:
    """The profiler's per-kernel table, sorted by GPU time (the sort key's name differs across torch releases)."""
    averages = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            return averages.table(sort_by=key, row_limit=rows)
        except (AttributeError, KeyError, ValueError):
            continue
    return averages.table(row_limit=rows)


def bench_iteration(model: torch.nn.Module, device: torch.device, num_images: int, height: int, width: int,
                    iters: int, warmup: int = 3, amp_dtype: Optional[torch.dtype] = None, profile_iters: int = 3,
                    profile_table: str = "") -> Dict[str, float]:
    """A full training iteration (forward, backward, SGD step) on ``num_images`` images of height x width.

    Median s/iter over ``iters`` synchronized iterations after ``warmup``; peak memory (CUDA: allocator
    peak of the timed iterations; CPU: peak RSS); on CUDA the busy share of ``profile_iters`` profiled
    iterations (union of CUDA kernel/copy intervals / wall time; profiling adds some host overhead, so
    the share is a lower bound). float16 uses a GradScaler, bfloat16 none, as SOLVER.AMP does.
    """
    model.train()
    cuda = device.type == "cuda"
    samples = [synthetic_sample(i, height, width) for i in range(num_images)]
    images = [img.to(device) for img, _ in samples]
    targets = [{k: v.to(device) for k, v in t.items()} for _, t in samples]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4)  # tiny lr: stays finite
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    sync = synchronizer(device)  # waits on the measured device, not the current one

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
            losses = model(images, [dict(t) for t in targets])
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times: List[float] = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    result = {
        "s_per_iter": statistics.median(times),
        "s_per_iter_stdev": statistics.stdev(times) if len(times) > 1 else 0.0,
        "peak_mem_mb": (torch.cuda.max_memory_allocated(device) if cuda
                        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0) / 2**20,
        "gpu_busy": None,
    }
    if cuda and profile_iters > 0:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            for _ in range(profile_iters):
                step()
            sync()
            wall_us = (time.perf_counter() - start) * 1e6
        events = _device_events(prof)  # none if this torch's profiler recorded no kernels: no figure
        if events:
            result["gpu_busy"] = busy_time([(e.time_range.start, e.time_range.end) for e in events]) / wall_us
        if profile_table:
            with open(profile_table, "w", encoding="utf-8") as f:
                f.write(kernel_table(prof))
    return result


def build_for_bench(args, height: int, width: int) -> Tuple[torch.nn.Module, str]:
    """The model to time: torchvision's reference or the recipe with 80 classes, sized to keep the input."""
    if args.torchvision_reference:
        return torchvision_reference(height, width).to(args.device), "torchvision_maskrcnn_resnet50_fpn"
    cfg = get_cfg()
    cfg.merge_from_file(resolve_config_path(args.config))
    cfg.merge_from_list(list(args.opts) + [
        "MODEL.DEVICE", args.device, "MODEL.ROI_HEADS.NUM_CLASSES", NUM_CLASSES,
        "INPUT.MIN_SIZE_TRAIN", (height,), "INPUT.MAX_SIZE_TRAIN", width,
    ])
    return build_model(cfg), args.config


def _amp_dtype(args) -> Optional[torch.dtype]:
    if not args.amp:
        return None
    if args.amp_dtype:
        return {"float16": torch.float16, "bfloat16": torch.bfloat16}[args.amp_dtype]
    return torch.float16 if args.device.startswith("cuda") else torch.bfloat16


def label_single_process_sync(model: torch.nn.Module, name: str) -> str:
    """``name`` marked when ``model`` has synced norms (SyncBN, SyncSN): this benchmark runs one process, where
    they have no process group and compute plain BN/SN, so the figure is not SyncBN's cost (no all-reduce;
    tools/gpu_check.sh runs a 2-process train_net over gloo for the synced path)."""
    from gn_det.layers import norm_traits

    if any((t := norm_traits(m)) is not None and t.synced for m in model.modules()):
        return f"{name} (1 process: no all-reduce, BN's compute)"
    return name


def main_iteration(args) -> Dict[str, float]:
    """--device cuda (or --full-iteration): time full iterations and print one line (or JSON)."""
    device = torch.device(args.device)
    use_device(device)  # --device cuda:1: new tensors, peak memory and syncs on cuda:1, not cuda:0
    height, width = args.size
    model, name = build_for_bench(args, height, width)
    name = label_single_process_sync(model, name)
    amp_dtype = _amp_dtype(args)
    result = bench_iteration(model, device, args.images, height, width, args.iters, args.warmup, amp_dtype,
                             args.profile_iters, args.profile_table)
    result.update(config=name, device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                  precision=str(amp_dtype).replace("torch.", "") + " amp" if amp_dtype else "float32",
                  images=args.images, size=f"{height}x{width}", iters=args.iters, torch=torch.__version__)
    if args.json:
        print(json.dumps(result))
    else:
        busy = f", GPU busy {result['gpu_busy']:.0%}" if result["gpu_busy"] is not None else ""
        print(f"{name} [{result['precision']}, {args.images} x {height}x{width}, {result['device']}]: "
              f"{result['s_per_iter']:.4f} s/iter (median of {args.iters}), peak {result['peak_mem_mb']:.0f} MB{busy}")
    return result


def _size(text: str) -> Tuple[int, int]:
    h, _, w = text.lower().partition("x")
    try:
        size = int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be HxW, e.g. 800x1333, got {text!r}") from None
    if min(size) < 32:
        raise argparse.ArgumentTypeError(f"--size must be at least 32x32, got {text!r}")
    return size


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Parse args, build the recipe with 80 classes at 512x640, time it and print one line (or JSON)."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="", help="YAML recipe: a path or a file name in configs/")
    parser.add_argument("--torchvision-reference", action="store_true",
                        help="time torchvision's maskrcnn_resnet50_fpn (FrozenBN) instead of a recipe")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed steps (default 5 on CPU after 2 warm-up steps, 20 full iterations on CUDA)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--device", default="cpu",
                        help="cpu (forward+backward, detectron2's CPU input) or cuda / cuda:N (full iterations)")
    parser.add_argument("--full-iteration", action="store_true",
                        help="the CUDA mode's full iteration on any device (CPU: to test it with a small --size)")
    parser.add_argument("--amp", action="store_true", help="full iteration under autocast (float16 + GradScaler "
                                                           "on CUDA, bfloat16 on CPU)")
    parser.add_argument("--amp-dtype", choices=["float16", "bfloat16"], default="", help="override the AMP type")
    parser.add_argument("--images", type=int, default=CUDA_IMAGES, help="images per iteration (full iteration)")
    parser.add_argument("--size", type=_size, default=(CUDA_HEIGHT, CUDA_WIDTH), help="HxW (full iteration)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (full iteration)")
    parser.add_argument("--profile-iters", type=int, default=3, help="profiled iterations for the GPU busy share")
    parser.add_argument("--profile-table", default="", help="write the profiler's kernel table to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)
    if bool(args.config) == args.torchvision_reference:
        parser.error("give exactly one of --config FILE and --torchvision-reference")
    if args.iters is not None and args.iters < 1:
        parser.error(f"--iters must be >= 1, got {args.iters}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if len(args.opts) % 2:
        parser.error(f"overrides come as KEY VALUE pairs; {args.opts[-1]} has no value")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but CUDA is not available on this machine; use --device cpu")
    if args.amp_dtype == "float16" and not cuda:
        parser.error("--amp-dtype float16 needs --device cuda; use bfloat16 on CPU")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if cuda or args.full_iteration:
        args.iters = args.iters or 20
        return main_iteration(args)
    args.iters = args.iters or 5
    model, name = build_for_bench(args, HEIGHT, WIDTH)
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
    sys.exit(run_tool(PROG, main))
