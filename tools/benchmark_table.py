#!/usr/bin/env python
"""Print the AP table of training runs, optionally beside published numbers; or the speed/memory table.

  python tools/benchmark_table.py output/gn output/syncbn --reference --format markdown
  python tools/benchmark_table.py output/run1=mask_rcnn_R_50_FPN_3x_gn --reference
  python tools/benchmark_table.py --reference                   # all published numbers we carry
  python benchmarks/bench_step.py --json > step.json && python tools/benchmark_table.py --speed step.json

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
from gn_det.benchmark.runs import RunReadError, load_run  # noqa: E402
from gn_det.benchmark.speed import SpeedParseError, build_speed_table, parse_bench_step_output  # noqa: E402
from gn_det.utils.file_io import atomic_write_text  # noqa: E402
from gn_det.benchmark.tables import AP_COLUMNS, SOURCE_COLUMN, build_ap_table, reference_row  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments of the table tool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def main(argv: Optional[List[str]] = None) -> int:
    """Build the requested table and print or write it; returns the exit code."""
    args = parse_args(argv)
    try:
        if args.speed:
            if args.speed == "-":
                text = sys.stdin.read()
            else:
                with open(args.speed, encoding="utf-8") as f:
                    text = f.read()
            table = build_speed_table(parse_bench_step_output(text))
        else:
            references = None
            if args.reference:
                references = load_reference_numbers(args.reference_file) if args.reference_file else load_reference_numbers()
            if not args.runs and references is None:
                print("benchmark_table.py: give at least one RUN_DIR, or --reference, or --speed FILE", file=sys.stderr)
                return 2
            if not args.runs:
                table = Table(columns=AP_COLUMNS + [SOURCE_COLUMN], rows=[reference_row(r) for r in references or []])
            else:
                records = []
                for spec in args.runs:
                    run_dir, _, name = spec.partition("=")
                    records.append(load_run(run_dir, name or None))
                table = build_ap_table(records, references)
    except (RunReadError, SpeedParseError, OSError, ValueError) as e:
        print(f"benchmark_table.py: {e}", file=sys.stderr)
        return 1
    _write(render(table, args.format), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
