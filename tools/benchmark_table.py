#!/usr/bin/env python
"""Print the AP table of training runs, optionally beside published numbers; or the speed/memory table.

  python tools/benchmark_table.py output/gn output/syncbn --reference --format markdown
  python tools/benchmark_table.py output/run1=mask_rcnn_R_50_FPN_3x_gn --reference
  python tools/benchmark_table.py --reference                   # all published numbers we carry
  python benchmarks/bench_step.py --config configs/gn_mask_rcnn.yaml --json > step.json && python tools/benchmark_table.py --speed step.json

A RUN_DIR is a tools/train_net.py OUTPUT_DIR; ``RUN_DIR=NAME`` names the run NAME (the config stem
used to match published numbers; default: the directory's base name).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.benchmark.formatting import FORMATS, Table, render  # noqa: E402
from gn_det.benchmark.reference import load_reference_numbers  # noqa: E402
from gn_det.benchmark.runs import load_run  # noqa: E402
from gn_det.benchmark.speed import build_speed_table, parse_bench_step_output  # noqa: E402
from gn_det.utils.file_io import atomic_write_text  # noqa: E402
from gn_det.benchmark.tables import AP_COLUMNS, SOURCE_COLUMN, build_ap_table, reference_row  # noqa: E402
from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "benchmark_table.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments of the table tool."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR[=NAME]", help="OUTPUT_DIRs of training runs")
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    parser.add_argument("--reference", action="store_true", help="add published numbers, matched by config name")
    parser.add_argument("--reference-file", default=None, help="reference CSV (default: the package's)")
    parser.add_argument("--speed", metavar="FILE", help="print the speed/memory table of benchmarks/bench_step.py output ('-' = stdin)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the table here instead of stdout")
    return parser.parse_args(argv)


def _write(text: str, output: Optional[str]) -> None:
    if not output:
        sys.stdout.write(text)
        return
    atomic_write_text(output, text)


def build_table(args: argparse.Namespace) -> Table:
    """The AP table (runs, published rows) or the speed table the arguments ask for."""
    if args.speed:
        if args.speed == "-":
            text = sys.stdin.read()
        else:
            if not os.path.isfile(args.speed):
                raise UserError(f"--speed {args.speed}: no such file (write it with benchmarks/bench_step.py --json)")
            with open(args.speed, encoding="utf-8") as f:
                text = f.read()
        return build_speed_table(parse_bench_step_output(text))
    references = None
    if args.reference:
        references = load_reference_numbers(args.reference_file) if args.reference_file else load_reference_numbers()
    if not args.runs and references is None:
        raise UserError("give at least one RUN_DIR, or --reference, or --speed FILE")
    if not args.runs:
        return Table(columns=AP_COLUMNS + [SOURCE_COLUMN], rows=[reference_row(r) for r in references or []])
    records = []
    for spec in args.runs:
        run_dir, _, name = spec.partition("=")
        records.append(load_run(run_dir, name or None))
    return build_ap_table(records, references)


def _run(argv: Optional[List[str]]) -> int:
    args = parse_args(argv)
    _write(render(build_table(args), args.format), args.output)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Build the requested table and print or write it; a mistake is one line on stderr, exit status 2."""
    return run_tool(PROG, _run, argv)  # RunReadError and SpeedParseError are ValueErrors: one line too


if __name__ == "__main__":
    sys.exit(main())
