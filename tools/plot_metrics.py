#!/usr/bin/env python
"""Plot training curves of one or more runs side by side, from each run's metrics.json.

  python tools/plot_metrics.py output/gn output/bn --keys total_loss loss_mask lr --out curves.png --smooth 20
  python tools/plot_metrics.py output/gn_mask_rcnn_shapes --keys bbox/AP segm/AP --out ap.png

A panel per key, the runs overlaid (legend: the run folder's name) against the iteration; --smooth K
draws the trailing mean of K logged points (series with few points, such as AP after evaluations, are
drawn as they are). Prints each run's mean seconds per iteration. An unknown key is refused with the
keys the runs have.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "plot_metrics.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """RUN_DIR..., --keys KEY..., --out FILE.png, --smooth K."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training runs' OUTPUT_DIRs")
    parser.add_argument("--keys", nargs="+", required=True, help="metrics.json keys to plot (total_loss, lr, bbox/AP, ...)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--smooth", type=int, default=1, help="trailing mean over this many logged points (1 = none)")
    return parser.parse_args(argv)


def _run(argv: Optional[List[str]] = None) -> int:
    from gn_det.visualization.metric_curves import load_run_curves, plot_curves

    args = parse_args(argv)
    if args.smooth < 1:
        raise UserError(f"--smooth must be >= 1 (1 = no smoothing), got {args.smooth}")
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {args.out!r}")
    runs = [load_run_curves(d) for d in args.runs]
    path = plot_curves(runs, args.keys, args.out, args.smooth)
    for run in runs:
        mean = run.mean_seconds_per_iter()
        last = max((p[0] for s in run.series.values() for p in s), default=None)
        print(f"{run.run_dir}: {'%.3f s/iter' % mean if mean is not None else 'no time logged'} (mean), "
              f"last logged iteration {last}")
    print(f"wrote {path}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: ``_run`` with a mistake reported as one line, exit status 2."""
    return run_tool(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
