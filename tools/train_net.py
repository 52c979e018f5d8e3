#!/usr/bin/env python
"""Train and evaluate a gn_det detector (detectron2's tools/train_net.py shape).

    python tools/train_net.py --config configs/tiny/gn_mask_rcnn_shapes.yaml
    python tools/train_net.py --config gn_mask_rcnn.yaml --num-gpus 8 SOLVER.IMS_PER_BATCH 16
    python tools/train_net.py --config FILE --eval-only MODEL.WEIGHTS OUTPUT_DIR/model_final.pth
    python tools/train_net.py --config FILE --resume            # continue from OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --config FILE --eval-only --resume   # evaluate OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --config FILE --register-coco mine data/ann.json data/images \
        DATASETS.TRAIN "('mine',)" DATASETS.TEST "()" MODEL.ROI_HEADS.NUM_CLASSES 3

Everything the run needs (config, datasets, weights, model, OUTPUT_DIR) is checked before the first
step and before anything is written; a mistake is one line, ``train_net.py: error: ...``, exit
status 2 (``--debug`` or GN_DET_DEBUG=1 shows the traceback).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gn_det.checkpoint.checkpointer import load_model_weights  # noqa: E402
from gn_det.config import config_from_args  # noqa: E402
from gn_det.engine import (  # noqa: E402
    DefaultTrainer, PreparedRun, clean_output_dir, default_argument_parser, default_setup, launch, under_torchrun,
    validate_run)
from gn_det.engine.launch import check_launch_args  # noqa: E402
from gn_det.engine.validate import last_checkpoint_file  # noqa: E402
from gn_det.utils import comm  # noqa: E402
from gn_det.utils.cli import USER_ERRORS, UserError, debug_requested, one_line  # noqa: E402
from gn_det.utils.device import resolve_cfg_device  # noqa: E402

logger = logging.getLogger("train_net")

PROG = "train_net.py"


def load_config(args):
    """Defaults <- config file <- --register-coco <- KEY VALUE overrides (not frozen, no side effects)."""
    return config_from_args(args.config_file, args.opts, args.register_coco)


def register_datasets(cfg) -> None:
    """Register DATASETS.REGISTER_COCO (and --register-coco) in this process."""
    from gn_det.data import register_from_cfg

    register_from_cfg(cfg)


def setup(args):
    """The frozen config of this process, with its datasets registered and OUTPUT_DIR prepared."""
    cfg = load_config(args)
    register_datasets(cfg)
    resolve_cfg_device(cfg)  # "auto" -> cuda:<local rank> or cpu, recorded in config.yaml
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args, prepared: Optional[PreparedRun] = None):
    """Train then evaluate, or (--eval-only) evaluate MODEL.WEIGHTS; returns the evaluation results.

    ``prepared``: what validation read (MODEL.WEIGHTS, converted) and found (warnings), when it ran
    in this process.
    """
    cfg = setup(args)
    prepared = prepared or PreparedRun()
    for warning in prepared.warnings:
        logger.warning(warning)
    if args.eval_only:
        # detectron2: with --resume, OUTPUT_DIR's last_checkpoint if there is one, else MODEL.WEIGHTS
        checkpoint = last_checkpoint_file(cfg.OUTPUT_DIR) if args.resume else None
        if not checkpoint and not cfg.MODEL.WEIGHTS:
            raise UserError("--eval-only needs weights: pass MODEL.WEIGHTS path/to/model_final.pth")
        model = DefaultTrainer.build_model(cfg)
        if checkpoint:
            load_model_weights(model, checkpoint, cfg=cfg)
        else:
            load_model_weights(model, cfg.MODEL.WEIGHTS, cfg=cfg, preloaded=prepared.weights)
        results = DefaultTrainer.test(cfg, model)
    else:
        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume, preloaded=prepared.weights)
        results = trainer.train()
    if comm.is_main_process():
        for name, res in results.items():
            summary = ", ".join(f"{label} AP {res[task]['AP']:.1f}" for task, label in (("bbox", "box"), ("segm", "mask"))
                                if task in res)
            logger.info("%s: %s (percent; details in %s)", name, summary,
                        os.path.join(cfg.OUTPUT_DIR, "inference", name, "metrics.json"))
    return results


def world_size(args) -> int:
    """The number of processes the run will have."""
    return int(os.environ["WORLD_SIZE"]) if under_torchrun() else args.num_gpus * args.num_machines


def procs_per_machine(args) -> int:
    """The number of processes the run will have on this machine."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if under_torchrun() else args.num_gpus


def preflight(args) -> PreparedRun:
    """Validate the whole run once, before any process starts and before anything is written; then
    create OUTPUT_DIR (emptied of an earlier run with --overwrite). Raises UserError (one line).

    Under torchrun every process comes here: global rank 0 checks OUTPUT_DIR for another run and
    prepares it; local rank 0 of each machine checks datasets, weights and the model.
    """
    rank0 = not under_torchrun() or int(os.environ["RANK"]) == 0
    local0 = not under_torchrun() or int(os.environ["LOCAL_RANK"]) == 0
    try:
        if not under_torchrun():  # torchrun made the processes already
            check_launch_args(args.num_gpus, args.num_machines, args.machine_rank, args.dist_url)
        cfg = load_config(args)
        prepared = validate_run(cfg, eval_only=args.eval_only, resume=args.resume, overwrite=args.overwrite,
                                world_size=world_size(args), procs_per_machine=procs_per_machine(args),
                                check_run_dir=rank0, check_inputs=local0, dist_backend=args.dist_backend)
        if rank0:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            if args.overwrite and not args.eval_only:
                removed = clean_output_dir(cfg.OUTPUT_DIR)
                if removed:
                    prepared.warnings.append(f"--overwrite: removed the earlier run's {', '.join(removed)} "
                                             f"from {cfg.OUTPUT_DIR}")
    except UserError:
        raise
    except USER_ERRORS as e:
        raise UserError(one_line(e)) from e
    return prepared


def invoke_main(argv=None) -> None:
    """The command line: parse, validate (one line and exit 2 on a mistake), then launch the processes."""
    parser = default_argument_parser()
    parser.prog = PROG
    args = parser.parse_args(argv)
    try:
        prepared = preflight(args)
    except UserError as e:
        if debug_requested(argv) or args.debug:
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    if world_size(args) > 1 and not under_torchrun():
        prepared = prepared.without_weights()  # each process reads its own; do not pickle gigabytes
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args, prepared), device=prepared.device, backend=args.dist_backend)


if __name__ == "__main__":
    invoke_main()
