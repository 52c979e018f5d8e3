"""Two fused per-channel primitives on CPU and CUDA, built from torch's native batch-norm kernels.

torch has no public CPU kernels for "per-channel sums of a product" or "per-channel affine", but its
batch-norm kernels are exactly that once the statistics are chosen by us: in eval mode ``F.batch_norm``
applies ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel in one pass, and the reduction
half of ``native_batch_norm_backward`` returns ``sum(g * (x - center))`` and ``sum(g)`` per channel in
one pass without temporaries. Viewing an (N, C, H, W) tensor as (1, N*C, H*W) turns "channel" into
"(sample, channel)", which is what SN needs; SyncBN uses the ordinary (N, C, H*W) view.

Precision: the input may be float16/bfloat16 (autocast); statistics, per-channel vectors and the sums
returned are float32 (float64 for float64 input), so the reductions accumulate in float32 and cannot
overflow, and the kernels run in torch's mixed-type mode (low-precision tensor, float32 parameters).
No call passes eps <= 0 to a batch-norm kernel (torch 2.11 refuses it): a unit divisor is var = 0
with eps = 1, exact in floating point.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
import torch.nn.functional as F


UNIT_EPS = 1.0  # with var = 0: sqrt(var + eps) = 1 exactly, a positive eps every torch accepts


def kernel_eps(eps: float) -> float:
    """``eps`` made acceptable to every torch's batch-norm kernel: eps <= 0 becomes float32's smallest normal
    number (1.2e-38), which leaves ``var + eps`` unchanged for any variance above 1e-31 (torch 2.11 refuses
    eps <= 0; torchvision's COCO detectors use eps = 0)."""
    return float(eps) if eps > 0 else float(torch.finfo(torch.float32).tiny)


def stat_dtype(x: Tensor) -> torch.dtype:
    """dtype of statistics for input ``x``: float32 for float16/bfloat16/float32, float64 for float64."""
    return torch.promote_types(x.dtype, torch.float32)


def channel_sums(grad: Tensor, x: Tensor, center: Tensor) -> Tuple[Tensor, Tensor]:
    """Per channel of (N, K, M) tensors: ``(sum(grad * (x - center)), sum(grad))``, each of shape (K,).

    One pass over ``grad`` and ``x`` (torch's batch-norm backward reduction with invstd = 1), accumulated
    and returned in ``stat_dtype(x)`` whatever the precision of ``grad`` and ``x``.
    """
    center = center.to(stat_dtype(x))
    ones = torch.ones_like(center)
    # Training mode reads save_invstd (ones), not eps; eps is positive only for torch releases that check it.
    _, dot, total = torch.ops.aten.native_batch_norm_backward(
        grad, x, ones, None, None, center, ones, True, UNIT_EPS, [False, True, True]
    )
    return dot, total


def channel_affine(x: Tensor, mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor, eps: float,
                   out: Optional[Tensor] = None) -> Tensor:
    """Per channel of an (N, K, ...) tensor: ``(x - mean) / sqrt(var + eps) * weight + bias`` in one pass.

    The result has ``x``'s dtype; the per-channel vectors are used in ``stat_dtype(x)``. ``eps <= 0``
    (FrozenBN with torchvision's eps = 0) folds ``1 / sqrt(var + eps)`` into the weight and runs the
    kernel with var = 0, eps = 1. ``out`` (same shape, e.g. a (1, N*C, H*W) view of a fresh (N, C, H, W)
    tensor) receives the result, so a custom autograd Function can return that tensor itself rather
    than a view, which autograd would forbid in-place ops on (F.relu_ after a norm).
    """
    dtype = stat_dtype(x)
    mean, var, weight, bias = (t.to(dtype) for t in (mean, var, weight, bias))
    if eps <= 0:
        weight = weight * torch.rsqrt(var + eps)
        var, eps = torch.zeros_like(var), UNIT_EPS
    if out is None:
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
    empty = mean.new_empty(0)
    torch.ops.aten.native_batch_norm.out(
        x, weight, bias, mean, var, False, 0.0, eps, out=out, save_mean=empty, save_invstd=empty.clone()
    )
    return out


def unit_affine(x: Tensor, center: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Per channel of an (N, K, ...) tensor: ``(x - center) * weight + bias`` in one pass (a new tensor)."""
    return channel_affine(x, center, torch.zeros_like(center), weight, bias, UNIT_EPS)


def channel_moments(x: Tensor, shift: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Per channel of an (N, K, M) tensor: mean and biased variance over (N, M), each of shape (K,), in
    ``stat_dtype(x)`` (float32 for float16/bfloat16 input).

    One pass: torch's reduction of ``x * (x - shift)`` and ``x`` together, then
    ``var = sum(x * (x - s)) / n - mean * (mean - s)``. The shift (default: each channel's
    first value) keeps the sum of products small when a channel's mean is large against its spread;
    the float32 sums still limit the variance to a relative error of about 1e-7 * (mean / std)^2 * 10
    (1e-4 at a mean of 10 std), which eps = 1e-5 and the downstream affine absorb in practice.
    """
    count = x.shape[0] * x.shape[2]
    if shift is None:
        shift = x[0, :, 0]
    shift = shift.to(stat_dtype(x))  # a float32 copy: the moments are float32 for low-precision x
    dot, total = channel_sums(x, x, shift)
    mean = total / count
    var = dot / count - mean * (mean - shift)  # |mean - shift| ~ std: the product stays small
    return mean, var.clamp_min_(0.0)
