#!/usr/bin/env python
"""Train the same small Mask R-CNN from scratch on the shapes data with each norm, at 1 and 2 images
per process (and 1, 2, 4, 8 for BN, GN, SN), with 3 seeds where a claim compares the cell, then write
the table (mean +- std over seeds; Markdown + CSV; with each recipe's inference GFLOPs and training
activation memory per image, gn_det/benchmark/sweep_cost.py), the claims checked (Markdown) and the plot (PNG).

  python tools/norm_sweep.py                              # the whole grid into output/norm_sweep
  python tools/norm_sweep.py --only gn,bn_2img --seeds 0  # a part of it
  python tools/norm_sweep.py --table-only                  # rebuild table, claims and plot from finished runs

Recipes (configs/tiny/sweep/): BN with batch statistics, FrozenBN, SyncBN, GN, GN+WS, SN, SN without
its BN branch, XBN (GN at each residual block's 3x3 position and the stem, BN elsewhere), BRN, FRN+TLU,
EvoNorm-S0 and EvoNorm-B0. Every run uses ``--num-gpus 2`` (2 gloo processes on CPU) so the total batch
is the same for all norms at a given images-per-process and only the scope of the statistics differs.
The grid, seeds and claims are declared in gn_det/benchmark/sweep.py. Finished runs are skipped,
unfinished ones resumed, so the sweep can run in pieces.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gn_det.benchmark.formatting import render  # noqa: E402
from gn_det.benchmark.sweep_cost import add_cost_columns, with_cost_columns  # noqa: E402
from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402
from gn_det.utils.file_io import atomic_write_text  # noqa: E402
from gn_det.benchmark.sweep import (  # noqa: E402
    SweepSummary, add_wall_time, cell_status, check_claims, claims_table, load_wall_times, plan_cells, run_state,
    sweep_rows, sweep_table, train_command,
)

PROG = "norm_sweep.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments of the sweep."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-root", default=os.path.join("output", "norm_sweep"), help="one OUTPUT_DIR per run under it")
    parser.add_argument("--config-dir", default=os.path.join(ROOT, "configs", "tiny", "sweep"), help="recipe configs")
    parser.add_argument("--iters", type=int, default=150, help="training iterations per run (default 150)")
    parser.add_argument("--lr-per-image", type=float, default=0.005, help="BASE_LR = this x total images per step")
    parser.add_argument("--num-gpus", type=int, default=2, help="processes per run (default 2: SyncBN syncs over 2)")
    parser.add_argument("--only", default="", help="comma-separated recipes (gn,bn,...), cells (gn_1img) or runs (gn_1img_s1)")
    parser.add_argument("--seeds", default="", help="comma-separated seeds to run (default: every seed of the grid)")
    parser.add_argument("--table-only", action="store_true", help="do not train; write table and plot from what exists")
    parser.add_argument("--retry-diverged", action="store_true", help="run again the cells whose training diverged")
    parser.add_argument("--dry-run", action="store_true", help="print the train_net.py commands and exit")
    parser.add_argument("--plot", default=None, help="PNG path (default OUTPUT_ROOT/norm_sweep.png)")
    parser.add_argument("--cost-images", type=int, default=3,
                        help="images per recipe for the GFLOPs and activation-memory columns (0: leave them out)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides for every run: KEY VALUE ...")
    return parser.parse_args(argv)


def run_cells(args: argparse.Namespace, cells) -> SweepSummary:
    """Train/resume/evaluate every cell that is not done, in order; a failure does not stop the rest."""
    summary = SweepSummary()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, 2 // args.num_gpus))))
    for cell in cells:
        status = cell_status(cell.output_dir)
        if status == "done" or (run_state(cell.output_dir) == "diverged" and not args.retry_diverged):
            summary.skipped.append(cell.name)  # finished, or diverged before (deterministic: seeds fixed)
            continue
        cmd = train_command(cell, status, iters=args.iters, lr_per_image=args.lr_per_image,
                            train_net=os.path.join(ROOT, "tools", "train_net.py"), extra_opts=args.opts)
        print(f"[norm_sweep] {cell.name}: {status} -> {' '.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        os.makedirs(cell.output_dir, exist_ok=True)
        start = time.perf_counter()
        with open(os.path.join(cell.output_dir, "sweep_stdout.txt"), "a", encoding="utf-8") as log:
            code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        add_wall_time(args.output_root, cell.name, seconds)
        summary.wall_seconds += seconds
        (summary.ran if code == 0 else summary.failed).append(cell.name)
        print(f"[norm_sweep] {cell.name}: exit {code} after {seconds:.0f} s", flush=True)
    return summary


def write_results(args: argparse.Namespace, cells) -> None:
    """Table (Markdown + CSV, and text on stdout), the claims checked, and the AP plot from the runs that exist."""
    from gn_det.benchmark.plots import plot_sweep

    rows = sweep_rows(cells, load_wall_times(args.output_root))
    table = sweep_table(rows, title=f"Norm sweep: Mask R-CNN from scratch on shapes, {args.iters} iterations")
    if args.cost_images:
        add_cost_columns(rows, cells, args.output_root, args.cost_images)
        table.columns = with_cost_columns(table.columns)
    claims = claims_table(check_claims(rows), title="Claims (holds: gap > 2 x the larger std over seeds)")
    print(render(table, "text"))
    print(render(claims, "text"))
    atomic_write_text(os.path.join(args.output_root, "norm_sweep.md"),
                      render(table, "markdown") + "\n" + render(claims, "markdown"))
    atomic_write_text(os.path.join(args.output_root, "norm_sweep.csv"), render(table, "csv"))
    path = plot_sweep(rows, args.plot or os.path.join(args.output_root, "norm_sweep.png"))
    print(f"wrote {os.path.join(args.output_root, 'norm_sweep.md')}, .csv and {path}")


def check_args(args: argparse.Namespace) -> None:
    """UserError naming the flag for a value that cannot work."""
    for flag, value in (("--iters", args.iters), ("--num-gpus", args.num_gpus)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.cost_images < 0:
        raise UserError(f"--cost-images must be >= 0 (0 leaves the cost columns out), got {args.cost_images}")
    if args.lr_per_image <= 0:
        raise UserError(f"--lr-per-image must be > 0, got {args.lr_per_image}")
    if len(args.opts) % 2:
        raise UserError(f"overrides come as KEY VALUE pairs; {args.opts[-1]} has no value")


def _run(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    check_args(args)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s] or None
    except ValueError:
        raise UserError(f"--seeds takes comma-separated integers, e.g. 0,1; got {args.seeds!r}") from None
    cells = plan_cells(args.config_dir, args.output_root, args.num_gpus, only, seeds)
    summary = SweepSummary()
    if not args.table_only:
        summary = run_cells(args, cells)
        if args.dry_run:
            return 0
        print(f"[norm_sweep] ran {len(summary.ran)}, skipped {len(summary.skipped)} finished, "
              f"failed {len(summary.failed)} {summary.failed or ''}; wall time {summary.wall_seconds / 60:.1f} min")
    write_results(args, cells)
    return 1 if summary.failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Plan the grid, run what is missing, then write table and plot; exit 1 if a run failed, 2 (one
    line) on a mistake in the arguments."""
    return run_tool(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
