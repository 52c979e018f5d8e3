#!/usr/bin/env python
"""README's quick start as a newcomer runs it on a fresh clone, end to end, with its time breakdown and AP.

Each run starts in a new temporary folder with no dataset (GN_DET_DATASETS and OUTPUT_DIR point into it),
so it includes generating the shapes dataset, and runs exactly README's command

    python tools/train_net.py --config configs/tiny/gn_mask_rcnn_shapes.yaml

as a subprocess, timing the lines of its log as they arrive: start-up (imports, config, dataset
generation, of which the generation alone is the span of the dataset's file times), model build and data
loading (to "Starting training"), the training steps (to the final checkpoint's line), evaluation (inference
and COCO scoring, to the AP line) and the rest (writing, exit). Prints each run and, over ``--runs`` runs,
the mean and spread (min-max) of the wall time and of box/mask AP. Targets (issue 18): <= 5 minutes,
box AP >= 80, mask AP >= 75 on a 2-core CPU.

    python benchmarks/bench_quickstart.py [--runs 3] [--keep] [KEY VALUE ...]   # overrides go to train_net
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/tiny/gn_mask_rcnn_shapes.yaml"
MARKERS = (("setup", "Full config saved"), ("model", "Starting training"))


def _dataset_span(root: str) -> Optional[float]:
    """Seconds between the first and the last file the dataset generator wrote (its generation time)."""
    times = [os.path.getmtime(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files]
    return max(times) - min(times) if times else None


def run_once(workdir: str, opts: List[str], echo: bool = False) -> Dict[str, float]:
    """One quick start in ``workdir``; the phase times (s), wall time and APs."""
    env = dict(os.environ, GN_DET_DATASETS=os.path.join(workdir, "datasets"), PYTHONUNBUFFERED="1")
    out = os.path.join(workdir, "output")
    cmd = [sys.executable, "tools/train_net.py", "--config", CONFIG, "OUTPUT_DIR", out] + list(opts)
    start = time.perf_counter()
    seen: Dict[str, float] = {}
    last_step = None
    inference_s = None
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: List[str] = []
    for line in proc.stdout:
        now = time.perf_counter() - start
        tail = (tail + [line])[-40:]
        if echo:
            sys.stdout.write(line)
        for name, marker in MARKERS:
            if name not in seen and marker in line:
                seen[name] = now
        if "eta:" in line and "iter:" in line and "model_final" not in seen:
            last_step = now
        if "model_final" in line and "model_final" not in seen:  # saved after the last step, before evaluation
            seen["model_final"] = now
        match = re.search(r"Inference on \d+ images .* took ([\d.]+) s", line)
        if match:
            inference_s = float(match.group(1))
        if "shapes_val: box AP" in line and "ap" not in seen:
            seen["ap"] = now
    proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the quick start failed (exit {proc.returncode}):\n{''.join(tail)}")
    with open(os.path.join(out, "inference", "shapes_val", "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    setup = seen.get("setup", 0.0)
    model = seen.get("model", setup)
    steps_end = seen.get("model_final", last_step if last_step is not None else model)
    ap_at = seen.get("ap", wall)
    return {"wall_s": wall, "startup_s": setup,
            "dataset_s": _dataset_span(os.path.join(workdir, "datasets")) or 0.0,
            "model_and_data_s": model - setup, "steps_s": steps_end - model, "evaluation_s": ap_at - steps_end,
            "inference_s": inference_s if inference_s is not None else float("nan"), "rest_s": wall - ap_at,
            "box_ap": float(metrics["bbox"]["AP"]), "mask_ap": float(metrics["segm"]["AP"])}


def _spread(values: List[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.1f} (min {min(values):.1f}, max {max(values):.1f})" if len(values) > 1 else f"{mean:.1f}"


def main(argv: Optional[List[str]] = None) -> List[Dict[str, float]]:
    parser = argparse.ArgumentParser(prog="bench_quickstart.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="fresh runs (mean and spread over them)")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (printed)")
    parser.add_argument("--echo", action="store_true", help="show train_net's output")
    parser.add_argument("--json", action="store_true", help="also print the runs as one JSON line")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides passed to train_net")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    print(f"quick start: {CONFIG} {' '.join(args.opts)} (OMP_NUM_THREADS={threads}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start)")
    rows = []
    for k in range(args.runs):
        workdir = tempfile.mkdtemp(prefix="gn_det_quickstart_")
        row = run_once(workdir, args.opts, args.echo)
        rows.append(row)
        print(f"run {k + 1}: {row['wall_s']:.0f} s ({row['wall_s'] / 60:.1f} min) = start-up {row['startup_s']:.0f} s "
              f"(dataset generation {row['dataset_s']:.0f} s) + model build and data {row['model_and_data_s']:.0f} s "
              f"+ steps {row['steps_s']:.0f} s + evaluation {row['evaluation_s']:.0f} s (inference "
              f"{row['inference_s']:.0f} s) + rest {row['rest_s']:.0f} s; box AP {row['box_ap']:.1f}, mask AP "
              f"{row['mask_ap']:.1f}; load average {os.getloadavg()[0]:.1f}" + (f"; kept {workdir}" if args.keep else ""))
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    walls = [r["wall_s"] / 60 for r in rows]
    print(f"{len(rows)} run(s): wall {_spread(walls)} min, box AP {_spread([r['box_ap'] for r in rows])}, mask AP "
          f"{_spread([r['mask_ap'] for r in rows])} (targets: <= 5 min, box AP >= 80, mask AP >= 75)")
    if args.json:
        print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
