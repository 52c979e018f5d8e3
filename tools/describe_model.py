#!/usr/bin/env python
"""Print, per part of a detector (stem, res2-res5, FPN, RPN, box head, mask head), the norm type, the
number of norm layers, frozen/trainable and the parameter count, so one sees where a norm landed.

    python tools/describe_model.py --config gn_mask_rcnn.yaml [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.config import get_cfg, resolve_config_path  # noqa: E402
from gn_det.modeling import build_model, describe_model_parts, format_parts_table  # noqa: E402
from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "describe_model.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """--config FILE (a path, or a bare name looked up in configs/) and KEY VALUE overrides."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--config-file", dest="config", default="",
                        help="YAML recipe: a path or a file name in configs/ (default: the built-in defaults)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    """Build the model on CPU (random init) and print its per-part table; returns the text."""
    args = parse_args(argv)
    cfg = get_cfg()
    if args.config:
        cfg.merge_from_file(resolve_config_path(args.config))
    if len(args.opts) % 2:
        raise UserError(f"overrides come as KEY VALUE pairs; {args.opts[-1]} has no value")
    cfg.merge_from_list(list(args.opts) + ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    text = f"config: {args.config or '(defaults)'}\n" + format_parts_table(describe_model_parts(model))
    print(text)
    return text


if __name__ == "__main__":
    sys.exit(run_tool(PROG, main))
