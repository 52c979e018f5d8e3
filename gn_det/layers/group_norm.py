"""GN (Wu & He 2018) and its two extremes used in the GN paper's ablations: LN (1 group), IN (C groups).

Mixed precision: CUDA autocast runs torch's group_norm in float32 (it is on autocast's float32 list), so
a float16 activation was copied to float32 and back around every GN: with AMP the GN recipe was slower
and larger than in float32 (issue 10). gn_det's GroupNorm runs in the input's precision instead, as
BatchNorm does; torch's kernels accumulate the statistics in float32 either way (acc_type), and the
affine parameters stay float32, their gradients summed and returned in float32 (not torch's
low-precision dweight/dbias, which overflow float16 under the GradScaler's scale; issue 21).

LN is GroupNorm with one group, but not torch's GroupNorm kernel: that kernel reduces each (sample,
group) in one CUDA block, so LN's N * 1 rows ran on 2 blocks of a GPU and took 8-16x GN's time (issue 10,
H200). gn_det's LN computes per-(sample, channel) moments with the fused batch-norm reductions of
gn_det.layers.fused (N * C rows in parallel, float32 for low-precision input), combines them exactly
into per-sample statistics, and normalizes in one fused pass; its backward is written out below
(checked against a float64 formula and by gradcheck in tests/layers, on CPU). It is used for CUDA
input only: on CPU torch's GroupNorm(1) is the faster one (fwd+bwd at 1x256x64x80, 2 threads: 12.5 ms
vs 55.9 ms for this function; GN 31.9 ms), as its CPU kernel splits each row over threads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fused import UNIT_EPS, channel_affine, channel_moments, channel_sums, unit_affine
from .norm import NormChannelsError, register_norm
from .options import FamilyOptions
from .precision import LOW_PRECISION
from .traits import GN_KIND, NormTraits


@dataclass(frozen=True)
class GNOptions(FamilyOptions):
    """Options of GN, LN and IN: config node MODEL.GN (NUM_GROUPS, DIM_PER_GP, EPSILON)."""

    config_node = "MODEL.GN"
    num_groups: int = 32  # groups per GN layer; GN paper Sec. 3.1 default (Detectron GROUP_NORM.NUM_GROUPS)
    dim_per_gp: int = -1  # channels per group instead of num_groups (Detectron GROUP_NORM.DIM_PER_GP); -1 = off
    epsilon: float = 1e-5  # GN/LN/IN eps (Detectron GROUP_NORM.EPSILON)


def num_groups_for(channels: int, options: GNOptions) -> int:
    """Groups for ``channels``: by channels per group when dim_per_gp > 0, else num_groups."""
    if options.dim_per_gp > 0:
        dim_key = GNOptions.key("dim_per_gp")
        if channels % options.dim_per_gp != 0:
            raise NormChannelsError(
                f"channels divisible by {dim_key}={options.dim_per_gp}, got {channels}",
                f"set {dim_key} to a divisor of {channels}",
            )
        return channels // options.dim_per_gp
    groups = options.num_groups
    if groups <= 0 or channels % groups != 0:
        groups_key = GNOptions.key("num_groups")
        raise NormChannelsError(
            f"channels divisible by {groups_key}={groups}, got {channels}",
            f"set {groups_key} to a divisor of {channels} or use {GNOptions.key('dim_per_gp')}",
        )
    return groups


class _LayerNormFunction(torch.autograd.Function):
    """``(x - mu_n) * rstd_n * weight_c + bias_c`` with mu_n, rstd_n over (C, H, W) of sample n."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        n, c, h, w = x.shape
        x3 = x.contiguous().view(1, n * c, h * w)
        m1, v = (t.view(n, c) for t in channel_moments(x3))
        mu = m1.mean(1)
        var = v.mean(1) + (m1 - mu[:, None]).square().mean(1)  # total variance = within + between channels
        rstd = torch.rsqrt(var + eps)
        weight = weight.to(mu.dtype)
        center = mu.repeat_interleave(c)
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # returned itself, not a view (F.relu_ works)
        channel_affine(x3, center, torch.zeros_like(center), (rstd[:, None] * weight).flatten(),
                       bias.to(mu.dtype).repeat(n), UNIT_EPS, out=y.view_as(x3))
        ctx.save_for_backward(x3, center, rstd, weight)
        ctx.size = c * h * w  # values behind each sample's statistics
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x3, center, rstd, weight = ctx.saved_tensors
        n, c, size = rstd.shape[0], weight.shape[0], ctx.size
        dy3 = dy.contiguous().view(x3.shape)
        dot, total = (t.view(n, c).to(rstd.dtype) for t in channel_sums(dy3, x3, center))  # dy*(x-mu), dy
        # xhat = (x - mu) rstd, g = dy * w: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), means over (C, H, W)
        mean_g = (total * weight).sum(1) / size
        mean_gx = rstd * (dot * weight).sum(1) / size
        dx = None
        if ctx.needs_input_grad[0]:
            dx = unit_affine(x3, center, (-rstd * rstd * mean_gx).repeat_interleave(c),
                             (-rstd * mean_g).repeat_interleave(c))
            dx = dx.addcmul_(dy3, (rstd[:, None] * weight).view(1, n * c, 1)).view(dy.shape)
        return dx, (dot * rstd[:, None]).sum(0), total.sum(0), None


class _LowPrecisionGroupNormFunction(torch.autograd.Function):
    """GroupNorm of a float16/bfloat16 input in its precision, with the affine gradients in float32.

    torch's kernel returns ``dweight``/``dbias`` in the weight's dtype, here the input's (the kernel takes
    one dtype on CUDA): sums over N*H*W of the GradScaler-scaled output gradient (2^16 at the start)
    overflow float16's 65504 and the scaler skipped the step (issue 21, defect 7). The forward and the
    input gradient stay torch's low-precision kernels; the affine gradients are the per-(sample, channel)
    sums ``sum(dy * (x - mu))`` and ``sum(dy)`` accumulated and returned in float32 (gn_det.layers.fused,
    one pass), times each group's ``rstd``: float32 as torch's BatchNorm gives them.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float) -> Tensor:
        x = x.contiguous()
        n, c = x.shape[:2]
        hw = x.numel() // (n * c)
        with torch.autocast(x.device.type, enabled=False):
            y, mean, rstd = torch.ops.aten.native_group_norm(x, weight.to(x.dtype), bias.to(x.dtype), n, c, hw,
                                                             groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.shape = (n, c, hw, groups)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, hw, groups = ctx.shape
        dy = dy.contiguous()
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            dx = torch.ops.aten.native_group_norm_backward(dy, x, mean, rstd, weight.to(x.dtype), n, c, hw, groups,
                                                           [True, False, False])[0]
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            per_channel = c // groups
            center = mean.float().repeat_interleave(per_channel, dim=1).flatten()  # (N*C,) each channel's group mean
            dot, total = channel_sums(dy.view(1, n * c, hw), x.view(1, n * c, hw), center)  # float32
            scale = rstd.float().repeat_interleave(per_channel, dim=1)
            dweight = (dot.view(n, c) * scale).sum(0).to(weight.dtype)
            dbias = total.view(n, c).sum(0).to(weight.dtype)
        return dx, dweight, dbias, None, None


class GroupNorm(nn.GroupNorm):
    """torch's GroupNorm that keeps a float16/bfloat16 input in its precision under autocast, and runs
    LN (one group) on CUDA through gn_det's parallel LN function (see above)."""

    def forward(self, x: Tensor) -> Tensor:
        if (self.num_groups == 1 and self.affine and x.is_cuda and x.dim() == 4 and x.shape[1] == self.num_channels
                and x.numel()):
            return _LayerNormFunction.apply(x, self.weight, self.bias, self.eps)
        if x.dtype not in LOW_PRECISION:
            return super().forward(x)
        if self.affine and x.dim() >= 2 and x.numel() and x.shape[1] == self.num_channels:
            return _LowPrecisionGroupNormFunction.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)


# GN, LN and IN hold the same state (an affine) and load each other's weights; none uses the batch.
GN_TRAITS = NormTraits(kind=GN_KIND)


@register_norm("GN", options=GNOptions, traits=GN_TRAITS, module_types=(nn.GroupNorm,))
def build_group_norm(channels: int, options: GNOptions) -> nn.GroupNorm:
    """torch's GroupNorm with the configured groups (or channels per group) and eps."""
    return GroupNorm(num_groups_for(channels, options), channels, eps=options.epsilon)


@register_norm("LN", options=GNOptions, traits=GN_TRAITS, module_types=(nn.LayerNorm,))
def build_layer_norm(channels: int, options: GNOptions) -> nn.GroupNorm:
    """Layer Norm over (C, H, W) per sample, as in the GN paper: GroupNorm with one group."""
    return GroupNorm(1, channels, eps=options.epsilon)


@register_norm("IN", options=GNOptions, traits=GN_TRAITS, module_types=(nn.modules.instancenorm._InstanceNorm,))
def build_instance_norm(channels: int, options: GNOptions) -> nn.GroupNorm:
    """Instance Norm with affine, as in the GN paper: GroupNorm with one group per channel."""
    return GroupNorm(channels, channels, eps=options.epsilon)
