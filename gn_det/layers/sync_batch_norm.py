"""SyncBN: BatchNorm whose batch statistics are those of the union of all processes' batches.

One autograd Function serves CPU (gloo) and CUDA (NCCL, or gloo with CUDA tensors) alike: one
all-reduce of per-process shifted sums, sums of squares and counts forward (see
gn_det.layers.distributed), one all-reduce of the sums of dy and dy * (x - mean) backward. Forward,
backward and running statistics then equal BatchNorm2d on the concatenated batch, also when processes
hold different numbers of images or none: an empty process still takes part in both all-reduces (so
its loss must be connected to the layer's output, as in ``loss = logits.sum() * 0`` for a mask head
without RoIs, or the other processes wait for it) and ends with zero, never missing, gradients for
the weight and bias. (torch.nn.SyncBatchNorm leaves an empty process without any weight gradient,
which DDP then waits for.) The affine gradients are each process's own share, summed across processes
by DDP like any gradient. Statistics are float32 for float16/bfloat16 input (autocast) and the output
has the input's dtype, as BatchNorm2d. Without a process group, or with one process, it is plain BN.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from .distributed import (all_reduce_sum, batch_norm_backward, shifted_sums, stats_from_sums, sync_group,
                          update_running_stats)
from .batch_norm import BN_TRAITS, BNOptions, freeze_batch_norm
from .fused import channel_affine, channel_moments, kernel_eps
from .norm import register_norm
from .shapes import check_batch_statistics, check_input_4d, values_per_channel


class _SyncBatchNormFunction(torch.autograd.Function):
    """Synchronized batch norm over ``group`` on any device the group's backend reduces (CPU, CUDA)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                eps: float, momentum: float, group: Any, module: nn.Module) -> Tensor:
        n, c, h, w = x.shape
        x3 = x.contiguous().view(n, c, h * w)
        count_local = n * h * w
        if count_local > 0:
            mean_local, var_local = channel_moments(x3)
        else:
            mean_local, var_local = running_mean.clone(), torch.zeros_like(running_var)
        sums = all_reduce_sum(shifted_sums(mean_local[None], var_local[None], count_local, running_mean), group)
        mean, var, count = stats_from_sums(sums, running_mean)
        if count_local < 2:  # only then can the union hold 1 value per channel (reading count syncs CUDA)
            check_batch_statistics(module, int(count.item()), "1 value per channel over all processes")
        update_running_stats(running_mean, running_var, mean, var, count, momentum)
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x3, weight, mean, invstd)
        ctx.group, ctx.count = group, count
        if count_local == 0:
            return torch.empty_like(x)
        # A fresh 4-d output, not a view: callers may apply in-place ops (F.relu_) to it.
        return channel_affine(x3.view_as(x), mean, var, weight, bias, eps)

    @staticmethod
    def backward(ctx, dy: Tensor) -> Tuple[Optional[Tensor], ...]:
        x3, weight, mean, invstd = ctx.saved_tensors
        dx, dot_local, sum_local = batch_norm_backward(dy, x3, mean, invstd, weight * invstd, ctx.count, ctx.group,
                                                       ctx.needs_input_grad[0])
        return dx, dot_local * invstd, sum_local, None, None, None, None, None, None


class SyncBatchNorm2d(nn.SyncBatchNorm):
    """BatchNorm2d with statistics pooled over the default process group (or ``process_group``).

    CPU and CUDA input go through gn_det's Function (module docstring); with no process group or one
    process, or in eval, it is BatchNorm2d. ``eps <= 0`` is stored as in gn_det's BatchNorm2d.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, *args, **kwargs) -> None:
        super().__init__(num_features, kernel_eps(eps), *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        check_input_4d(self, x)
        group = sync_group(self.process_group) if self.training else None
        if group is None:  # eval, no process group or one process: BatchNorm2d
            if self.training:
                check_batch_statistics(self, values_per_channel(x), f"an input of shape {tuple(x.shape)}")
            return nn.modules.batchnorm._BatchNorm.forward(self, x)
        if not (self.affine and self.track_running_stats):
            raise ValueError("gn_det's SyncBatchNorm2d needs affine=True and track_running_stats=True")
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return _SyncBatchNormFunction.apply(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.eps, momentum, group, self
        )


@register_norm("SyncBN", options=BNOptions, traits=dataclasses.replace(BN_TRAITS, synced=True),
               freeze=freeze_batch_norm, module_types=(nn.SyncBatchNorm,))
def build_sync_batch_norm(channels: int, options: BNOptions) -> SyncBatchNorm2d:
    """SyncBN over the default process group, momentum/eps from MODEL.BN."""
    return SyncBatchNorm2d(channels, eps=options.epsilon, momentum=options.momentum)
