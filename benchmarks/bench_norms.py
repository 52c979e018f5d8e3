"""Milliseconds per forward+backward of every registered norm on detection-shaped activations.

Prints one table per device (CPU with --threads threads; CUDA too when present): per shape the
best (or median, --stat) time over --repeat runs and the ratio to GroupNorm measured in the same
run, the norms taking turns so that load from other jobs hits them alike. Targets
(issue 3): SN <= 1.5x GN, FrozenBN <= 1.0x GN, SyncBN (one process) within 1.1x of BN.

    python benchmarks/bench_norms.py                       # all four shapes, best of 5
    python benchmarks/bench_norms.py --repeat 2 --shapes 1x256x64x80
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.layers import NORM_REGISTRY, get_norm  # noqa: E402
from gn_det.utils.cli import ArgumentParser, run_tool  # noqa: E402

PROG = "bench_norms.py"

# Activation shapes of a Mask R-CNN step at 800x1333 input with 2 images (issue 3):
# res2 at stride 4 and P2/FPN at stride 4, res4 at stride 16, one image's FPN level, the stem output.
DEFAULT_SHAPES = "2x256x200x336,2x1024x50x84,1x256x128x160,2x64x400x672"
Shape = Tuple[int, int, int, int]
STATS: Dict[str, Callable[[List[float]], float]] = {"min": min, "median": statistics.median}


def parse_shapes(text: str) -> List[Shape]:
    """"2x256x200x336,1x64x32x32" -> [(2, 256, 200, 336), (1, 64, 32, 32)]."""
    shapes = []
    for item in text.split(","):
        try:
            dims = tuple(int(d) for d in item.strip().lower().split("x"))
        except ValueError:
            dims = ()
        if len(dims) != 4 or min(dims) <= 0:
            raise argparse.ArgumentTypeError(f"entries must be NxCxHxW with positive sizes, got {item!r}")
        shapes.append(dims)
    return shapes


def time_norms(names: Sequence[str], shape: Shape, device: torch.device, repeat: int, warmup: int,
               stat: Callable[[List[float]], float] = min, dtype: torch.dtype = torch.float32) -> Dict[str, float]:
    """Milliseconds of ``y = norm(x); y.backward(dy)`` in training mode per norm (``stat`` over repeats).

    The norms take turns within each round (in a rotating order), so drift in machine load hits
    every norm alike and the ratios to GN stay meaningful on a shared machine. ``dtype`` is the
    activation's (float16/bfloat16: what a norm receives under autocast); parameters stay float32.
    """
    norms = {name: get_norm(name, shape[1]).to(device).train() for name in names}
    x = torch.randn(shape, device=device).to(dtype).requires_grad_()
    dy = torch.randn(shape, device=device).to(dtype)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(warmup + repeat):
        order = list(names[i % len(names):]) + list(names[: i % len(names)])
        for name in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            norms[name](x).backward(dy)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
            x.grad = None
            norms[name].zero_grad(set_to_none=True)
    return {name: stat(t) for name, t in times.items()}


def run_table(names: Sequence[str], shapes: Sequence[Shape], device: torch.device, repeat: int, warmup: int,
              stat: Callable[[List[float]], float] = min, dtype: torch.dtype = torch.float32) -> str:
    """The formatted table for one device: rows are norms, columns shapes ("ms (ratio to GN)")."""
    results: Dict[Tuple[str, Shape], float] = {}
    for shape in shapes:
        for name, ms in time_norms(names, shape, device, repeat, warmup, stat, dtype).items():
            results[name, shape] = ms
    headers = ["norm"] + ["x".join(map(str, s)) for s in shapes]
    rows = [headers]
    for name in names:
        cells = [name]
        for shape in shapes:
            ms, gn = results[name, shape], results["GN", shape]
            cells.append(f"{ms:8.1f} ms ({ms / gn:4.2f}x)")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def init_single_process_group() -> None:
    """A one-process gloo group, so SyncBN/SyncSN take their real 'world size 1' path."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=parse_shapes, default=parse_shapes(DEFAULT_SHAPES),
                        help=f"comma-separated NxCxHxW (default {DEFAULT_SHAPES})")
    parser.add_argument("--repeat", type=int, default=5,
                        help="timed runs per cell; --stat of them is reported (default: min, the best)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per cell before timing")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--norms", default="", help="comma-separated names (default: all registered)")
    parser.add_argument("--stat", choices=sorted(STATS), default="min",
                        help="statistic over the repeats: min (the run least disturbed by other jobs on a "
                             "shared machine, as timeit advises) or median")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA table even if a GPU is present")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU table (GPU machines)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                        help="activation dtype (float16/bfloat16: a norm's input under autocast)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.warmup < 0 or args.threads < 1:
        parser.error(f"--warmup must be >= 0 and --threads >= 1, got {args.warmup} and {args.threads}")
    names = [n for n in args.norms.split(",") if n] or NORM_REGISTRY.names()
    unknown = sorted(set(names) - set(NORM_REGISTRY.names()))
    if unknown:
        parser.error(f"--norms: unknown {unknown}; registered: {', '.join(NORM_REGISTRY.names())}")
    if "GN" not in names:
        names = ["GN"] + names  # the reference column
    torch.set_num_threads(args.threads)
    init_single_process_group()
    try:
        devices = [] if args.no_cpu else [torch.device("cpu")]
        if torch.cuda.is_available() and not args.no_cuda:
            devices.append(torch.device("cuda"))
        if not devices:
            parser.error("no device to time: --no-cpu and no CUDA (or --no-cuda)")
        dtype = getattr(torch, args.dtype)
        for device in devices:
            where = f"CPU, {args.threads} threads" if device.type == "cpu" else torch.cuda.get_device_name()
            print(f"\nms per forward+backward ({args.stat} of {args.repeat}), ratio to GN in parentheses; {where}; "
                  f"{args.dtype} activations; torch {torch.__version__}")
            load_before = os.getloadavg()[0]
            print(run_table(names, args.shapes, device, args.repeat, args.warmup, STATS[args.stat], dtype))
            # Other jobs inflate and scatter the times: a load above the core count means a noisy table.
            print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(run_tool(PROG, main))
