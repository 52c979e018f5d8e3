"""Batch Renormalization (Ioffe, arXiv 1702.03275): BN whose training output matches its eval output.

Training normalizes with the batch statistics and corrects towards the running ones:
``y = ((x - mu_B) / sigma_B * r + d) * gamma + beta`` with ``r = clip(sigma_B / sigma, 1/rmax, rmax)``
and ``d = clip((mu_B - mu) / sigma, -dmax, dmax)``, where ``sigma_B = sqrt(var_B + eps)`` (biased
variance), ``mu``, ``sigma = sqrt(running_var + eps)`` come from the running statistics, and r, d
are constants for the gradient (stop-gradient); the gradient still flows through mu_B and sigma_B
as in BN. Eval is BN's: ``(x - running_mean) / sqrt(running_var + eps) * gamma + beta``.

rmax and dmax follow the paper's warm-up, driven by the layer's own count of training forwards
(``num_batches_tracked``, a buffer: it is checkpointed and resumes exactly): rmax = 1, dmax = 0
(plain BN) for the first ``warmup_steps``, then linear ramps to ``final_rmax`` at ``rmax_steps``
and to ``final_dmax`` at ``dmax_steps``. A layer called several times per iteration (a head shared
over FPN levels) counts every call. The state dict has BN's keys (weight, bias, running_mean,
running_var, num_batches_tracked), so BN checkpoints load into it, their step count included.
Running statistics follow PyTorch's convention (new = (1 - m) * old + m * batch, unbiased variance),
where the paper averages sigma itself; they stay float32 (see gn_det.layers.precision).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from .batch_norm import BN_TRAITS, freeze_batch_norm
from .distributed import (all_reduce_sum, batch_norm_backward, shifted_sums, stats_from_sums, sync_group,
                          update_running_stats)
from .fused import channel_affine, channel_moments
from .norm import register_norm
from .options import FamilyOptions
from .precision import float32_forward
from .shapes import check_batch_statistics, check_input_4d

BRN_EPS = 1e-5  # torch.nn.BatchNorm2d's default (the paper gives none), so BN checkpoints behave alike
# Paper Sec. 4: "relatively fast" updates of the moving statistics, alpha = 0.01 (TensorFlow's
# BatchNormalization(renorm=True) defaults to renorm_momentum=0.99, the same rate).
BRN_MOMENTUM = 0.01
# Paper Sec. 4: "rmax = 1, dmax = 0 (i.e. simply batchnorm) for the first 5000 training steps, after
# which these were gradually relaxed to reach rmax = 3 at 40k steps, and dmax = 5 at 25k steps".
BRN_FINAL_RMAX = 3.0
BRN_FINAL_DMAX = 5.0
BRN_WARMUP_STEPS = 5000
BRN_RMAX_STEPS = 40000
BRN_DMAX_STEPS = 25000


def _ramp(step: Tensor, start: int, end: int) -> Tensor:
    """0 up to ``start``, rising linearly to 1 at ``end``, 1 after (a step at ``start`` when end == start)."""
    if end > start:
        return ((step - start) / (end - start)).clamp(0.0, 1.0)
    return (step >= start).to(step.dtype)


class _BatchRenormFunction(torch.autograd.Function):
    """BRN in training: fused statistics and normalization forward, BN's backward with weight gamma * r.

    With ``group`` the statistics are those of all processes' batches (one all-reduce of shifted sums
    forward, one of ``sum(dy)``, ``sum(dy * (x - mean))`` backward, as gn_det's SyncBatchNorm2d).
    ``y = (x - mean) * invstd * (gamma * r) + (gamma * d + beta)`` with r, d constants, so
    ``dx = gamma r invstd (dy - mean(dy) - (x - mean) invstd^2 mean(dy (x - mean)))`` over the batch and
    ``dgamma = r invstd sum(dy (x - mean)) + d sum(dy)`` (this process's share; DDP sums the shares).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, module: "BatchRenorm2d", group: Any) -> Tensor:
        n, c, h, w = x.shape
        x3 = x.view(n, c, h * w)
        local = n * h * w
        if local > 0:
            mean, var = channel_moments(x3)
        else:
            mean, var = module.running_mean.to(x.dtype), x.new_zeros(c)
        count, empty = local, local == 0
        if group is not None:
            shift = module.running_mean.to(x.dtype)  # equal on every process; near the batch mean
            sums = all_reduce_sum(shifted_sums(mean[None], var[None], local, shift), group)
            mean, var, count = stats_from_sums(sums, shift)
            if local < 2:  # only then can the union hold 0 or 1 value per channel (reading count syncs CUDA)
                pooled = int(count.item())
                check_batch_statistics(module, pooled, "1 value per channel over all processes")
                empty = pooled == 0
        else:
            check_batch_statistics(module, count, f"an input of shape {tuple(x.shape)}")
        ctx.group, ctx.count, ctx.empty = group, count, empty
        if empty:  # nothing anywhere (a mask head without RoIs): nothing to learn from
            ctx.save_for_backward(weight)
            return torch.empty_like(x)
        r, d = module.renorm_factors(mean, var)
        update_running_stats(module.running_mean, module.running_var, mean, var, count, module.momentum)
        module.num_batches_tracked.add_(1)
        invstd = torch.rsqrt(var + module.eps)
        ctx.save_for_backward(x3, weight, mean, invstd, r, d)
        if local == 0:
            return torch.empty_like(x)
        return channel_affine(x, mean, var, weight * r, bias + weight * d, module.eps)

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tuple[Optional[Tensor], ...]:
        if ctx.empty:
            weight, = ctx.saved_tensors
            return dy.new_zeros(dy.shape), torch.zeros_like(weight), torch.zeros_like(weight), None, None
        x3, weight, mean, invstd, r, d = ctx.saved_tensors
        dx, dot_local, sum_local = batch_norm_backward(dy, x3, mean, invstd, weight * r * invstd, ctx.count,
                                                       ctx.group, ctx.needs_input_grad[0])
        return dx, r * invstd * dot_local + d * sum_local, sum_local, None, None


class BatchRenorm2d(nn.Module):
    """Batch Renormalization over (N, C, H, W); parameters ``weight``, ``bias`` (C).

    Traits: keeps running statistics (``running_mean``, ``running_var``; eval uses them);
    batch-dependent in training; no activation. State keys: weight, bias, running_mean,
    running_var, num_batches_tracked (BN's). ``rmax``/``dmax`` are the clip values the next
    training forward uses.
    """

    def __init__(self, num_features: int, eps: float = BRN_EPS, momentum: float = BRN_MOMENTUM,
                 final_rmax: float = BRN_FINAL_RMAX, final_dmax: float = BRN_FINAL_DMAX,
                 warmup_steps: int = BRN_WARMUP_STEPS, rmax_steps: int = BRN_RMAX_STEPS,
                 dmax_steps: int = BRN_DMAX_STEPS) -> None:
        super().__init__()
        name = type(self).__name__
        if eps <= 0:
            raise ValueError(f"{name} needs eps > 0, got {eps}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"{name} momentum should be in (0, 1], got {momentum}")
        if final_rmax < 1.0 or final_dmax < 0.0:
            raise ValueError(f"{name} needs final_rmax >= 1 and final_dmax >= 0, got {final_rmax} and {final_dmax}")
        if warmup_steps < 0 or rmax_steps < warmup_steps or dmax_steps < warmup_steps:
            raise ValueError(f"{name} needs 0 <= warmup_steps <= rmax_steps and warmup_steps <= dmax_steps, "
                             f"got warmup_steps={warmup_steps}, rmax_steps={rmax_steps}, dmax_steps={dmax_steps}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.final_rmax = final_rmax
        self.final_dmax = final_dmax
        self.warmup_steps = warmup_steps
        self.rmax_steps = rmax_steps
        self.dmax_steps = dmax_steps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        """Running statistics as a fresh BN's; the step count (the warm-up schedule) is kept."""
        self.running_mean.zero_()
        self.running_var.fill_(1.0)

    def clip_limits(self) -> Tuple[Tensor, Tensor]:
        """(rmax, dmax) for the current step count, as tensors on the layer's device (no host sync)."""
        step = self.num_batches_tracked.to(self.running_var.dtype)
        rmax = 1.0 + (self.final_rmax - 1.0) * _ramp(step, self.warmup_steps, self.rmax_steps)
        dmax = self.final_dmax * _ramp(step, self.warmup_steps, self.dmax_steps)
        return rmax, dmax

    @property
    def rmax(self) -> float:
        """The r clip value in force (1 during warm-up, ``final_rmax`` after ``rmax_steps``)."""
        return float(self.clip_limits()[0])

    @property
    def dmax(self) -> float:
        """The d clip value in force (0 during warm-up, ``final_dmax`` after ``dmax_steps``)."""
        return float(self.clip_limits()[1])

    def renorm_factors(self, mean: Tensor, var: Tensor) -> Tuple[Tensor, Tensor]:
        """Clipped ``r = sigma_B / sigma`` and ``d = (mu_B - mu) / sigma`` from the running statistics before
        this batch's update (Algorithm 1 of the paper); constants for the gradient."""
        with torch.no_grad():
            sigma = torch.sqrt(self.running_var.to(var.dtype) + self.eps)
            rmax, dmax = (t.to(var.dtype) for t in self.clip_limits())
            r = torch.minimum(torch.maximum(torch.sqrt(var + self.eps) / sigma, 1.0 / rmax), rmax)
            d = torch.minimum(torch.maximum((mean - self.running_mean.to(mean.dtype)) / sigma, -dmax), dmax)
        return r, d

    def _process_group(self) -> Any:
        return None  # batch statistics of this process only

    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        return float32_forward(self._train_forward if self.training else self._running_forward, x)

    def _train_forward(self, x: Tensor) -> Tensor:
        return _BatchRenormFunction.apply(x.contiguous(), self.weight, self.bias, self, self._process_group())

    def _running_forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return torch.addcmul(shift.view(1, c, 1, 1), x, scale.view(1, c, 1, 1))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, rmax={self.rmax:g}, "
                f"dmax={self.dmax:g}, final_rmax={self.final_rmax}, final_dmax={self.final_dmax}, "
                f"warmup_steps={self.warmup_steps}, rmax_steps={self.rmax_steps}, dmax_steps={self.dmax_steps}")


class SyncBatchRenorm2d(BatchRenorm2d):
    """BRN whose batch statistics are those of the union of all processes' batches (``process_group``).

    One all-reduce of float64 shifted sums forward (gn_det.layers.distributed, as SyncBN) and one of
    their gradients backward; mean, variance, r, d and the running statistics are then the same on
    every process and equal BRN's on the concatenated batch, also when a process holds no images
    (its loss must still reach the layer's output, as for SyncBN). Without a process group, with one
    process, or in eval, it is BatchRenorm2d. Traits as BatchRenorm2d; same state keys.
    """

    def __init__(self, num_features: int, process_group: Any = None, **kwargs: Any) -> None:
        super().__init__(num_features, **kwargs)
        self.process_group = process_group

    def _process_group(self) -> Any:
        return sync_group(self.process_group)


@dataclass(frozen=True)
class BRNOptions(FamilyOptions):
    """Options of BRN and SyncBRN: config node MODEL.BRN (the paper's values, Sec. 4, as defaults)."""

    config_node = "MODEL.BRN"
    momentum: float = BRN_MOMENTUM  # running statistics, PyTorch convention (paper: alpha = 0.01)
    epsilon: float = BRN_EPS
    rmax: float = BRN_FINAL_RMAX  # r's clip after the warm-up schedule (paper: 3)
    dmax: float = BRN_FINAL_DMAX  # d's clip after the warm-up schedule (paper: 5)
    warmup_iters: int = BRN_WARMUP_STEPS  # training steps with rmax = 1, dmax = 0 (plain BN; paper: 5000)
    rmax_iters: int = BRN_RMAX_STEPS  # step at which rmax reaches RMAX, linearly from WARMUP_ITERS (paper: 40k)
    dmax_iters: int = BRN_DMAX_STEPS  # step at which dmax reaches DMAX, linearly from WARMUP_ITERS (paper: 25k)


def _brn_kwargs(options: BRNOptions) -> dict:
    return dict(eps=options.epsilon, momentum=options.momentum, final_rmax=options.rmax, final_dmax=options.dmax,
                warmup_steps=options.warmup_iters, rmax_steps=options.rmax_iters, dmax_steps=options.dmax_iters)


# BN's state and checkpoint kind (BN checkpoints load into it; frozen it becomes FrozenBN).
@register_norm("BRN", options=BRNOptions, traits=BN_TRAITS, freeze=freeze_batch_norm, module_types=(BatchRenorm2d,))
def build_batch_renorm(channels: int, options: BRNOptions) -> BatchRenorm2d:
    """Batch Renormalization over this process's batch, with MODEL.BRN's clips and warm-up schedule."""
    return BatchRenorm2d(channels, **_brn_kwargs(options))


@register_norm("SyncBRN", options=BRNOptions, traits=dataclasses.replace(BN_TRAITS, synced=True),
               freeze=freeze_batch_norm, module_types=(SyncBatchRenorm2d,))
def build_sync_batch_renorm(channels: int, options: BRNOptions) -> SyncBatchRenorm2d:
    """Batch Renormalization with statistics pooled over every process's batch (as SyncBN)."""
    return SyncBatchRenorm2d(channels, **_brn_kwargs(options))


__all__ = ["BatchRenorm2d", "SyncBatchRenorm2d", "BRNOptions", "BRN_EPS", "BRN_MOMENTUM", "BRN_FINAL_RMAX", "BRN_FINAL_DMAX",
           "BRN_WARMUP_STEPS", "BRN_RMAX_STEPS", "BRN_DMAX_STEPS"]
