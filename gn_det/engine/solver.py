"""SGD with per-parameter weight decay and LR factors, warmup + multi-step or cosine LR, gradient clipping.

As detectron2's solver/build.py: parameters of norm layers (BN/GN/SN affine, SN's importance weights,
any parameter of a module gn_det.layers.is_norm recognises by its declared traits) take SOLVER.WEIGHT_DECAY_NORM, biases take BASE_LR * SOLVER.BIAS_LR_FACTOR; the LR schedule is a
multiplier per iteration (linear warmup from WARMUP_FACTOR, then GAMMA at each of STEPS for
SOLVER.LR_SCHEDULER_NAME "WarmupMultiStepLR", or a half cosine from BASE_LR to SOLVER.BASE_LR_END over
MAX_ITER for "WarmupCosineLR", as detectron2's). SGD runs its fused kernel (one kernel per group and step,
CPU and CUDA) where torch has one for the parameters, else the multi-tensor ("foreach") loop.
"""
from __future__ import annotations

import bisect
import functools
import logging
import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from gn_det.layers import is_norm

logger = logging.getLogger(__name__)


def get_param_groups(model: nn.Module, base_lr: float, weight_decay: float, weight_decay_norm: float,
                     bias_lr_factor: float = 1.0) -> List[Dict]:
    """One optimizer group per distinct (lr, weight_decay), each trainable parameter exactly once.

    Every parameter of a norm layer (its own and its submodules') takes ``weight_decay_norm``.
    """
    groups: Dict[Tuple[float, float], List[nn.Parameter]] = {}
    norm_params = {id(p) for m in model.modules() if is_norm(m) for p in m.parameters()}
    seen = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = base_lr * bias_lr_factor if name == "bias" else base_lr
            wd = weight_decay_norm if id(param) in norm_params else weight_decay
            groups.setdefault((lr, wd), []).append(param)
    return [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum over ``model``'s trainable parameters, per cfg.SOLVER."""
    s = cfg.SOLVER
    groups = get_param_groups(model, s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM, s.BIAS_LR_FACTOR)
    if not groups:
        raise ValueError("The model has no trainable parameter (check MODEL.BACKBONE.FREEZE_AT)")
    return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV,
                           **_fast_sgd_kwargs([p for g in groups for p in g["params"]]))


def _fast_sgd_kwargs(params: List[nn.Parameter]) -> Dict[str, bool]:
    """``fused=True`` when every parameter is a floating tensor on one CPU or CUDA device (torch's fused SGD
    kernels), else ``foreach=True`` (multi-tensor, any device). Same update as the per-parameter loop."""
    devices = {p.device.type for p in params}
    if len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}


class WarmupMultiStep:
    """LR multiplier at iteration ``it``: warmup (linear from ``warmup_factor`` to 1, or constant) for
    ``warmup_iters``, times ``gamma ** (number of steps <= it)`` (detectron2's WarmupMultiStepLR).

    A class (not a lambda) so LambdaLR's state_dict holds its plain attributes.
    """

    def __init__(self, steps: Sequence[int], gamma: float, warmup_factor: float, warmup_iters: int,
                 warmup_method: str = "linear"):
        if list(steps) != sorted(steps):
            raise ValueError(f"SOLVER.STEPS should be increasing, got {tuple(steps)}")
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD should be 'linear' or 'constant', got '{warmup_method}'")
        self.steps = [int(x) for x in steps]
        self.gamma = float(gamma)
        self.warmup_factor = float(warmup_factor)
        self.warmup_iters = int(warmup_iters)
        self.warmup_method = warmup_method

    def __call__(self, it: int) -> float:
        factor = 1.0
        if it < self.warmup_iters:
            if self.warmup_method == "constant":
                factor = self.warmup_factor
            else:
                alpha = it / self.warmup_iters
                factor = self.warmup_factor * (1 - alpha) + alpha
        return factor * self.gamma ** bisect.bisect_right(self.steps, it)


class WarmupCosine:
    """LR multiplier at iteration ``it`` as detectron2's WarmupCosineLR: the half cosine
    ``end + (1 - end) * (1 + cos(pi * it / max_iter)) / 2`` (``end`` = BASE_LR_END / BASE_LR), and during the
    first ``warmup_iters`` a linear ramp from ``warmup_factor`` to the cosine's value at ``warmup_iters``
    (or ``warmup_factor`` constant). A class, as WarmupMultiStep, so the scheduler's state is plain data."""

    def __init__(self, max_iter: int, end_value: float, warmup_factor: float, warmup_iters: int,
                 warmup_method: str = "linear"):
        if not 0.0 <= end_value <= 1.0:
            raise ValueError(f"SOLVER.BASE_LR_END should be between 0 and SOLVER.BASE_LR, got {end_value:g} x BASE_LR")
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD should be 'linear' or 'constant', got '{warmup_method}'")
        self.max_iter = int(max_iter)
        self.end_value = float(end_value)
        self.warmup_factor = float(warmup_factor)
        self.warmup_iters = min(int(warmup_iters), self.max_iter)
        self.warmup_method = warmup_method

    def _cosine(self, it: int) -> float:
        return self.end_value + 0.5 * (1.0 - self.end_value) * (1.0 + math.cos(math.pi * it / self.max_iter))

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            if self.warmup_method == "constant":
                return self.warmup_factor
            alpha = it / self.warmup_iters
            return self.warmup_factor * (1 - alpha) + self._cosine(self.warmup_iters) * alpha
        return self._cosine(it)


LR_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR")


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepped once per iteration with the multiplier SOLVER.LR_SCHEDULER_NAME names."""
    s = cfg.SOLVER
    if s.LR_SCHEDULER_NAME not in LR_SCHEDULERS:
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME={s.LR_SCHEDULER_NAME!r} is not a schedule; use one of "
                         f"{list(LR_SCHEDULERS)}")
    if s.LR_SCHEDULER_NAME == "WarmupCosineLR":
        fn = WarmupCosine(s.MAX_ITER, s.BASE_LR_END / s.BASE_LR if s.BASE_LR else 0.0, s.WARMUP_FACTOR,
                          s.WARMUP_ITERS, s.WARMUP_METHOD)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    late = [step for step in s.STEPS if step >= s.MAX_ITER]
    if late:  # common when MAX_ITER is overridden for a short run; detectron2 warns too
        logger.warning("SOLVER.STEPS %s: %s at or past SOLVER.MAX_ITER=%d never take effect",
                       tuple(s.STEPS), late, s.MAX_ITER)
    fn = WarmupMultiStep(s.STEPS, s.GAMMA, s.WARMUP_FACTOR, s.WARMUP_ITERS, s.WARMUP_METHOD)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def build_gradient_clipper(cfg) -> Optional[Callable[[Iterable[torch.Tensor]], None]]:
    """A function clipping gradients per SOLVER.CLIP_GRADIENTS ("norm": global L2 norm, "value"), or None."""
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return None
    if c.CLIP_TYPE == "norm":
        return functools.partial(torch.nn.utils.clip_grad_norm_, max_norm=c.CLIP_VALUE, norm_type=c.NORM_TYPE)
    if c.CLIP_TYPE == "value":
        return functools.partial(torch.nn.utils.clip_grad_value_, clip_value=c.CLIP_VALUE)
    raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE should be 'norm' or 'value', got '{c.CLIP_TYPE}'")
