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
    python benchmarks/bench_step.py --detectron2 [--iters 5]   # FrozenBN 1x and GN 3x, gn_det vs detectron2

``--detectron2`` (issue 18): the CPU step of the FrozenBN 1x and GN 3x R-50-FPN Mask R-CNN recipes (or the
one ``--config`` names) side by side with detectron2's model built from its own zoo config of the same
recipe (80 classes, random init, the same image and ground truth as detectron2 takes them), in one run,
each recipe timed on gn_det then on detectron2; prints each ratio (target <= 0.85) and each framework's
GN / FrozenBN ratio (target for gn_det <= 1.8). Says so and stops when detectron2 is not installed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.config import get_cfg, resolve_config_path  # noqa: E402
from gn_det.modeling import build_model  # noqa: E402
from gn_det.utils.cli import ArgumentParser, run_tool  # noqa: E402
from gn_det.utils.device import synchronizer, use_device  # noqa: E402

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


# gn_det recipe -> detectron2 zoo config of the same recipe
DETECTRON2_RECIPES = {
    "mask_rcnn_R_50_FPN_1x_frozenbn.yaml": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "mask_rcnn_R_50_FPN_3x_gn.yaml": "Misc/mask_rcnn_R_50_FPN_3x_gn.yaml",
}


def detectron2_model(zoo_config: str) -> torch.nn.Module:
    """detectron2's model of its zoo config ``zoo_config`` on the CPU, 80 classes, random init, sized to keep
    the 512x640 input (read from the package's own configs: detectron2.model_zoo needs pkg_resources)."""
    import os

    import detectron2
    from detectron2.config import get_cfg as d2_get_cfg
    from detectron2.modeling import build_model as d2_build_model

    cfg = d2_get_cfg()
    cfg.merge_from_file(os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs", zoo_config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", NUM_CLASSES,
                         "INPUT.MIN_SIZE_TRAIN", (HEIGHT,), "INPUT.MAX_SIZE_TRAIN", WIDTH])
    return d2_build_model(cfg)


def detectron2_step_input():
    """``synthetic_sample`` as detectron2's model takes it: a dict with the image and Instances (0-based classes)."""
    from detectron2.structures import BitMasks, Boxes, Instances

    image, target = synthetic_sample()
    inst = Instances((HEIGHT, WIDTH))
    inst.gt_boxes = Boxes(target["boxes"])
    inst.gt_classes = target["labels"] - 1
    inst.gt_masks = BitMasks(target["masks"].bool())
    return {"image": image, "instances": inst, "height": HEIGHT, "width": WIDTH}


def bench_detectron2(model: torch.nn.Module, iters: int, warmup: int = 2) -> Dict[str, float]:
    """``bench``'s loop (forward + backward, no optimizer) on detectron2's model and input."""
    from detectron2.utils.events import EventStorage

    model.train()
    sample = detectron2_step_input()
    total: List[float] = []
    with EventStorage(0):  # detectron2's heads log to it during training
        _detectron2_steps(model, sample, warmup, iters, total)
    return {"s_per_step": statistics.mean(total), "s_per_step_stdev": statistics.stdev(total) if len(total) > 1 else 0.0}


def _detectron2_steps(model, sample, warmup: int, iters: int, total: List[float]) -> None:
    for step in range(warmup + iters):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        losses = model([dict(sample)])
        sum(losses.values()).backward()
        if step >= warmup:
            total.append(time.perf_counter() - t0)


def main_detectron2(args) -> Dict[str, Dict[str, float]]:
    """--detectron2: each recipe on gn_det then detectron2, ratios and GN / FrozenBN ratios, one run."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        print("detectron2 is not installed: no side-by-side figures (pip install the wheel in ../shared/wheels/)")
        return {}
    recipes = [args.config] if args.config else list(DETECTRON2_RECIPES)
    unknown = [r for r in recipes if os.path.basename(r) not in DETECTRON2_RECIPES]
    if unknown:
        raise SystemExit(f"{PROG}: error: --detectron2 knows the recipes {sorted(DETECTRON2_RECIPES)}, not {unknown[0]}")
    rows: Dict[str, Dict[str, float]] = {}
    for recipe in recipes:
        args.config = recipe
        torch.manual_seed(0)
        ours = bench(build_for_bench(args, HEIGHT, WIDTH)[0], args.iters)
        torch.manual_seed(0)
        theirs = bench_detectron2(detectron2_model(DETECTRON2_RECIPES[os.path.basename(recipe)]), args.iters)
        rows[recipe] = {"gn_det_s": ours["s_per_step"], "gn_det_stdev": ours["s_per_step_stdev"],
                        "detectron2_s": theirs["s_per_step"], "detectron2_stdev": theirs["s_per_step_stdev"],
                        "ratio": ours["s_per_step"] / theirs["s_per_step"]}
        r = rows[recipe]
        if not args.json:
            print(f"{recipe}: gn_det {r['gn_det_s']:.2f} +- {r['gn_det_stdev']:.2f} s/step, detectron2 "
                  f"{r['detectron2_s']:.2f} +- {r['detectron2_stdev']:.2f} s/step, ratio {r['ratio']:.2f} "
                  f"(target <= 0.85) [{args.iters} steps, {args.threads} threads, 3x{HEIGHT}x{WIDTH}]")
    fb, gn = (rows.get(k) for k in DETECTRON2_RECIPES)
    if fb and gn:
        rows["gn_over_frozenbn"] = {"gn_det": gn["gn_det_s"] / fb["gn_det_s"],
                                    "detectron2": gn["detectron2_s"] / fb["detectron2_s"]}
        if not args.json:
            print(f"GN / FrozenBN step: gn_det {rows['gn_over_frozenbn']['gn_det']:.2f}x (target <= 1.8), "
                  f"detectron2 {rows['gn_over_frozenbn']['detectron2']:.2f}x")
    if args.json:
        print(json.dumps(rows))
    return rows


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
    parser.add_argument("--detectron2", action="store_true",
                        help="CPU step side by side with detectron2 (FrozenBN 1x and GN 3x, or --config's recipe)")
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
    if args.detectron2:
        if args.torchvision_reference or args.device != "cpu":
            parser.error("--detectron2 times the CPU step of gn_det's recipes; drop --torchvision-reference/--device")
        torch.set_num_threads(args.threads)
        args.iters = args.iters or 5
        return main_detectron2(args)
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
