#!/usr/bin/env python
"""Draw the training set's ground truth: as stored, or as the training loader feeds it to the model.

  python tools/visualize_data.py --config configs/tiny/gn_mask_rcnn_shapes.yaml --source annotation --output-dir vis/
  python tools/visualize_data.py --config FILE --source dataloader --output-dir vis/ --num 8

--source annotation draws each image of DATASETS.TRAIN at its own size with its annotations (masks,
boxes, class names); --source dataloader draws what the training loader yields after augmentation
(resize to INPUT.MIN_SIZE_TRAIN, random flip), in the loader's order. Files are named after their
image (name_2.png when the loader brings an image again). --num N stops after N images (default: all
of the annotation source; one pass's worth of images for the loader, which never ends).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402
from gn_det.visualization.dataset_vis import SOURCES  # noqa: E402

PROG = "visualize_data.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """--config, --source, --output-dir, --num, --register-coco, KEY VALUE overrides."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--config-file", dest="config", required=True, help="config file")
    parser.add_argument("--source", choices=SOURCES, required=True, help="the annotations as stored, or the training loader's output")
    parser.add_argument("--output-dir", required=True, help="folder for the pictures")
    parser.add_argument("--num", type=int, default=0, help="stop after this many images (0: see above)")
    parser.add_argument("--register-coco", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_ROOT"),
                        help="register a COCO-format dataset (then name it in DATASETS.TRAIN)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def _run(argv: Optional[List[str]] = None) -> int:
    from gn_det.config import config_from_args
    from gn_det.data import DatasetCatalog, register_from_cfg
    from gn_det.visualization.dataset_vis import draw_annotations, draw_loader

    args = parse_args(argv)
    if args.num < 0:
        raise UserError(f"--num must be >= 0 (0 = the default amount), got {args.num}")
    cfg = config_from_args(args.config, args.opts, args.register_coco)
    register_from_cfg(cfg)
    cfg.freeze()
    if not cfg.DATASETS.TRAIN:
        raise UserError("DATASETS.TRAIN is empty: name the dataset to draw, e.g. DATASETS.TRAIN \"('shapes_train',)\"")
    if args.source == "annotation":
        written = draw_annotations(cfg, args.output_dir, args.num)
    else:
        num = args.num or sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
        written = draw_loader(cfg, args.output_dir, num)
    print(f"wrote {len(written)} picture(s) of {', '.join(cfg.DATASETS.TRAIN)} ({args.source}) to {args.output_dir}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: ``_run`` with a mistake reported as one line, exit status 2."""
    return run_tool(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
