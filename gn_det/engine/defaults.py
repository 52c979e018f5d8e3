"""The standard training run: argument parser, setup (output dir, logging, seed, config.yaml) and
``DefaultTrainer`` (model, SGD, schedule, loader, checkpointer and hooks from a config), detectron2's
engine/defaults.py shape."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from gn_det.checkpoint.checkpointer import Checkpointer, unwrap_model
from gn_det.evaluation import COCOEvaluator, format_results, inference_on_dataset
from gn_det.utils import comm
from gn_det.utils.cli import ArgumentParser
from gn_det.utils.file_io import atomic_write_text

from . import hooks
from .events import ConsoleWriter, JSONWriter, TensorboardWriter
from .distributed import wrap_data_parallel
from .precise_bn import has_bn_stats, running_stat_layers
from .resume import ResumableSchedule
from .solver import build_gradient_clipper
from .solver import build_lr_scheduler as _build_lr_scheduler
from .solver import build_optimizer as _build_optimizer
from .train_loop import SimpleTrainer

logger = logging.getLogger(__name__)

WRITER_PERIOD = 20  # iterations between metrics.json / tensorboard / console lines (detectron2's default)


def default_argument_parser(description: str = "Train or evaluate a gn_det detector") -> argparse.ArgumentParser:
    """detectron2's flags: --config(-file), --resume, --eval-only, --num-gpus, --num-machines,
    --machine-rank, --dist-url, --register-coco NAME JSON IMAGE_ROOT, plus --overwrite and --debug,
    then KEY VALUE overrides. Flags may also come after the overrides; errors are one line, exit 2."""
    p = ArgumentParser(description=description,
                       epilog="Trailing KEY VALUE pairs override config keys, e.g. SOLVER.BASE_LR 0.01")
    p.add_argument("--config", "--config-file", dest="config_file", default="", metavar="FILE",
                   help="config YAML; a bare file name is looked up in configs/")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, iteration, data position) "
                        "with the schedule of the current config")
    p.add_argument("--overwrite", action="store_true",
                   help="start a fresh run in an OUTPUT_DIR that holds another run: delete its checkpoints, "
                        "metrics.json, event files, logs and inference/ first")
    p.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS on DATASETS.TEST, no training")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="processes per machine: one per GPU (NCCL), or CPU processes (gloo) without GPUs")
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0, help="this machine's index, 0 .. num-machines-1")
    p.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0; 'auto' on one machine")
    p.add_argument("--dist-backend", default="auto", choices=("auto", "gloo", "nccl"),
                   help="process-group backend: auto = NCCL for CUDA processes, gloo for CPU ones; gloo with CUDA "
                        "runs several processes on one GPU (a multi-process check on a one-GPU machine)")
    p.add_argument("--register-coco", nargs=3, action="append", default=[],
                   metavar=("NAME", "JSON_FILE", "IMAGE_ROOT"),
                   help="register a COCO-format dataset under NAME (repeatable)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return p


def check_output_dir(output_dir: str) -> None:
    """Make OUTPUT_DIR and prove it writable, or raise naming it and the fix."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write_test.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"OUTPUT_DIR '{output_dir}' is not writable ({e.strerror or e}); pass a "
                              "writable directory, e.g. OUTPUT_DIR ./output") from e


def setup_logger(output_dir: Optional[str], rank: int = 0, names=("gn_det", "__main__", "train_net")) -> None:
    """INFO logging for gn_det: console on rank 0; OUTPUT_DIR/log.txt (log.txt.rankN on other ranks)."""
    fmt = logging.Formatter("[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    handlers: List[logging.Handler] = []
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        handlers.append(console)
    if output_dir:
        path = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
        file = logging.FileHandler(path, encoding="utf-8")
        file.setFormatter(fmt)
        handlers.append(file)
    for name in names:
        lg = logging.getLogger(name)
        lg.setLevel(logging.INFO)
        lg.propagate = False
        for h in list(lg.handlers):
            if getattr(h, "_gn_det", False):
                lg.removeHandler(h)
                h.close()
        for h in handlers:
            h._gn_det = True  # ours: replaced when setup runs again in this process (tests)
            lg.addHandler(h)


def seed_all_rng(seed: int) -> None:
    """Seed torch, numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def config_path(cfg, eval_only: bool = False) -> str:
    """Where a run records its resolved config: OUTPUT_DIR/config.yaml for training; beside its results,
    OUTPUT_DIR/inference/config.yaml, for --eval-only (so it never replaces the trained run's)."""
    if eval_only:
        return os.path.join(cfg.OUTPUT_DIR, "inference", "config.yaml")
    return os.path.join(cfg.OUTPUT_DIR, "config.yaml")


def default_setup(cfg, args: Optional[argparse.Namespace] = None) -> None:
    """Output dir, logging, seed (SEED + rank; random and logged when SEED < 0) and the resolved
    config in ``config_path`` (rank 0, atomically)."""
    rank = comm.get_rank()
    check_output_dir(cfg.OUTPUT_DIR)
    setup_logger(cfg.OUTPUT_DIR, rank)
    logger.info("Rank %d of %d; command line: %s", rank, comm.get_world_size(), " ".join(sys.argv))
    if args is not None:
        logger.info("Arguments: %s", args)
    if rank == 0:
        path = config_path(cfg, eval_only=bool(getattr(args, "eval_only", False)))
        atomic_write_text(path, cfg.dump())
        logger.info("Full config saved to %s", path)
    seed = cfg.SEED if cfg.SEED >= 0 else int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    seed_all_rng(seed + rank)
    logger.info("Seed %d (+ rank)%s", seed, "" if cfg.SEED >= 0 else " drawn at random (SEED < 0)")
    if cfg.CUDNN_BENCHMARK:
        torch.backends.cudnn.benchmark = True


class DefaultTrainer(SimpleTrainer):
    """Everything a training run needs, built from ``cfg``: model (DDP across processes), SGD with
    norm-specific weight decay, warmup + multi-step LR, the resumable loader, checkpointer, and hooks
    (LR, precise BN, checkpoint, evaluation, metrics.json / tensorboard / console).

    Customise one piece by subclassing and overriding its classmethod, as in detectron2:
    ``build_model``, ``build_optimizer``, ``build_lr_scheduler``, ``build_train_loader``,
    ``build_test_loader``, ``build_evaluator``; ``test`` asks ``build_test_loader`` and
    ``build_evaluator`` of the class it is called on.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        loader = self.build_train_loader(cfg)
        model, grad_sync = wrap_data_parallel(model)
        super().__init__(model, loader, optimizer, clip_gradients=build_gradient_clipper(cfg),
                         amp=cfg.SOLVER.AMP.ENABLED, amp_dtype=cfg.SOLVER.AMP.DTYPE, grad_sync=grad_sync)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # The scheduler is saved with its config values and restored keeping the current config's schedule.
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, optimizer=optimizer,
                                         scheduler=ResumableSchedule(self.scheduler, cfg),
                                         sampler=loader, grad_scaler=self.grad_scaler)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ override points
    @classmethod
    def build_model(cls, cfg) -> nn.Module:
        """The detector of ``cfg`` (gn_det.modeling.build_model), on MODEL.DEVICE, random init."""
        from gn_det.modeling import build_model

        model = build_model(cfg)
        logger.info("Model: %s with %.2fM parameters (%.2fM trainable)", type(model).__name__,
                    sum(p.numel() for p in model.parameters()) / 1e6,
                    sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model: nn.Module) -> torch.optim.Optimizer:
        """SGD with per-parameter weight decay and LR factors (gn_det.engine.solver)."""
        return _build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """Warmup + multi-step LR per iteration (gn_det.engine.solver)."""
        return _build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        """The resumable training loader of this process's share of SOLVER.IMS_PER_BATCH."""
        from gn_det.data import build_detection_train_loader

        return build_detection_train_loader(cfg, rank=comm.get_rank(), world_size=comm.get_world_size(), start_iter=0)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """This process's shard of ``dataset_name``, in order, one image per batch."""
        from gn_det.data import build_detection_test_loader

        return build_detection_test_loader(cfg, dataset_name, rank=comm.get_rank(), world_size=comm.get_world_size())

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None):
        """COCO box (and mask) AP of ``dataset_name`` by TEST.EVAL_BACKEND, results written to ``output_folder``
        (default OUTPUT_DIR/inference/<DATASET>)."""
        return COCOEvaluator(dataset_name, output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name),
                             backend=cfg.TEST.EVAL_BACKEND)

    # ------------------------------------------------------------------ running
    def resume_or_load(self, resume: bool = True, preloaded: Optional[Tuple[Any, Any]] = None) -> None:
        """With ``resume`` and a checkpoint in OUTPUT_DIR, continue from it; else load MODEL.WEIGHTS
        (``preloaded``: MODEL.WEIGHTS already read and converted, e.g. by validation)."""
        self.start_iter = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume, cfg=self.cfg,
                                                           preloaded=preloaded)

    def build_hooks(self) -> List[hooks.HookBase]:
        """LR, precise BN, running statistics averaged over processes, checkpoint, evaluation, writers, in
        that order (see gn_det.engine.hooks):
        the checkpoint of an iteration is written before its evaluation, so a failed evaluation
        never costs the trained model."""
        cfg = self.cfg
        out: List[hooks.HookBase] = [hooks.LRScheduler(self.optimizer, self.scheduler)]
        model = unwrap_model(self.model)
        if cfg.TEST.PRECISE_BN.ENABLED and cfg.DATASETS.TEST and has_bn_stats(model):
            out.append(hooks.PreciseBN(cfg.TEST.EVAL_PERIOD, model, self._precise_bn_loader,
                                       cfg.TEST.PRECISE_BN.NUM_ITER))
        if comm.get_world_size() > 1 and running_stat_layers(model):
            out.append(hooks.AverageRunningStats(model, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD,
                                                 bool(cfg.DATASETS.TEST)))
        out.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
        if cfg.DATASETS.TEST:
            out.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(cfg, unwrap_model(self.model))))
        if comm.is_main_process():
            writers = [ConsoleWriter(cfg.SOLVER.MAX_ITER, WRITER_PERIOD),
                       JSONWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json")),
                       TensorboardWriter(cfg.OUTPUT_DIR)]
            out.append(hooks.PeriodicWriter(writers, WRITER_PERIOD))
        return out

    def _precise_bn_loader(self):
        # A fresh loader: precise BN must not move the training stream (resume stays exact).
        return iter(self.build_train_loader(self.cfg))

    def train(self) -> Dict:
        """Train from ``start_iter`` to SOLVER.MAX_ITER; the last evaluation's results (or {}).

        A run resumed after its last iteration (a finished run, or a MAX_ITER now at or below the
        checkpoint's) trains nothing and evaluates, as detectron2 does.
        """
        if self.start_iter >= self.max_iter:
            logger.info("Training already finished: the checkpoint is at iteration %d and SOLVER.MAX_ITER is %d; "
                        "evaluating it", self.start_iter - 1, self.max_iter)
            return self.test(self.cfg, unwrap_model(self.model)) if self.cfg.DATASETS.TEST else {}
        super().train(self.start_iter, self.max_iter)
        for h in self._hooks:
            if isinstance(h, hooks.EvalHook):
                return h.latest_results
        return {}

    @classmethod
    def test(cls, cfg, model: nn.Module, evaluators: Optional[Sequence[Any]] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
        """Evaluate ``model`` on each DATASETS.TEST dataset with ``cls.build_evaluator`` (or ``evaluators``,
        one per dataset); ``{dataset: {"bbox": {...}, "segm": {...}}}`` (COCO AP in percent)."""
        if evaluators is not None and len(evaluators) != len(cfg.DATASETS.TEST):
            raise ValueError(f"{len(evaluators)} evaluators for {len(cfg.DATASETS.TEST)} datasets in DATASETS.TEST")
        results: Dict[str, Dict] = OrderedDict()
        for i, name in enumerate(cfg.DATASETS.TEST):
            loader = cls.build_test_loader(cfg, name)
            evaluator = evaluators[i] if evaluators is not None else cls.build_evaluator(cfg, name)
            results[name] = inference_on_dataset(model, loader, evaluator)
            if comm.is_main_process():
                logger.info("Evaluation results for %s (percent):\n%s", name, format_results(results[name]))
        return results
