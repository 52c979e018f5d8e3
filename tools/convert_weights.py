#!/usr/bin/env python
"""Convert weights in any format gn_det.checkpoint knows into a gn_det .pth, and print the load table.

    python tools/convert_weights.py R-50.pkl R-50_gn_det.pth
    python tools/convert_weights.py model_final_f10217.pkl d2_mask_rcnn.pth --config-file my_recipe.yaml
    python tools/convert_weights.py resnet50-0676ba61.pth r50_tv.pth MODEL.RESNETS.DEPTH 50

The model the weights are loaded into is built from --config-file (plus KEY VALUE overrides); without
it, from the run's config.yaml when IN is a gn_det checkpoint with one beside it; else from the
defaults plus what the file shows (depth, widths, norms, heads, class count, the source's input
convention). OUT holds {"model": the loaded tensors in gn_det's names and shapes, "input_convention",
"converted_from"}: keys the file did not provide are left out, so loading OUT reports them as missing.
Tensors whose shapes do not fit that model are an error (nothing is written): pass the config the
weights were trained with. Flags may come anywhere; a mistake is one line and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "convert_weights.py"


def parse_args(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="weights file: .pth/.pkl in any known format")
    p.add_argument("output", help="where to write the gn_det .pth")
    p.add_argument("--config-file", "--config", dest="config_file", default="",
                   help="config of the model to load into (default: the run's config.yaml beside a gn_det "
                        "checkpoint, else inferred from the file)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return p.parse_args(argv)


def model_config(args, weights, fmt):
    """The config of the model to load into, and a phrase saying where it came from."""
    from gn_det.checkpoint.infer_config import infer_cfg_overrides
    from gn_det.config import get_cfg, resolve_config_path

    cfg = get_cfg()
    beside = os.path.join(os.path.dirname(os.path.abspath(args.input)), "config.yaml")
    if args.config_file:
        source = resolve_config_path(args.config_file)
        cfg.merge_from_file(source)
    elif fmt.name == "gn_det" and os.path.isfile(beside):
        source = beside
        cfg.merge_from_file(source)
    else:
        source = "the defaults and the shapes in the file"
        cfg.merge_from_list(infer_cfg_overrides(weights, fmt))
    if len(args.opts) % 2:
        raise UserError(f"overrides come as KEY VALUE pairs; {args.opts[-1]} has no value")
    cfg.merge_from_list(list(args.opts) + ["MODEL.DEVICE", "cpu"])
    cfg.freeze()
    return cfg, source


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from gn_det.checkpoint import load_converted, read_converted
    from gn_det.modeling import build_model  # imported late: --help works without building anything
    from gn_det.utils.file_io import atomic_torch_save

    weights, fmt = read_converted(args.input)
    cfg, source = model_config(args, weights, fmt)
    model = build_model(cfg)
    report = load_converted(model, weights, fmt, args.input, cfg=cfg)  # table + input-convention warnings
    if report.shape_mismatched:
        key, a, b = report.shape_mismatched[0]
        raise UserError(f"{len(report.shape_mismatched)} tensor(s) of {args.input} do not fit the model built from "
                        f"{source} (first: {key}: {tuple(a)} in the file, {tuple(b)} in the model); nothing written. "
                        "Pass --config-file with the config these weights were trained with")
    state = model.state_dict()
    out = {"model": {k: state[k].detach().clone() for k in report.matched}, "converted_from": os.path.abspath(args.input)}
    if fmt.convention is not None:
        recorded = dataclasses.asdict(fmt.convention)
        recorded["how_known"] = f"recorded when converting {os.path.basename(args.input)} ({fmt.name})"
        recorded["pixel_mean"], recorded["pixel_std"] = list(recorded["pixel_mean"]), list(recorded["pixel_std"])
        out["input_convention"] = recorded
    atomic_torch_save(out, args.output)
    print(f"Wrote {args.output}: {len(out['model'])} tensors in gn_det names (format 'gn_det'), loaded into the "
          f"model built from {source}.")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(PROG, main))
