#!/usr/bin/env python
"""Train and evaluate a gn_det detector (detectron2's tools/train_net.py shape).

    python tools/train_net.py --config configs/tiny/gn_mask_rcnn_shapes.yaml
    python tools/train_net.py --config gn_mask_rcnn.yaml --num-gpus 8 SOLVER.IMS_PER_BATCH 16
    python tools/train_net.py --config FILE --eval-only MODEL.WEIGHTS OUTPUT_DIR/model_final.pth
    python tools/train_net.py --config FILE --resume            # continue from OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --config FILE --register-coco mine data/ann.json data/images \
        DATASETS.TRAIN "('mine',)" DATASETS.TEST "()" MODEL.ROI_HEADS.NUM_CLASSES 3
"""
from __future__ import annotations

import logging
import os
import sys

from gn_det.checkpoint.checkpointer import load_model_weights
from gn_det.config import get_cfg, resolve_config_path
from gn_det.engine import (DefaultTrainer, check_batch_split, check_output_dir, default_argument_parser,
                           default_setup, launch, under_torchrun)
from gn_det.utils import comm
from gn_det.utils.device import resolve_cfg_device, resolve_device

logger = logging.getLogger("train_net")

SHAPES_DATASETS = ("shapes_train", "shapes_val")


def load_config(args):
    """Defaults <- config file <- --register-coco <- KEY VALUE overrides (not frozen, no side effects)."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(resolve_config_path(args.config_file))
    for name, json_file, image_root in args.register_coco:
        # Kept in the config so config.yaml records it and every process registers it.
        cfg.DATASETS.REGISTER_COCO = list(cfg.DATASETS.REGISTER_COCO) + [[name, json_file, image_root]]
    if args.opts:
        if len(args.opts) % 2:
            raise ValueError(f"Overrides come as KEY VALUE pairs; got an odd number: {args.opts}")
        cfg.merge_from_list(args.opts)
    return cfg


def register_datasets(cfg) -> None:
    """Register DATASETS.REGISTER_COCO (and --register-coco) in this process."""
    from gn_det.data import register_from_cfg

    register_from_cfg(cfg)


def ensure_builtin_data(cfg) -> None:
    """Generate the synthetic shapes dataset once, before any worker starts, if the config uses it."""
    from gn_det.data import datasets_root, ensure_shapes_dataset

    used = set(cfg.DATASETS.TRAIN) | set(cfg.DATASETS.TEST)
    registered = {entry[0] for entry in cfg.DATASETS.REGISTER_COCO}
    if used & set(SHAPES_DATASETS) - registered:
        root = os.path.join(datasets_root(), "shapes")
        ensure_shapes_dataset(root)


def setup(args):
    """The frozen config of this process, with its datasets registered and OUTPUT_DIR prepared."""
    cfg = load_config(args)
    register_datasets(cfg)
    resolve_cfg_device(cfg)  # "auto" -> cuda:<local rank> or cpu, recorded in config.yaml
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    """Train then evaluate, or (--eval-only) evaluate MODEL.WEIGHTS; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        from gn_det.modeling import build_model

        if not cfg.MODEL.WEIGHTS:
            raise ValueError("--eval-only needs weights: pass MODEL.WEIGHTS path/to/model_final.pth")
        model = build_model(cfg)
        load_model_weights(model, cfg.MODEL.WEIGHTS, cfg=cfg)
        results = DefaultTrainer.test(cfg, model)
    else:
        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    if comm.is_main_process():
        for name, res in results.items():
            summary = ", ".join(f"{label} AP {res[task]['AP']:.1f}" for task, label in (("bbox", "box"), ("segm", "mask"))
                                if task in res)
            logger.info("%s: %s (percent; details in %s)", name, summary,
                        os.path.join(cfg.OUTPUT_DIR, "inference", name, "metrics.json"))
    return results


def preflight(args) -> None:
    """Fail before spawning processes on errors every process would hit: unwritable OUTPUT_DIR,
    IMS_PER_BATCH not divisible by the number of processes; generate missing built-in data once."""
    cfg = load_config(args)
    world = int(os.environ["WORLD_SIZE"]) if under_torchrun() else args.num_gpus * args.num_machines
    check_output_dir(cfg.OUTPUT_DIR)
    if not args.eval_only:
        check_batch_split(cfg, world)
    if not under_torchrun() or int(os.environ.get("LOCAL_RANK", 0)) == 0:
        ensure_builtin_data(cfg)


def invoke_main(argv=None) -> None:
    args = default_argument_parser().parse_args(argv)
    try:
        preflight(args)
        device = load_config(args).MODEL.DEVICE
        resolve_device(device)  # MODEL.DEVICE cuda without CUDA: one line, before any process starts
    except (ValueError, PermissionError, FileNotFoundError, KeyError) as e:
        sys.exit(f"train_net.py: error: {e}")
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), device=device)


if __name__ == "__main__":
    invoke_main()
