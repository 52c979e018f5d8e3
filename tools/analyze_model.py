#!/usr/bin/env python
"""What a model costs: parameters, FLOPs and activation memory (detectron2's analyze_model.py, with
the norms' own cost shown).

  python tools/analyze_model.py --config configs/mask_rcnn_R_50_FPN_1x_gn.yaml --tasks parameter flop activation \\
      -n 5 DATASETS.TEST "('shapes_val',)"
  python tools/analyze_model.py --config output/gn_mask_rcnn_shapes/config.yaml --tasks flop \\
      MODEL.WEIGHTS output/gn_mask_rcnn_shapes/model_final.pth

parameter: exact counts per part (stem, res2-res5, FPN, RPN, box head, mask head) and in total.
flop: inference GFLOPs per image over the first N images of DATASETS.TEST[0], mean +- std (fvcore's
counter: one multiply-add = one flop; group/batch/layer/instance norm counted by fvcore's formulas),
per part, per operator and per norm type, and the ops fvcore does not count. The mask head runs on the
detections, so its FLOPs depend on the weights (random without MODEL.WEIGHTS).
activation: fvcore's inference activation count (conv/linear outputs, millions) and the memory one
training forward keeps for backward per image (MiB; on a GPU also CUDA's peak of the step).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.utils.cli import ArgumentParser, UserError, run_tool  # noqa: E402

PROG = "analyze_model.py"
TASKS = ("parameter", "flop", "activation")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """--config, --tasks, -n, --register-coco, KEY VALUE overrides."""
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--config-file", dest="config", required=True, help="config file")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, required=True, help="what to measure")
    parser.add_argument("-n", "--num-inputs", dest="num", type=int, default=10, help="images of DATASETS.TEST[0] (default 10)")
    parser.add_argument("--register-coco", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_ROOT"),
                        help="register a COCO-format dataset (then name it in DATASETS.TEST)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def _pm(stat, fmt: str = ".3f") -> str:
    return f"{stat[0]:{fmt}} +- {stat[1]:{fmt}}"


def report_parameters(model) -> str:
    """The per-part parameter table."""
    from gn_det.benchmark.formatting import Column, Table, render
    from gn_det.benchmark.model_cost import parameter_table

    rows = [{"part": r.part, "total": f"{r.total:,}", "trainable": f"{r.trainable:,}"} for r in parameter_table(model)]
    return render(Table([Column("part", "part"), Column("total", "parameters", None, True),
                         Column("trainable", "trainable", None, True)], rows, title="parameters (exact)"), "text")


def report_flops(stats, dataset: str, size: str) -> str:
    """Total, per part, per operator, per norm, and what was not counted."""
    total = stats.total[0]
    lines = [f"FLOPs: {_pm(stats.total)} {stats.unit} per image, over {stats.num_images} image(s) of {dataset} "
             f"(input {size})",
             "  by part: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.by_part.items()),
             "  by operator: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.by_operator.items()),
             "  norms: " + (", ".join(f"{k} {v:.4f} ({100 * v / total:.2f}%)" for k, v in stats.by_norm.items())
                            or "none") + f"; all norms {stats.norm_total:.4f} GFLOPs ({100 * stats.norm_total / total:.2f}%)",
             "  not counted (fvcore has no formula; runs over all images): "
             + ", ".join(f"{op} x{n}" for op, n in stats.uncounted.most_common())]
    return "\n".join(lines)


def report_activations(stats) -> str:
    """Inference activation count and training-forward memory."""
    lines = [f"activations: {_pm(stats.inference_count)} million per image at inference (fvcore: conv/linear outputs)",
             f"  training forward keeps {_pm(stats.train_saved, '.1f')} MiB per image for backward (tensors autograd "
             "saves, parameters excluded)"]
    lines.append(f"  CUDA peak of a training step: {_pm(stats.train_peak, '.1f')} MiB per image" if stats.train_peak
                 else "  CUDA peak memory: not measured (CPU run)")
    return "\n".join(lines)


def _run(argv: Optional[List[str]] = None) -> int:
    import logging

    from gn_det.benchmark.model_cost import activation_stats, dataset_samples, flop_stats
    from gn_det.checkpoint import load_weights
    from gn_det.config import config_from_args
    from gn_det.data import register_from_cfg
    from gn_det.modeling import build_model
    from gn_det.utils.device import resolve_cfg_device

    args = parse_args(argv)
    if args.num < 1:
        raise UserError(f"-n must be >= 1, got {args.num}")
    cfg = config_from_args(args.config, args.opts, args.register_coco)
    register_from_cfg(cfg)
    resolve_cfg_device(cfg)
    cfg.freeze()
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_weights(model, cfg.MODEL.WEIGHTS, cfg=cfg)
    print(f"config: {args.config}; weights: {cfg.MODEL.WEIGHTS or 'none (random init)'}; device: {cfg.MODEL.DEVICE}")
    if "parameter" in args.tasks:
        print(report_parameters(model))
    if "flop" in args.tasks or "activation" in args.tasks:
        if not cfg.DATASETS.TEST:
            raise UserError("FLOPs and activations are measured on real images: set DATASETS.TEST, e.g. "
                            "DATASETS.TEST \"('shapes_val',)\"")
        dataset = cfg.DATASETS.TEST[0]
        samples = dataset_samples(cfg, dataset, args.num)
        sizes = sorted({tuple(s.test_image.shape[-2:]) for s in samples})
        size = ", ".join(f"{h}x{w}" for h, w in sizes[:4]) + (" ..." if len(sizes) > 4 else "")
        logging.getLogger("gn_det").setLevel(logging.WARNING)
        if "flop" in args.tasks:
            print(report_flops(flop_stats(model, samples), dataset, size))
        if "activation" in args.tasks:
            print(report_activations(activation_stats(model, samples)))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: ``_run`` with a mistake reported as one line, exit status 2."""
    return run_tool(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
