#!/usr/bin/env python
"""Re-score a saved COCO results JSON on a registered dataset: box and mask AP in percent, the numbers
train_net's evaluation reports; optionally per category, precision/recall curves and COCO's error analysis.

  python tools/eval_json.py output/gn_mask_rcnn_shapes/inference/shapes_val/coco_instances_results.json --dataset shapes_val
  python tools/eval_json.py RESULTS.json --dataset shapes_val --per-class --pr-curves pr/ --error-analysis errors/
  python tools/eval_json.py RESULTS.json --dataset mine --register-coco mine ann.json images/ --backend pycocotools

--backend: pycocotools, faster-coco-eval (pip install -e '.[faster-coco-eval]'), or auto (default:
faster-coco-eval where installed). Mask AP is scored when every entry has a segmentation. --output
writes the metrics as inference/<DATASET>/metrics.json holds them. --pr-curves DIR writes
<task>_pr_curves.png (per category, IoU 0.5 and 0.75); --error-analysis DIR writes cocoapi analyze()'s
breakdown (C75, C50, Loc, Sim, Oth, BG, FN; overall and per category) and prints its areas.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.benchmark.formatting import Column, Table, render  # noqa: E402
from gn_det.evaluation.backends import AUTO, EVAL_BACKENDS  # noqa: E402
from gn_det.utils.cli import ArgumentParser, run_tool  # noqa: E402

PROG = "eval_json.py"
PER_CLASS_COLUMNS = [Column("category", "category")] + [Column(k, k, 1, True) for k in
                                                         ("AP", "AP50", "AP75", "APs", "APm", "APl")]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """RESULTS_JSON, --dataset, --backend, --per-class, --output, --pr-curves, --error-analysis, --register-coco."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", metavar="RESULTS_JSON", help="COCO results file (e.g. coco_instances_results.json)")
    parser.add_argument("--dataset", required=True, help="registered dataset the results were made on")
    parser.add_argument("--backend", choices=(AUTO,) + EVAL_BACKENDS, default=AUTO, help="COCOeval implementation")
    parser.add_argument("--per-class", action="store_true", help="print AP, AP50, AP75, APs/m/l per category")
    parser.add_argument("--output", default=None, help="write the metrics to this JSON file")
    parser.add_argument("--pr-curves", default=None, metavar="DIR", help="plot precision/recall per category here")
    parser.add_argument("--error-analysis", default=None, metavar="DIR", help="plot COCO's error analysis here")
    parser.add_argument("--register-coco", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_ROOT"),
                        help="register a COCO-format dataset first")
    return parser.parse_args(argv)


def _error_table(analysis, task: str) -> str:
    from gn_det.evaluation.error_analysis import ERROR_TYPES

    columns = [Column("category", "category")] + [Column(t, t, 3, True) for t in ERROR_TYPES]
    text = render(Table(columns, analysis.table(0), title=f"{task} error analysis, area all (area under each stage)"), "text")
    overall = [{"category": area, **dict(zip(ERROR_TYPES, analysis.areas(None)[:, a]))}
               for a, area in enumerate(analysis.area_names)]
    text += "\n" + render(Table([Column("category", "area")] + columns[1:], overall,
                                title=f"{task} error analysis, overall by area range"), "text")
    if analysis.single_family:
        text += ("\nnote: " + ("the dataset declares no supercategory" if not analysis.has_supercategories else
                               "every category has the same supercategory") + ", so Sim equals Oth")
    return text


def _run(argv: Optional[List[str]] = None) -> int:
    from gn_det.config import config_from_args
    from gn_det.data import register_from_cfg
    from gn_det.evaluation import format_results
    from gn_det.evaluation.coco_evaluation import json_safe_metrics
    from gn_det.evaluation.error_analysis import analyze_errors
    from gn_det.evaluation.rescore import rescore
    from gn_det.utils.file_io import atomic_write_json
    from gn_det.visualization.eval_plots import plot_error_analysis, plot_pr_curves

    args = parse_args(argv)
    register_from_cfg(config_from_args("", [], args.register_coco))
    out = rescore(args.results, args.dataset, args.backend)
    print(f"{args.dataset}: {len(out.results)} results on {len(out.gt['images'])} images, scored by {out.backend} "
          "(percent)")
    metrics = out.metrics()
    print(format_results(metrics))
    for task, scored in out.scored.items():
        if args.per_class:
            rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}  # NaN: "-"
                    for row in scored.per_category()]
            print(render(Table(PER_CLASS_COLUMNS, rows, title=f"{task} per category (percent; - = no ground truth)"),
                         "text"))
        if args.pr_curves:
            print(f"wrote {plot_pr_curves(scored, os.path.join(args.pr_curves, f'{task}_pr_curves.png'))}")
        if args.error_analysis:
            analysis = analyze_errors(out.gt, out.results, task)
            print(_error_table(analysis, task))
            files = plot_error_analysis(analysis, args.error_analysis)
            print(f"wrote {len(files)} error-analysis plot(s) to {args.error_analysis}")
    if args.output:
        print(f"wrote {atomic_write_json(args.output, json_safe_metrics(metrics), indent=1)}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: ``_run`` with a mistake reported as one line, exit status 2."""
    return run_tool(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
