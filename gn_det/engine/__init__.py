"""Training: process launch, the hook-based loop, solver, hooks, checkpoint-driven resume, validation."""
from .defaults import (DefaultTrainer, check_output_dir, config_path, default_argument_parser, default_setup,
                       seed_all_rng, setup_logger)
from .events import EventStorage
from .hooks import EvalHook, LRScheduler, PeriodicCheckpointer, PeriodicWriter, PreciseBN
from .launch import launch, under_torchrun
from .predictor import DefaultPredictor
from .resume import ResumableSchedule
from .solver import build_gradient_clipper, build_lr_scheduler, build_optimizer, get_param_groups
from .train_loop import HookBase, SimpleTrainer, TrainerBase
from .validate import PreparedRun, check_batch_split, clean_output_dir, validate_run

__all__ = ["DefaultPredictor", "DefaultTrainer", "EvalHook", "EventStorage", "HookBase", "LRScheduler", "PeriodicCheckpointer",
           "PeriodicWriter", "PreciseBN", "PreparedRun", "ResumableSchedule", "SimpleTrainer", "TrainerBase",
           "build_gradient_clipper", "build_lr_scheduler", "build_optimizer", "check_batch_split",
           "check_output_dir", "clean_output_dir", "config_path", "default_argument_parser", "default_setup",
           "get_param_groups", "launch", "seed_all_rng", "setup_logger", "under_torchrun", "validate_run"]
