"""Training: process launch, the hook-based loop, solver, hooks, checkpoint-driven resume."""
from .defaults import (DefaultTrainer, check_batch_split, check_output_dir, default_argument_parser,
                       default_setup, seed_all_rng, setup_logger)
from .events import EventStorage
from .hooks import EvalHook, LRScheduler, PeriodicCheckpointer, PeriodicWriter, PreciseBN
from .launch import launch, under_torchrun
from .predictor import DefaultPredictor
from .solver import build_gradient_clipper, build_lr_scheduler, build_optimizer, get_param_groups
from .train_loop import HookBase, SimpleTrainer, TrainerBase

__all__ = ["DefaultPredictor", "DefaultTrainer", "EvalHook", "EventStorage", "HookBase", "LRScheduler", "PeriodicCheckpointer",
           "PeriodicWriter", "PreciseBN", "SimpleTrainer", "TrainerBase", "build_gradient_clipper",
           "build_lr_scheduler", "build_optimizer", "check_batch_split", "check_output_dir",
           "default_argument_parser", "default_setup", "get_param_groups", "launch", "seed_all_rng",
           "setup_logger", "under_torchrun"]
