#!/usr/bin/env python
r"""Pretrain the tiny detection recipes' ResNet as an image classifier (the miniature's "ImageNet" step).

    python tools/pretrain_backbone.py --config configs/tiny/pretrain/R_18_bn.yaml OUTPUT_DIR output/pretrain/R_18_bn
    python tools/pretrain_backbone.py --config configs/tiny/pretrain/R_18_gn.yaml --resume OUTPUT_DIR ...
    python tools/train_net.py --config configs/tiny/finetune/frozenbn.yaml \
        MODEL.WEIGHTS output/pretrain/R_18_bn/model_final.pth

Trains MODEL.RESNETS (its norm, conv and depth; the module names of the detectors' backbone,
``backbone.bottom_up``) with a linear classifier on synthetic textures (gn_det.data.textures: not the
detection shapes) at SOLVER.IMS_PER_BATCH images per step, with the engine's solver, checkpoints and
``--resume``. Writes OUTPUT_DIR/config.yaml, metrics.json (``loss_cls``; ``classification/accuracy``
and ``classification/loss`` on PRETRAIN.NUM_VAL_IMAGES held-out images), checkpoints and
model_final.pth, which MODEL.WEIGHTS loads into any detector of the same backbone (the classifier is
dropped). A mistake is one line, exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gn_det.config import config_from_args  # noqa: E402
from gn_det.engine import clean_output_dir, default_setup, launch  # noqa: E402
from gn_det.engine.launch import check_launch_args  # noqa: E402
from gn_det.engine.validate import (_check_run_dir, check_batch_split, check_device,  # noqa: E402
                                    check_output_dir_writable, check_solver)
from gn_det.utils.cli import USER_ERRORS, ArgumentParser, UserError, debug_requested, one_line  # noqa: E402
from gn_det.utils.device import resolve_cfg_device  # noqa: E402

PROG = "pretrain_backbone.py"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """--config FILE, --resume, --overwrite, --num-gpus N, then KEY VALUE overrides."""
    p = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "--config-file", dest="config_file", required=True, metavar="FILE",
                   help="pretraining recipe, e.g. configs/tiny/pretrain/R_18_gn.yaml")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an earlier run in OUTPUT_DIR first")
    p.add_argument("--num-gpus", type=int, default=1, help="processes (one per GPU; gloo CPU processes without)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace):
    """Defaults <- config file <- overrides, with MODEL.DEVICE resolved."""
    cfg = config_from_args(args.config_file, args.opts)
    if not 2 <= cfg.PRETRAIN.NUM_CLASSES <= 8:
        raise UserError(f"PRETRAIN.NUM_CLASSES={cfg.PRETRAIN.NUM_CLASSES} must be in [2, 8] (texture classes)")
    if cfg.PRETRAIN.IMAGE_SIZE < 32:
        raise UserError(f"PRETRAIN.IMAGE_SIZE={cfg.PRETRAIN.IMAGE_SIZE} must be >= 32 (the ResNet's stride)")
    if cfg.PRETRAIN.NUM_VAL_IMAGES < 1:
        raise UserError(f"PRETRAIN.NUM_VAL_IMAGES={cfg.PRETRAIN.NUM_VAL_IMAGES} must be >= 1")
    if cfg.MODEL.WEIGHTS:
        raise UserError("MODEL.WEIGHTS is set, but pretraining starts from a random initialisation: "
                        "pass MODEL.WEIGHTS ''")
    return cfg


def preflight(args: argparse.Namespace) -> None:
    """Everything checkable before a process starts or a file is written: config, solver, batch split,
    OUTPUT_DIR (another run there needs --resume or --overwrite), the model builds."""
    try:
        check_launch_args(args.num_gpus)
        if args.resume and args.overwrite:
            raise UserError("--resume and --overwrite contradict each other; pass one")
        cfg = load_config(args)
        check_device(cfg, args.num_gpus)
        check_solver(cfg)
        check_batch_split(cfg, args.num_gpus)
        check_output_dir_writable(cfg.OUTPUT_DIR)
        _check_run_dir(cfg.OUTPUT_DIR, resume=args.resume, overwrite=args.overwrite)
        from gn_det.engine.pretrain import PretrainTrainer

        resolve_cfg_device(cfg)
        cfg.MODEL.DEVICE = "cpu"  # building to check the recipe needs no GPU
        PretrainTrainer.build_model(cfg)
        if args.overwrite:
            clean_output_dir(cfg.OUTPUT_DIR)
    except UserError:
        raise
    except USER_ERRORS as e:
        raise UserError(one_line(e)) from e


def main(args: argparse.Namespace) -> dict:
    """Train in this process (one of ``--num-gpus``); the last held-out evaluation."""
    from gn_det.engine.pretrain import PretrainTrainer

    cfg = load_config(args)
    resolve_cfg_device(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    trainer = PretrainTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main(argv: Optional[List[str]] = None) -> None:
    """Parse, check (one line, exit 2), then launch the processes."""
    args = parse_args(argv)
    try:
        preflight(args)
    except UserError as e:
        if debug_requested(argv):
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    launch(main, args.num_gpus, args=(args,))


if __name__ == "__main__":
    invoke_main()
