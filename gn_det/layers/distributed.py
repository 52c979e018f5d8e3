"""Batch statistics pooled over the processes of a torch.distributed group, with one all-reduce.

Each process contributes per channel ``sum(x - s)``, ``sum((x - s)^2)`` and its count, where the shift
``s`` is the layer's running mean (the same on every process, and close to the batch mean, which
keeps float32 round-off from cancelling). The sums travel in float64 in one all-reduce; the pooled
mean and biased variance then equal those of the union of all processes' batches exactly (up to
round-off), whatever each process holds, including nothing (it sends zeros and a count of 0).
The pooled count stays a tensor on the device: reading it on the host would stall a CUDA stream once
per layer, so callers read it only when their own batch has fewer than 2 values per channel.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor

from gn_det.utils import comm

from .fused import channel_sums, unit_affine


def sync_group(process_group: Any = None) -> Optional[Any]:
    """The group to pool statistics over, or None when torch.distributed is off or has one process."""
    if not comm.is_dist():
        return None
    group = process_group if process_group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def shifted_sums(mean: Tensor, var: Tensor, count_per_row: int, shift: Tensor) -> Tensor:
    """float64 ``[sum(x - shift) (C), sum((x - shift)^2) (C), count (1)]`` from per-row moments (R, C).

    Row r holds ``count_per_row`` values per channel with mean ``mean[r]`` and biased variance ``var[r]``.
    """
    d = mean.double() - shift.double()
    s1 = d.sum(0) * count_per_row
    s2 = (var.double() + d * d).sum(0) * count_per_row
    count = s1.new_full((1,), float(mean.shape[0] * count_per_row))
    return torch.cat([s1, s2, count])


def stats_from_sums(sums: Tensor, shift: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Pooled ``(mean, biased var, count)`` from (all-reduced) shifted_sums: mean and var in ``shift``'s
    dtype, count a 0-dim float64 tensor on the same device."""
    channels = shift.shape[0]
    count = sums[-1]
    n = count.clamp_min(1.0)
    d = sums[:channels] / n
    var = (sums[channels: 2 * channels] / n - d * d).clamp_min(0.0)
    return (shift.double() + d).to(shift.dtype), var.to(shift.dtype), count


def all_reduce_sum(tensor: Tensor, group: Any) -> Tensor:
    """Sum ``tensor`` in place over ``group`` and return it."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def update_running_stats(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor,
                         count: Union[int, Tensor], momentum: float) -> None:
    """PyTorch's convention: ``new = (1 - momentum) * old + momentum * batch``, with the unbiased variance.

    ``count`` (values per channel behind ``mean``/``var``; an int, used as a Python number, or a device tensor,
    never read on the host, so neither form copies between host and device):
    0 leaves the statistics as they were (an empty batch has nothing to teach), 1 uses the biased variance.
    """
    dtype = running_mean.dtype
    if isinstance(count, Tensor):  # pooled over processes: stays on the device
        count = count.to(torch.float64)
        bessel = torch.where(count > 1, count / (count - 1).clamp_min(1.0), torch.ones_like(count))
        rate = (count >= 1).to(dtype) * momentum  # 0 for an empty batch
    else:  # a Python int: plain floats (a tensor made from it on CUDA would be a blocking host copy)
        count = int(count)
        bessel = count / (count - 1) if count > 1 else 1.0
        rate = momentum if count >= 1 else 0.0
    with torch.no_grad():
        running_mean.mul_(1 - rate).add_(rate * mean.detach().to(dtype))
        running_var.mul_(1 - rate).add_(rate * (var.detach().double() * bessel).to(dtype))


def batch_norm_backward(dy: Tensor, x3: Tensor, mean: Tensor, invstd: Tensor, scale: Tensor,
                        count: Union[int, Tensor], group: Any, need_dx: bool = True
                        ) -> Tuple[Optional[Tensor], Tensor, Tensor]:
    """BN's backward over the batch of every process in ``group`` (this process's alone when None).

    ``x3`` is this process's (N, C, H*W) input, ``mean``/``invstd`` the (pooled) statistics, ``count`` the
    values behind them and ``scale`` the per-channel factor of the normalized input in the output
    (``weight * invstd``; BRN: ``weight * r * invstd``). Returns ``dx = scale * (dy - mean(dy) - (x - mean)
    * invstd^2 * mean(dy * (x - mean)))`` (means over all processes' values; None unless ``need_dx``) and
    this process's ``sum(dy * (x - mean))``, ``sum(dy)`` per channel, from which the affine gradients
    follow (each process's share; DDP sums the shares). One all-reduce of 2C values when pooled.
    """
    n, c, hw = x3.shape
    if x3.numel() > 0:
        dy3 = dy.contiguous().view(n, c, hw)
        dot_local, sum_local = channel_sums(dy3, x3, mean)  # sum(dy * (x - mean)), sum(dy)
    else:
        dot_local = sum_local = torch.zeros_like(mean)
    dot_local, sum_local = dot_local.to(mean.dtype), sum_local.to(mean.dtype)
    total = torch.cat([dot_local, sum_local])
    if group is not None:
        total = all_reduce_sum(total, group)
    total = total / (count.clamp_min(1.0) if isinstance(count, Tensor) else max(count, 1))
    dot, sum_dy = total[:c], total[c:]
    dx = None
    if need_dx:
        if x3.numel() == 0:
            dx = dy.new_zeros(dy.shape)
        else:
            dx3 = unit_affine(x3, mean, (-scale * invstd * invstd * dot).to(mean.dtype), -scale * sum_dy)
            dx = dx3.addcmul_(dy3, scale[:, None]).view(dy.shape)
    return dx, dot_local, sum_local
