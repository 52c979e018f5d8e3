#!/usr/bin/env python
"""Convert weights in any format gn_det.checkpoint knows into a gn_det .pth, and print the load table.

    python tools/convert_weights.py R-50.pkl R-50_gn_det.pth
    python tools/convert_weights.py model_final_f10217.pkl d2_mask_rcnn.pth --config-file my_recipe.yaml
    python tools/convert_weights.py resnet50-0676ba61.pth r50_tv.pth MODEL.RESNETS.DEPTH 50

The model the weights are loaded into is built from --config-file (plus KEY VALUE overrides) or, without
it, from the defaults plus what the file shows (depth, norms, heads, class count, the source's input
convention). OUT holds {"model": the loaded tensors in gn_det's names and shapes, "input_convention",
"converted_from"}: keys the file did not provide are left out, so loading OUT reports them as missing.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

from gn_det.checkpoint import load_converted, read_converted
from gn_det.checkpoint.infer_config import infer_cfg_overrides
from gn_det.config import get_cfg
from gn_det.utils.file_io import atomic_torch_save


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="weights file: .pth/.pkl in any known format")
    p.add_argument("output", help="where to write the gn_det .pth")
    p.add_argument("--config-file", default="", help="config of the model to load into (default: inferred)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from gn_det.modeling import build_model  # imported late: --help works without building anything

    weights, fmt = read_converted(args.input)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    else:
        cfg.merge_from_list(infer_cfg_overrides(weights, fmt))
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    model = build_model(cfg)
    report = load_converted(model, weights, fmt, args.input, cfg=cfg)  # table + input-convention warnings
    state = model.state_dict()
    out = {"model": {k: state[k].detach().clone() for k in report.matched}, "converted_from": os.path.abspath(args.input)}
    if fmt.convention is not None:
        recorded = dataclasses.asdict(fmt.convention)
        recorded["how_known"] = f"recorded when converting {os.path.basename(args.input)} ({fmt.name})"
        recorded["pixel_mean"], recorded["pixel_std"] = list(recorded["pixel_mean"]), list(recorded["pixel_std"])
        out["input_convention"] = recorded
    atomic_torch_save(out, args.output)
    print(f"Wrote {args.output}: {len(out['model'])} tensors in gn_det names (format 'gn_det').")
    return 0


if __name__ == "__main__":
    sys.exit(main())
