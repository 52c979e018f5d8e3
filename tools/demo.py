#!/usr/bin/env python
"""Run a trained model on your own images and draw what it finds (detectron2's demo.py, headless).

  python tools/demo.py --config output/gn_mask_rcnn_shapes/config.yaml --input photo.jpg --output out/ \\
      MODEL.WEIGHTS output/gn_mask_rcnn_shapes/model_final.pth
  python tools/demo.py --config FILE --input images/ "more/*.png" --output out/ --confidence-threshold 0.3 \\
      MODEL.WEIGHTS model_final.pth

--input takes image files, folders (their images) and globs (quoted globs are expanded here). For each
input, OUT/<its file name> is the image at its own size with the detections scoring at least the
threshold drawn (masks, boxes, "class NN%"), and OUT/predictions.json holds every detection as a COCO
results entry plus the image's file_name. Class names come from DATASETS.TEST[0]. Without --output
nothing is written (there is no window to show on a headless machine): the tool says what it found and
where it would write.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "demo.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """--config, --input PATH..., --output DIR, --confidence-threshold, KEY VALUE overrides."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--config-file", dest="config", required=True, help="config file (or a run's config.yaml)")
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders or (quoted) globs")
    parser.add_argument("--output", default=None, help="folder for the drawings and predictions.json")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="draw detections scoring at least this")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ... (MODEL.WEIGHTS path)")
    return parser.parse_args(argv)


def _run(argv: Optional[List[str]] = None) -> int:
    from gn_det.config import config_from_args
    from gn_det.data import register_from_cfg
    from gn_det.engine import DefaultPredictor
    from gn_det.utils.device import resolve_cfg_device
    from gn_det.visualization.demo import run_demo
    from gn_det.visualization.images import expand_inputs

    args = parse_args(argv)
    if not 0.0 <= args.confidence_threshold <= 1.0:
        raise UserError(f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}")
    files = expand_inputs(args.input)
    cfg = config_from_args(args.config, args.opts)
    register_from_cfg(cfg)
    resolve_cfg_device(cfg)
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        raise UserError("trained weights needed: add MODEL.WEIGHTS path/to/model_final.pth")
    result = run_demo(DefaultPredictor(cfg), files, args.output, args.confidence_threshold)
    for item in result.images:
        where = f" -> {item.output_file}" if item.output_file else ""
        print(f"{item.file_name}: {item.num_drawn} detection(s) >= {args.confidence_threshold:g} "
              f"(of {item.num_detections}){where}")
    if result.predictions_file:
        print(f"wrote {len(result.images)} drawing(s) and {result.predictions_file}")
    else:
        print(f"no --output DIR: nothing written (no display here); with --output DIR the drawings go to "
              f"DIR/<input file name> and every detection to DIR/predictions.json")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: ``_run`` with a mistake reported as one line, exit status 2."""
    return run_tool(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
