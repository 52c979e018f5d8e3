#!/usr/bin/env python
"""Analyze a trained model's norms: SN importance shares (IN/LN/BN) and BN estimation shift.

  python tools/analyze_norms.py --config output/sn/config.yaml MODEL.WEIGHTS output/sn/model_final.pth
  python tools/analyze_norms.py --config configs/tiny/...yaml MODEL.WEIGHTS w.pth DATASETS.TEST "('shapes_val',)"

The expected statistics of every BN-like layer are measured on the first dataset of DATASETS.TEST
(or --dataset) with the model in eval mode. Tables go to stdout; tables (.md/.csv) and plots (.png)
go to --output-dir (default: OUTPUT_DIR/norm_analysis).
"""
from __future__ import annotations

import argparse
import os
import sys
from itertools import islice
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from gn_det.benchmark.analysis import analyze_norms  # noqa: E402
from gn_det.benchmark.formatting import FORMATS, render  # noqa: E402
from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "analyze_norms.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments (detectron2 style: --config-file plus KEY VALUE overrides)."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--config-file", dest="config", required=True, help="config file (or a run's config.yaml)")
    parser.add_argument("--dataset", default=None, help="dataset to measure on (default: DATASETS.TEST[0])")
    parser.add_argument("--max-images", type=int, default=0, help="use at most this many images (0 = all)")
    parser.add_argument("--output-dir", default=None, help="where tables and plots go (default: OUTPUT_DIR/norm_analysis)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="stdout table format")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ... (MODEL.WEIGHTS path)")
    return parser.parse_args(argv)


def setup_cfg(args: argparse.Namespace):
    """Config from the file and the overrides; MODEL.WEIGHTS must name trained weights."""
    from gn_det.config import get_cfg, resolve_config_path

    cfg = get_cfg()
    cfg.merge_from_file(resolve_config_path(args.config))
    if len(args.opts) % 2:
        raise UserError(f"overrides come as KEY VALUE pairs; {args.opts[-1]} has no value")
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu" if not torch.cuda.is_available() else cfg.MODEL.DEVICE
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        raise UserError("trained weights needed: add MODEL.WEIGHTS path/to/model_final.pth")
    if not (args.dataset or cfg.DATASETS.TEST):
        raise UserError("a dataset is needed: set DATASETS.TEST or pass --dataset NAME")
    if args.max_images < 0:
        raise UserError(f"--max-images must be >= 0 (0 = all), got {args.max_images}")
    return cfg


def _run(argv: Optional[List[str]] = None) -> int:
    """Build the model, load its weights, measure on the dataset, print and write the analyses."""
    from gn_det.checkpoint import load_weights
    from gn_det.data import DatasetCatalog, build_detection_test_loader, register_from_cfg
    from gn_det.modeling import build_model

    args = parse_args(argv)
    cfg = setup_cfg(args)
    register_from_cfg(cfg)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    if dataset not in DatasetCatalog:
        raise UserError(f"dataset '{dataset}' is not registered (registered: {', '.join(DatasetCatalog.list())}); "
                        "register it with DATASETS.REGISTER_COCO or pass --dataset NAME")
    model = build_model(cfg)
    load_weights(model, cfg.MODEL.WEIGHTS, cfg=cfg)  # cfg: its input conventions checked against the weights
    loader = build_detection_test_loader(cfg, dataset)
    images = (image for batch in loader for image, _ in batch)
    if args.max_images > 0:
        images = islice(images, args.max_images)
    batches = ([image] for image in images)  # one image per forward: eval sizes differ per image
    output_dir = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "norm_analysis")
    result = analyze_norms(model, batches, output_dir)
    if not result.tables:
        print("The model has no SN layer and no BN-like layer (BN, SyncBN, FrozenBN, SN with BN): nothing to analyze.")
    for table in result.tables.values():
        if args.format == "markdown":
            print(f"### {table.title}\n")
        print(render(table, args.format))
    if result.unreached:
        print(f"{len(result.unreached)} BN-like layer(s) never reached by the data (no estimation shift): "
              f"{', '.join(result.unreached)}")
    for path in result.files:
        print(f"wrote {path}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: ``_run`` with a mistake reported as one line, exit status 2."""
    return run_tool(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
