"""Resume means "continue with the config you gave": the LR schedule on resume.

torch's LambdaLR checkpoints its multiplier's attributes (steps, gamma, warmup), so loading its state
would bring back the OLD schedule while MAX_ITER comes from the new config: extending a 1x run to 2x
would still decay at the 1x steps. ``ResumableSchedule`` is what the checkpointer saves and loads in
place of the scheduler: it restores only the iteration and the base LRs (detectron2 keeps those too),
builds every other value from the current config, and warns naming each value that changed.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

import torch

logger = logging.getLogger(__name__)

__all__ = ["ResumableSchedule", "schedule_values", "schedule_changes"]

# config key -> attribute of solver.WarmupMultiStep (the multiplier LambdaLR checkpoints)
_LAMBDA_ATTRS = {"STEPS": "steps", "GAMMA": "gamma", "WARMUP_FACTOR": "warmup_factor",
                 "WARMUP_ITERS": "warmup_iters", "WARMUP_METHOD": "warmup_method"}


def schedule_values(cfg) -> Dict[str, Any]:
    """The SOLVER values that shape the LR over iterations, as plain data."""
    s = cfg.SOLVER
    return {"MAX_ITER": int(s.MAX_ITER), "BASE_LR": float(s.BASE_LR), "STEPS": [int(x) for x in s.STEPS],
            "GAMMA": float(s.GAMMA), "WARMUP_FACTOR": float(s.WARMUP_FACTOR), "WARMUP_ITERS": int(s.WARMUP_ITERS),
            "WARMUP_METHOD": str(s.WARMUP_METHOD), "LR_SCHEDULER_NAME": str(s.LR_SCHEDULER_NAME),
            "BASE_LR_END": float(s.BASE_LR_END)}


def _recorded_values(state: Dict[str, Any]) -> Dict[str, Any]:
    """The schedule a checkpoint was trained with: its "solver" record, else (older checkpoints) what
    LambdaLR saved of the multiplier."""
    if isinstance(state.get("solver"), dict):
        return dict(state["solver"])
    lambdas = state.get("lr_lambdas") or [None]
    attrs = lambdas[0] if isinstance(lambdas[0], dict) else {}
    return {key: (list(attrs[attr]) if key == "STEPS" else attrs[attr])
            for key, attr in _LAMBDA_ATTRS.items() if attr in attrs}


def schedule_changes(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """``["SOLVER.STEPS [60000, 80000] -> [120000, 160000]", ...]`` for every recorded value that differs."""
    out = []
    for key, value in new.items():
        if key in old and _normalise(old[key]) != _normalise(value):
            out.append(f"SOLVER.{key} {_normalise(old[key])} -> {_normalise(value)}")
    return out


def _normalise(value: Any) -> Any:
    """Lists and tuples compare (and print) alike."""
    return list(value) if isinstance(value, (list, tuple)) else value


class ResumableSchedule:
    """Checkpointable wrapper of a per-iteration LambdaLR built from ``cfg``.

    ``state_dict()``: the scheduler's state plus ``"solver"``, the schedule's config values.
    ``load_state_dict(state)``: the iteration and base LRs from ``state``; steps, gamma, warmup and
    MAX_ITER stay as the current config says; the optimizer's LRs are set for the restored iteration.
    """

    def __init__(self, scheduler: torch.optim.lr_scheduler.LambdaLR, cfg):
        self.scheduler = scheduler
        self.values = schedule_values(cfg)

    def state_dict(self) -> Dict[str, Any]:
        state = self.scheduler.state_dict()
        state["solver"] = dict(self.values)
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        sched = self.scheduler
        changes = schedule_changes(_recorded_values(state), self.values)
        base_changed = [c for c in changes if c.startswith("SOLVER.BASE_LR ")]
        shape_changed = [c for c in changes if not c.startswith("SOLVER.BASE_LR ")]
        if shape_changed:
            logger.warning("Resuming with the schedule of the current config, which differs from the checkpoint's: "
                           "%s; the LR follows the current config from iteration %d on",
                           ", ".join(shape_changed), int(state["last_epoch"]))
        if base_changed:
            logger.warning("%s not applied: a resumed run keeps the checkpoint's base LRs (start a new run with "
                           "MODEL.WEIGHTS set to the checkpoint to train at another LR)", base_changed[0])
        sched.last_epoch = int(state["last_epoch"])
        sched._step_count = int(state.get("_step_count", sched.last_epoch + 1))
        sched.base_lrs = [float(lr) for lr in state["base_lrs"]]
        lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
        for group, base, lr in zip(sched.optimizer.param_groups, sched.base_lrs, lrs):
            group["initial_lr"] = base
            group["lr"] = lr
        sched._last_lr = lrs
