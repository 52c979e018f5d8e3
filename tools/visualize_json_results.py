#!/usr/bin/env python
"""Draw saved results beside the ground truth, one picture per image of a registered dataset.

  python tools/visualize_json_results.py --input output/gn_mask_rcnn_shapes/inference/shapes_val/coco_instances_results.json \\
      --output vis_results/ --dataset shapes_val
  python tools/visualize_json_results.py --input results.json --output vis/ --dataset mine \\
      --register-coco mine data/ann.json data/images --conf-threshold 0.3

Each picture (named after its image) shows the results scoring at least --conf-threshold on the left
(masks, boxes, "class NN%") and the dataset's annotations on the right. Any registered dataset works:
the built-in ones, DATASETS.REGISTER_COCO entries of a --config, or --register-coco NAME JSON ROOT.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "visualize_json_results.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """--input, --output, --dataset, --conf-threshold, --register-coco, --config."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="COCO results JSON (e.g. coco_instances_results.json)")
    parser.add_argument("--output", required=True, help="folder for the pictures")
    parser.add_argument("--dataset", required=True, help="registered dataset the results were made on")
    parser.add_argument("--conf-threshold", type=float, default=0.5, help="draw results scoring at least this")
    parser.add_argument("--register-coco", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_ROOT"),
                        help="register a COCO-format dataset first")
    parser.add_argument("--config", "--config-file", dest="config", default="",
                        help="a config whose DATASETS.REGISTER_COCO datasets are registered too")
    return parser.parse_args(argv)


def _run(argv: Optional[List[str]] = None) -> int:
    from gn_det.config import config_from_args
    from gn_det.data import register_from_cfg
    from gn_det.evaluation.results_io import read_results_json
    from gn_det.visualization.json_results import draw_json_results

    args = parse_args(argv)
    if not 0.0 <= args.conf_threshold <= 1.0:
        raise UserError(f"--conf-threshold must be in [0, 1], got {args.conf_threshold}")
    register_from_cfg(config_from_args(args.config, [], args.register_coco))
    results = read_results_json(args.input)
    written = draw_json_results(results, args.dataset, args.output, args.conf_threshold)
    print(f"wrote {len(written)} picture(s) (results | ground truth) of {args.dataset} to {args.output}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: ``_run`` with a mistake reported as one line, exit status 2."""
    return run_tool(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
