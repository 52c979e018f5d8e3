"""Switchable Normalization (Luo et al., arXiv 1806.10779) and its synchronized variant SyncSN.

SN normalizes with ``mean = sum_k softmax(mean_weight)_k * mu_k`` and ``var = sum_k softmax(var_weight)_k
* sigma2_k`` over k in (IN, LN, BN): per sample and channel, per sample, per channel over the batch;
variances are biased, as in the paper's equations. The BN branch keeps running statistics (PyTorch
momentum convention, unbiased variance like BatchNorm2d) used in eval, so an image's output at
inference does not depend on the rest of its batch; ``use_bn=False`` drops that branch (batch-free
SN, for 1 image per GPU) and ``freeze_stats`` uses the running statistics in training too.

Speed: everything big is three fused passes forward (sum, sum of x * (x - mean), normalize) and
three backward (sums of dy and dy * (x - mean), affine of x, multiply-add of dy), with no temporaries
beyond the output and the input gradient; see gn_det.layers.fused. IN, LN and BN statistics all
derive from the per-(n, c) moments, and their gradients are taken by autograd on those (N, C)
tensors inside the hand-written backward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from .distributed import all_reduce_sum, shifted_sums, stats_from_sums, sync_group, update_running_stats
from .fused import channel_affine, channel_moments, channel_sums
from .norm import NORM_REGISTRY, NormOptions
from .shapes import check_input_4d

BRANCHES = ("IN", "LN", "BN")  # order of mean_weight / var_weight


@dataclass
class _Mode:
    """How one SN call treats its BN branch."""

    use_bn: bool
    batch_stats: bool  # BN branch from this batch (training, not frozen) rather than running stats
    eps: float
    momentum: float
    group: Any  # process group to pool the BN branch over, or None
    running_mean: Optional[Tensor]
    running_var: Optional[Tensor]


def mixed_statistics(m1: Tensor, v: Tensor, bn_mean: Optional[Tensor], bn_var: Optional[Tensor],
                     mean_weight: Tensor, var_weight: Tensor) -> Tuple[Tensor, Tensor]:
    """SN's (N, C) mean and variance from per-(n, c) moments ``m1``, ``v`` and the BN branch (or None)."""
    ln_mean = m1.mean(1, keepdim=True)
    ln_var = v.mean(1, keepdim=True) + (m1 - ln_mean).square().mean(1, keepdim=True)
    pm, pv = torch.softmax(mean_weight, 0), torch.softmax(var_weight, 0)
    mean = pm[0] * m1 + pm[1] * ln_mean
    var = pv[0] * v + pv[1] * ln_var
    if bn_mean is not None:
        mean = mean + pm[2] * bn_mean
        var = var + pv[2] * bn_var
    return mean, var


def batch_statistics(m1: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
    """BN branch over this process's batch: per-channel mean and biased variance from (N, C) moments."""
    if m1.shape[0] == 0:
        return m1.new_zeros(m1.shape[1]), v.new_zeros(v.shape[1])
    mean = m1.mean(0)
    return mean, v.mean(0) + (m1 - mean).square().mean(0)


class _SwitchNormFunction(torch.autograd.Function):
    """SN forward and hand-written backward for (N, C, H, W) input."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, mean_weight: Tensor, var_weight: Tensor,
                mode: _Mode) -> Tensor:
        n, c, h, w = x.shape
        hw = h * w
        x3 = x.contiguous().view(1, n * c, hw)
        if x3.numel() > 0:
            m1, v = (t.view(n, c) for t in channel_moments(x3))
        else:
            m1 = v = x.new_zeros(n, c)
        sums = shift = bn_mean = bn_var = None
        if mode.use_bn and mode.batch_stats:
            if mode.group is not None:
                shift = mode.running_mean.detach().clone()
                sums = all_reduce_sum(shifted_sums(m1, v, hw, shift), mode.group)
                bn_mean, bn_var, count = stats_from_sums(sums, shift)
            else:
                bn_mean, bn_var = batch_statistics(m1, v)
                count = n * hw
            update_running_stats(mode.running_mean, mode.running_var, bn_mean, bn_var, count, mode.momentum)
        elif mode.use_bn:
            bn_mean, bn_var = mode.running_mean.detach().clone(), mode.running_var.detach().clone()
        mean, var = mixed_statistics(m1, v, bn_mean, bn_var, mean_weight, var_weight)
        ctx.save_for_backward(x3, m1, v, weight, mean_weight, var_weight, mean, sums, shift, bn_mean, bn_var)
        ctx.mode, ctx.hw = mode, hw
        if x3.numel() == 0:
            return torch.empty_like(x)
        y = channel_affine(x3, mean.flatten(), var.flatten(), weight.repeat(n), bias.repeat(n), mode.eps)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tuple[Optional[Tensor], ...]:
        x3, m1, v, weight, mean_weight, var_weight, mean, sums, shift, bn_mean, bn_var = ctx.saved_tensors
        mode, hw = ctx.mode, ctx.hw
        n, c = m1.shape
        if x3.numel() > 0:
            dy3 = dy.contiguous().view(1, n * c, hw)
            dot, total = (t.view(n, c) for t in channel_sums(dy3, x3, mean.flatten()))  # dy * (x - mean), dy
        else:
            dot = total = m1.new_zeros(n, c)
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in (m1, v, weight, mean_weight, var_weight)]
            m1_, v_, weight_, mw_, vw_ = leaves
            if mode.use_bn and mode.batch_stats and sums is not None:
                sums_ = sums.detach().requires_grad_()
                leaves.append(sums_)
                bn_mean, bn_var, _ = stats_from_sums(sums_, shift)
            elif mode.use_bn and mode.batch_stats:
                bn_mean, bn_var = batch_statistics(m1_, v_)
            mean_, var_ = mixed_statistics(m1_, v_, bn_mean, bn_var, mw_, vw_)
            scale = weight_ * torch.rsqrt(var_ + mode.eps)  # y = (x - mean) * scale + bias
            grads = torch.autograd.grad(
                [mean_, scale], leaves, [-scale.detach() * total, dot], allow_unused=True
            )
            grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, leaves)]
            g_m1, g_v, g_weight, g_mw, g_vw = grads[:5]
            if len(grads) == 6:  # pooled BN branch: every process's loss depends on the pooled sums
                g_sums = all_reduce_sum(grads[5].clone(), mode.group)
                local = shifted_sums(m1_, v_, hw, shift)
                extra = torch.autograd.grad(local, [m1_, v_], g_sums, allow_unused=True)
                g_m1 = g_m1 + (extra[0] if extra[0] is not None else 0)
                g_v = g_v + (extra[1] if extra[1] is not None else 0)
        dx = None
        if ctx.needs_input_grad[0]:
            if x3.numel() == 0:
                dx = dy.new_zeros(dy.shape)
            else:
                # dm1/dx = 1/hw, dv/dx = 2 (x - m1)/hw: dx = scale * dy + 2 g_v (x - m1)/hw + g_m1/hw
                ones = torch.ones(n * c, dtype=x3.dtype, device=x3.device)
                dx = channel_affine(x3, m1.flatten(), ones, (2.0 / hw) * g_v.flatten(), g_m1.flatten() / hw, 0.0)
                dx.addcmul_(dy3, scale.detach().view(1, n * c, 1))
                dx = dx.view(dy.shape)
        return dx, g_weight, total.sum(0), g_mw, g_vw, None


class SwitchNorm2d(nn.Module):
    """Switchable Normalization over (N, C, H, W): a learned mix of IN, LN and BN statistics.

    Parameters ``weight``, ``bias`` (C), ``mean_weight``, ``var_weight`` (3: IN, LN, BN; 2 without BN);
    buffers ``running_mean``, ``running_var`` (C) for the BN branch (absent without it).
    """

    sync = False

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, use_bn: bool = True,
                 freeze_stats: bool = False) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.use_bn = use_bn
        self.freeze_stats = freeze_stats
        branches = 3 if use_bn else 2
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        # Equal logits: every branch starts at weight 1/3 (1/2), as in the paper's reference code.
        self.mean_weight = nn.Parameter(torch.ones(branches))
        self.var_weight = nn.Parameter(torch.ones(branches))
        if use_bn:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)

    def _process_group(self) -> Any:
        return None

    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        batch_stats = self.use_bn and self.training and not self.freeze_stats
        group = self._process_group() if batch_stats else None
        mode = _Mode(self.use_bn, batch_stats, self.eps, self.momentum, group, self.running_mean, self.running_var)
        return _SwitchNormFunction.apply(x, self.weight, self.bias, self.mean_weight, self.var_weight, mode)

    def branch_weights(self) -> dict:
        """Softmax importance of each branch for mean and variance, e.g. ``{"mean": {"IN": 0.3, ...}}``."""
        names = BRANCHES[: self.mean_weight.numel()]
        with torch.no_grad():
            return {
                "mean": dict(zip(names, torch.softmax(self.mean_weight, 0).tolist())),
                "var": dict(zip(names, torch.softmax(self.var_weight, 0).tolist())),
            }

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, use_bn={self.use_bn}, "
                f"freeze_stats={self.freeze_stats}")


class SyncSwitchNorm2d(SwitchNorm2d):
    """SN whose BN branch pools statistics over ``process_group`` (default: all processes), like SyncBN."""

    sync = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, use_bn: bool = True,
                 freeze_stats: bool = False, process_group: Any = None) -> None:
        super().__init__(num_features, eps, momentum, use_bn, freeze_stats)
        self.process_group = process_group

    def _process_group(self) -> Any:
        return sync_group(self.process_group)


def _sn_kwargs(options: NormOptions) -> dict:
    return dict(eps=options.sn_eps, momentum=options.sn_momentum, use_bn=options.sn_use_bn,
                freeze_stats=options.sn_freeze_stats)


@NORM_REGISTRY.register("SN")
def build_switch_norm(channels: int, options: NormOptions) -> SwitchNorm2d:
    """SN with MODEL.SN's options (BN branch, momentum, eps, frozen statistics)."""
    return SwitchNorm2d(channels, **_sn_kwargs(options))


@NORM_REGISTRY.register("SyncSN")
def build_sync_switch_norm(channels: int, options: NormOptions) -> SyncSwitchNorm2d:
    """SN whose BN branch is shared across processes (same all-reduce as SyncBN)."""
    return SyncSwitchNorm2d(channels, **_sn_kwargs(options))
