#!/usr/bin/env python
"""Train the same small Mask R-CNN from scratch on the shapes data with each norm, at 1 and 2 images
per process (and 1, 2, 4, 8 for BN, GN, SN), with 3 seeds where a claim compares the cell, then write
the table (mean +- std over seeds; Markdown + CSV; with each recipe's inference GFLOPs and training
activation memory per image, gn_det/benchmark/sweep_cost.py), the claims checked (Markdown) and the plot (PNG).

  python tools/norm_sweep.py                              # the whole grid into output/norm_sweep
  python tools/norm_sweep.py --only gn,bn_2img --seeds 0  # a part of it
  python tools/norm_sweep.py --table-only                  # rebuild table, claims and plot from finished runs

  python tools/norm_sweep.py --protocol finetune           # the papers' protocol: pretrain, then fine-tune
  python tools/norm_sweep.py --protocol finetune --dry-run # every cell, its pretrained backbone and status
  python tools/norm_sweep.py --protocol finetune --table-only --docs   # docs/norm_finetune.md and .png

--protocol scratch (the default) is the grid below; --protocol finetune (gn_det/benchmark/finetune.py)
pretrains the BN, GN, SN and GN+WS backbones it needs once (tools/pretrain_backbone.py, cached under
OUTPUT_ROOT/pretrain/, resumed if interrupted), then fine-tunes the tiny Mask R-CNN from them with the
papers' cells (configs/tiny/finetune/): FrozenBN/-, FrozenBN/GN, FrozenBN/SN, BN/BN, SyncBN/SyncBN, GN/GN,
SN/SN, GN+WS/GN+WS, at 1 and 2 images per process, seeds 0, 1, 2.

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
    SweepSummary, add_wall_time, cell_status, check_claims, claims_table, load_wall_times, plan_cells,
    run_state, sweep_rows, sweep_table, train_command,
)

PROG = "norm_sweep.py"
DEFAULT_ITERS = {"scratch": 150, "finetune": 250}
DEFAULTS = {"scratch": ("norm_sweep", "sweep"), "finetune": ("norm_finetune", "finetune")}  # output, configs


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments of the sweep."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=("scratch", "finetune"), default="scratch",
                        help="scratch: every cell from a random init (default); finetune: pretrain backbones, then "
                             "fine-tune (the papers' protocol)")
    parser.add_argument("--output-root", default=None,
                        help="one OUTPUT_DIR per run under it (default output/norm_sweep, or output/norm_finetune)")
    parser.add_argument("--config-dir", default=None,
                        help="recipe configs (default configs/tiny/sweep, or configs/tiny/finetune)")
    parser.add_argument("--pretrain-config-dir", default=os.path.join(ROOT, "configs", "tiny", "pretrain"),
                        help="finetune: the pretraining recipes R_18_<norm>.yaml")
    parser.add_argument("--pretrain-iters", type=int, default=0,
                        help="finetune: pretraining iterations per backbone (default 0: the recipe's SOLVER.MAX_ITER)")
    parser.add_argument("--docs", action="store_true",
                        help="finetune: also write docs/norm_finetune.md and docs/norm_finetune.png from finished cells")
    parser.add_argument("--docs-dir", default=os.path.join(ROOT, "docs"), help="where --docs writes (default docs/)")
    parser.add_argument("--iters", type=int, default=None,
                        help=f"training iterations per run (default {DEFAULT_ITERS['scratch']}, finetune "
                             f"{DEFAULT_ITERS['finetune']})")
    parser.add_argument("--lr-per-image", type=float, default=0.005, help="BASE_LR = this x total images per step")
    parser.add_argument("--num-gpus", type=int, default=2, help="processes per run (default 2: SyncBN syncs over 2)")
    parser.add_argument("--only", default="", help="comma-separated recipes (gn,bn,...), cells (gn_1img) or runs (gn_1img_s1)")
    parser.add_argument("--seeds", default="", help="comma-separated seeds to run (default: every seed of the grid)")
    parser.add_argument("--table-only", action="store_true", help="do not train; write table and plot from what exists")
    parser.add_argument("--retry-diverged", action="store_true", help="run again the cells whose training diverged")
    parser.add_argument("--dry-run", action="store_true", help="print the train_net.py commands and exit")
    parser.add_argument("--plot", default=None, help="PNG path (default OUTPUT_ROOT/norm_sweep.png)")
    parser.add_argument("--cost-images", type=int, default=3,
                        help="scratch grid: images per recipe for the GFLOPs and activation-memory columns "
                             "(0: leave them out)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides for every run: KEY VALUE ...")
    return parser.parse_args(argv)


def run_cells(args: argparse.Namespace, cells) -> SweepSummary:
    """Train/resume/evaluate every cell that is not done, in order; a failure does not stop the rest."""
    summary = SweepSummary()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, 2 // args.num_gpus))))
    for cell in cells:
        status = cell_status(cell.output_dir)
        backbone = f" (backbone {cell.pretrained}: {cell.weights})" if cell.pretrained else ""
        if status == "done" or (run_state(cell.output_dir) == "diverged" and not args.retry_diverged):
            if args.dry_run:
                print(f"[norm_sweep] {cell.name}: {run_state(cell.output_dir)}, skipped{backbone}", flush=True)
            summary.skipped.append(cell.name)  # finished, or diverged before (deterministic: seeds fixed)
            continue
        if cell.weights and status == "new" and not args.dry_run and not os.path.isfile(cell.weights):
            print(f"[norm_sweep] {cell.name}: its pretrained backbone {cell.weights} is missing (pretraining "
                  "failed?); skipped", flush=True)
            summary.failed.append(cell.name)
            continue
        if cell.weights and status == "new" and os.path.isfile(cell.weights):
            _check_recorded_backbone(cell)
        cmd = train_command(cell, status, iters=args.iters, lr_per_image=args.lr_per_image,
                            train_net=os.path.join(ROOT, "tools", "train_net.py"), extra_opts=args.opts)
        print(f"[norm_sweep] {cell.name}: {status}{backbone} -> {' '.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        _run_logged(cmd, cell.output_dir, cell.name, cell.name, args.output_root, env, summary)
    return summary


def run_pretraining(args: argparse.Namespace, cells) -> SweepSummary:
    """Pretrain (or resume) every backbone the unfinished ``cells`` need and that is not cached yet."""
    from gn_det.benchmark.finetune import plan_pretraining, pretrain_command, pretrain_status

    summary = SweepSummary()
    pending = [c for c in cells if cell_status(c.output_dir) != "done"]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    for job in plan_pretraining(cells, args.pretrain_config_dir):
        status = pretrain_status(job.output_dir)
        users = sorted({c.group for c in cells if c.pretrained == job.kind})
        if status == "done" or not any(c.pretrained == job.kind for c in pending):
            print(f"[norm_sweep] pretrain {job.kind}: {status} ({job.weights}); used by {', '.join(users)}", flush=True)
            summary.skipped.append(f"pretrain_{job.kind}")
            continue
        cmd = pretrain_command(job, status, iters=args.pretrain_iters,
                               tool=os.path.join(ROOT, "tools", "pretrain_backbone.py"))
        print(f"[norm_sweep] pretrain {job.kind}: {status} -> {' '.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        _run_logged(cmd, job.output_dir, f"pretrain_{job.kind}", f"pretrain {job.kind}", args.output_root, env,
                    summary)
    return summary


def _run_logged(cmd, output_dir: str, name: str, label: str, output_root: str, env, summary: SweepSummary) -> int:
    """Run one job's command with its output appended to ``output_dir/sweep_stdout.txt``; record its wall time
    under ``name`` and its outcome in ``summary``. Returns the exit code."""
    os.makedirs(output_dir, exist_ok=True)
    start = time.perf_counter()
    with open(os.path.join(output_dir, "sweep_stdout.txt"), "a", encoding="utf-8") as log:
        code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    add_wall_time(output_root, name, seconds)
    summary.wall_seconds += seconds
    (summary.ran if code == 0 else summary.failed).append(name)
    print(f"[norm_sweep] {label}: exit {code} after {seconds:.0f} s", flush=True)
    return code


def _check_recorded_backbone(cell) -> None:
    """The backbone file was pretrained with the norm the cell's recipe loads (its run's config.yaml says)."""
    from gn_det.checkpoint.pretrained import check_pretrained_recipe
    from gn_det.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(cell.config_file)
    try:
        check_pretrained_recipe(cfg, cell.weights)
    except ValueError as e:
        raise UserError(f"{cell.name}: {e}") from e


def check_backbones(cells) -> None:
    """Each fine-tuning recipe loads the kind of backbone planned for it (gn_det.checkpoint.pretrained's
    load table), before anything trains: a wrong pairing is one line naming the recipe."""
    from gn_det.checkpoint.pretrained import pretrained_backbone_for
    from gn_det.config import get_cfg

    seen = set()
    for cell in cells:
        if not cell.pretrained or cell.recipe in seen:
            continue
        seen.add(cell.recipe)
        cfg = get_cfg()
        cfg.merge_from_file(cell.config_file)
        want = pretrained_backbone_for(cfg.MODEL.RESNETS.NORM, cfg.MODEL.RESNETS.CONV)
        if want != cell.pretrained:
            raise UserError(f"{cell.config_file}: MODEL.RESNETS.NORM={cfg.MODEL.RESNETS.NORM!r} loads a {want} "
                            f"backbone, but the grid gives it {cell.pretrained}; fix gn_det/benchmark/finetune.py")


def write_results(args: argparse.Namespace, cells) -> None:
    """Table (Markdown + CSV, and text on stdout), the claims checked, and the AP plot from the runs that exist."""
    from gn_det.benchmark.plots import plot_sweep

    if args.protocol == "finetune":
        return write_finetune_results(args, cells)
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


def write_finetune_results(args: argparse.Namespace, cells) -> None:
    """The fine-tuning table, claims with their numbers, pretraining accuracy and published counterparts:
    OUTPUT_ROOT/norm_finetune.{md,csv,png}, and with --docs docs/norm_finetune.{md,png}."""
    from gn_det.benchmark.finetune import FINETUNE, finetune_markdown, plan_pretraining
    from gn_det.benchmark.plots import FINETUNE_TITLE, plot_sweep

    wall = load_wall_times(args.output_root)
    rows = sweep_rows(cells, wall)
    table = sweep_table(rows, title=f"Fine-tuning comparison: tiny Mask R-CNN on shapes, {args.iters} iterations "
                                    "from pretrained R-18 backbones")
    results = check_claims(rows, FINETUNE.claims)
    claims = claims_table(results, title="Claims (holds: gap > 2 x the larger std over seeds)")
    print(render(table, "text"))
    print(render(claims, "text"))
    jobs = plan_pretraining(cells, args.pretrain_config_dir)
    recipes = sorted({c.recipe for c in cells}, key=list(FINETUNE.labels).index)
    text = finetune_markdown(table, results, jobs, wall, iters=args.iters, recipes=recipes,
                             lr_per_image=args.lr_per_image)
    atomic_write_text(os.path.join(args.output_root, "norm_finetune.md"), text)
    atomic_write_text(os.path.join(args.output_root, "norm_finetune.csv"), render(table, "csv"))
    path = plot_sweep(rows, args.plot or os.path.join(args.output_root, "norm_finetune.png"), title=FINETUNE_TITLE)
    print(f"wrote {os.path.join(args.output_root, 'norm_finetune.md')}, .csv and {path}")
    if args.docs:
        docs = args.docs_dir
        atomic_write_text(os.path.join(docs, "norm_finetune.md"), text)
        plot_sweep(rows, os.path.join(docs, "norm_finetune.png"), title=FINETUNE_TITLE)
        print(f"wrote {os.path.join(docs, 'norm_finetune.md')} and {os.path.join(docs, 'norm_finetune.png')}")


def check_args(args: argparse.Namespace) -> None:
    """UserError naming the flag for a value that cannot work."""
    if args.protocol != "finetune":
        for flag, given in (("--docs", args.docs), ("--pretrain-iters", args.pretrain_iters)):
            if given:
                raise UserError(f"{flag} belongs to the fine-tuning grid: add --protocol finetune")
    if args.pretrain_iters < 0:
        raise UserError(f"--pretrain-iters must be >= 0 (0: the recipe's own), got {args.pretrain_iters}")
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
    output, configs = DEFAULTS[args.protocol]
    args.output_root = args.output_root or os.path.join("output", output)
    args.config_dir = args.config_dir or os.path.join(ROOT, "configs", "tiny", configs)
    args.iters = args.iters if args.iters is not None else DEFAULT_ITERS[args.protocol]
    only = [s for s in args.only.split(",") if s]
    check_args(args)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s] or None
    except ValueError:
        raise UserError(f"--seeds takes comma-separated integers, e.g. 0,1; got {args.seeds!r}") from None
    protocol = None
    if args.protocol == "finetune":
        from gn_det.benchmark.finetune import FINETUNE as protocol
    cells = plan_cells(args.config_dir, args.output_root, args.num_gpus, only, seeds, protocol=protocol)
    summary = SweepSummary()
    if not args.table_only:
        if protocol is not None:
            check_backbones(cells)
            pre = run_pretraining(args, cells)
        summary = run_cells(args, cells)
        if protocol is not None:
            summary.ran[:0], summary.failed[:0] = pre.ran, pre.failed
            summary.wall_seconds += pre.wall_seconds
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
