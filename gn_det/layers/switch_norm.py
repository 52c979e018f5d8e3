"""Switchable Normalization (Luo et al., arXiv 1806.10779) and its synchronized variant SyncSN.

SN normalizes with ``mean = sum_k softmax(mean_weight)_k * mu_k`` and ``var = sum_k softmax(var_weight)_k
* sigma2_k`` over k in (IN, LN, BN): per sample and channel, per sample, per channel over the batch;
variances are biased, as in the paper's equations. The BN branch keeps running statistics (PyTorch
momentum convention, unbiased variance like BatchNorm2d) used in eval, so an image's output at
inference does not depend on the rest of its batch; ``use_bn=False`` drops that branch (batch-free
SN, for 1 image per GPU) and ``freeze_stats`` uses the running statistics in training too.

Speed: everything big is two fused passes forward (sums of x and x * (x - shift); normalize) and
three backward (sums of dy and dy * (x - mean); affine of x; multiply-add of dy), with no temporaries
beyond the output and the input gradient; see gn_det.layers.fused. IN, LN and BN statistics all
derive from the per-(n, c) moments, and the backward maps the gradients of the (N, C) mean and
variance back to those moments in closed form (checked by gradcheck in tests/layers).

Mixed precision: a float16/bfloat16 input (autocast) gets float32 moments, statistics, importance
weights and running statistics; the output and the input gradient have the input's dtype (as BN).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from .distributed import all_reduce_sum, shifted_sums, stats_from_sums, sync_group, update_running_stats
from .fused import channel_affine, channel_moments, channel_sums, stat_dtype, unit_affine
from .norm import register_norm
from .options import FamilyOptions
from .shapes import check_input_4d
from .traits import SN_KIND, SN_NO_BN_KIND, NormTraits

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


def layer_statistics(m1: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
    """LN branch: per-sample mean and biased variance (N, 1) from per-(n, c) moments (N, C)."""
    ln_mean = m1.mean(1, keepdim=True)
    return ln_mean, v.mean(1, keepdim=True) + (m1 - ln_mean).square().mean(1, keepdim=True)


def mixed_statistics(m1: Tensor, v: Tensor, bn_mean: Optional[Tensor], bn_var: Optional[Tensor],
                     mean_weight: Tensor, var_weight: Tensor) -> Tuple[Tensor, Tensor]:
    """SN's (N, C) mean and variance from per-(n, c) moments ``m1``, ``v`` and the BN branch (or None)."""
    ln_mean, ln_var = layer_statistics(m1, v)
    pm, pv = torch.softmax(mean_weight, 0), torch.softmax(var_weight, 0)
    mean = pm[0] * m1 + pm[1] * ln_mean
    var = pv[0] * v + pv[1] * ln_var
    if bn_mean is not None:
        mean = mean + pm[2] * bn_mean
        var = var + pv[2] * bn_var
    return mean, var


def _softmax_backward(p: Tensor, grad: Tensor) -> Tensor:
    """Gradient of the logits of ``p = softmax(logits)`` given the gradient of ``p``."""
    return p * (grad - (p * grad).sum())


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
            m1 = v = x.new_zeros(n, c, dtype=stat_dtype(x))
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
        ctx.save_for_backward(x3, m1, v, weight, mean_weight, var_weight, mean, var, shift, bn_mean, bn_var)
        ctx.count = count if mode.use_bn and mode.batch_stats else 0
        ctx.mode, ctx.hw = mode, hw
        if x3.numel() == 0:
            return torch.empty_like(x)
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # returned itself, not a view (F.relu_ works)
        channel_affine(x3, mean.flatten(), var.flatten(), weight.repeat(n), bias.repeat(n), mode.eps, out=y.view_as(x3))
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tuple[Optional[Tensor], ...]:
        x3, m1, v, weight, mean_weight, var_weight, mean, var, shift, bn_mean, bn_var = ctx.saved_tensors
        mode, hw = ctx.mode, ctx.hw
        n, c = m1.shape
        if x3.numel() > 0:
            dy3 = dy.contiguous().view(1, n * c, hw)
            dot, total = (t.view(n, c).to(m1.dtype) for t in channel_sums(dy3, x3, mean.flatten()))  # dy*(x-mean), dy
        else:
            dot = total = m1.new_zeros(n, c)
        # y = (x - mean) * scale + bias with scale = weight * rstd: gradients of the (N, C) statistics.
        rstd = torch.rsqrt(var + mode.eps)
        scale = weight * rstd
        g_mean = -scale * total
        g_var = (-0.5 * weight) * rstd.pow(3) * dot
        g_weight = (dot * rstd).sum(0)
        pm, pv = torch.softmax(mean_weight, 0), torch.softmax(var_weight, 0)
        ln_mean, ln_var = layer_statistics(m1, v)
        gl_mean, gl_var = g_mean.sum(1, keepdim=True), g_var.sum(1, keepdim=True)
        gp_mean = [(g_mean * m1).sum(), (gl_mean * ln_mean).sum()]
        gp_var = [(g_var * v).sum(), (gl_var * ln_var).sum()]
        # IN branch directly, LN branch through the per-sample means over channels.
        g_m1 = pm[0] * g_mean + (pm[1] / c) * gl_mean + (pv[1] * 2.0 / c) * gl_var * (m1 - ln_mean)
        g_v = pv[0] * g_var + (pv[1] / c) * gl_var
        if mode.use_bn:
            gb_mean, gb_var = g_mean.sum(0), g_var.sum(0)
            gp_mean.append((gb_mean * bn_mean).sum())
            gp_var.append((gb_var * bn_var).sum())
            if mode.batch_stats:  # the BN branch depends on this batch's moments too
                gb_mean, gb_var = pm[2] * gb_mean, pv[2] * gb_var  # d loss / d (BN mean, BN var)
                if shift is not None:  # pooled: mean = shift + S1/count, var = S2/count - (S1/count)^2
                    count = ctx.count.clamp_min(1.0).to(gb_mean.dtype)
                    g_sums = torch.cat([gb_mean - 2.0 * (bn_mean - shift) * gb_var, gb_var]) / count
                    g_s1, g_s2 = all_reduce_sum(g_sums, mode.group).split(c)
                    g_m1 = g_m1 + hw * g_s1 + (2.0 * hw) * (m1 - shift) * g_s2
                    g_v = g_v + hw * g_s2
                elif n > 0:  # this batch: mean = mean_n m1, var = mean_n (v + (m1 - mean)^2)
                    g_m1 = g_m1 + gb_mean / n + (2.0 / n) * gb_var * (m1 - bn_mean)
                    g_v = g_v + gb_var / n
        g_mw = _softmax_backward(pm, torch.stack(gp_mean))
        g_vw = _softmax_backward(pv, torch.stack(gp_var))
        dx = None
        if ctx.needs_input_grad[0]:
            if x3.numel() == 0:
                dx = dy.new_zeros(dy.shape)
            else:
                # dm1/dx = 1/hw, dv/dx = 2 (x - m1)/hw: dx = scale * dy + 2 g_v (x - m1)/hw + g_m1/hw
                dx = unit_affine(x3, m1.flatten(), (2.0 / hw) * g_v.flatten(), g_m1.flatten() / hw)
                dx.addcmul_(dy3, scale.view(1, n * c, 1))
                dx = dx.view(dy.shape)
        return dx, g_weight, total.sum(0), g_mw, g_vw, None


class SwitchNorm2d(nn.Module):
    """Switchable Normalization over (N, C, H, W): a learned mix of IN, LN and BN statistics.

    Parameters ``weight``, ``bias`` (C), ``mean_weight``, ``var_weight`` (3: IN, LN, BN; 2 without BN);
    buffers ``running_mean``, ``running_var`` (C) for the BN branch (absent without it).
    """

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

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, use_bn={self.use_bn}, "
                f"freeze_stats={self.freeze_stats}")


class SyncSwitchNorm2d(SwitchNorm2d):
    """SN whose BN branch pools statistics over ``process_group`` (default: all processes), like SyncBN."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, use_bn: bool = True,
                 freeze_stats: bool = False, process_group: Any = None) -> None:
        super().__init__(num_features, eps, momentum, use_bn, freeze_stats)
        self.process_group = process_group

    def _process_group(self) -> Any:
        return sync_group(self.process_group)


@dataclass(frozen=True)
class SNOptions(FamilyOptions):
    """Options of SN and SyncSN: config node MODEL.SN (USE_BN, MOMENTUM, EPSILON, FREEZE_STATS)."""

    config_node = "MODEL.SN"
    use_bn: bool = True  # the BN branch; False = batch-free SN (IN + LN), for 1 image per GPU
    momentum: float = 0.1  # running-statistics momentum of the BN branch, PyTorch convention
    epsilon: float = 1e-5  # SN eps
    freeze_stats: bool = False  # fine-tuning: the BN branch uses its running statistics in training too


def sn_traits(use_bn: bool, freeze_stats: bool, synced: bool = False) -> NormTraits:
    """SN's traits: with its BN branch it keeps running statistics and (unless frozen) uses the batch."""
    if not use_bn:
        return NormTraits(kind=SN_NO_BN_KIND)
    return NormTraits(kind=SN_KIND, running_stats=True, batch_dependent=not freeze_stats, synced=synced)


def freeze_switch_norm(module: SwitchNorm2d) -> SwitchNorm2d:
    """SN frozen: the BN branch uses its running statistics in training too; no parameter trains."""
    module.freeze_stats = True
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _sn_kwargs(options: SNOptions) -> dict:
    return dict(eps=options.epsilon, momentum=options.momentum, use_bn=options.use_bn,
                freeze_stats=options.freeze_stats)


@register_norm("SN", options=SNOptions, traits=lambda o: sn_traits(o.use_bn, o.freeze_stats),
               module_traits=lambda m: sn_traits(m.use_bn, m.freeze_stats), freeze=freeze_switch_norm,
               module_types=(SwitchNorm2d,), batch_free_options={"use_bn": False})
def build_switch_norm(channels: int, options: SNOptions) -> SwitchNorm2d:
    """SN with MODEL.SN's options (BN branch, momentum, eps, frozen statistics)."""
    return SwitchNorm2d(channels, **_sn_kwargs(options))


@register_norm("SyncSN", options=SNOptions, traits=lambda o: sn_traits(o.use_bn, o.freeze_stats, synced=True),
               module_traits=lambda m: sn_traits(m.use_bn, m.freeze_stats, synced=True), freeze=freeze_switch_norm,
               module_types=(SyncSwitchNorm2d,), batch_free_options={"use_bn": False})
def build_sync_switch_norm(channels: int, options: SNOptions) -> SyncSwitchNorm2d:
    """SN whose BN branch is shared across processes (same all-reduce as SyncBN)."""
    return SyncSwitchNorm2d(channels, **_sn_kwargs(options))
