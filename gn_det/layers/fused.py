"""Two fused per-channel primitives on CPU and CUDA, built from torch's native batch-norm kernels.

torch has no public CPU kernels for "per-channel sums of a product" or "per-channel affine", but its
batch-norm kernels are exactly that once the statistics are chosen by us: in eval mode ``F.batch_norm``
applies ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel in one pass, and the reduction
half of ``native_batch_norm_backward`` returns ``sum(g * (x - center))`` and ``sum(g)`` per channel in
one pass without temporaries. Viewing an (N, C, H, W) tensor as (1, N*C, H*W) turns "channel" into
"(sample, channel)", which is what SN needs; SyncBN uses the ordinary (N, C, H*W) view.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor
import torch.nn.functional as F


def channel_sums(grad: Tensor, x: Tensor, center: Tensor) -> Tuple[Tensor, Tensor]:
    """Per channel of (N, K, M) tensors: ``(sum(grad * (x - center)), sum(grad))``, each of shape (K,).

    One pass over ``grad`` and ``x`` (torch's batch-norm backward reduction with invstd = 1).
    """
    ones = torch.ones_like(center)
    _, dot, total = torch.ops.aten.native_batch_norm_backward(
        grad, x, ones, None, None, center, ones, True, 0.0, [False, True, True]
    )
    return dot, total


def channel_affine(x: Tensor, mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Per channel of an (N, K, ...) tensor: ``(x - mean) / sqrt(var + eps) * weight + bias`` in one pass."""
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)


def channel_moments(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per channel of an (N, K, M) tensor: mean and biased variance over (N, M), each of shape (K,).

    Two cheap passes (a sum, then torch's one-pass reduction of x * (x - mean) with sum(x) alongside);
    the variance ``(sum(x * (x - m)) - m * (sum(x) - count * m)) / count`` is the centered one, so a large
    mean does not cancel its digits away as ``E[x^2] - E[x]^2`` would.
    """
    count = x.shape[0] * x.shape[2]
    mean = x.sum((0, 2)) / count
    dot, total = channel_sums(x, x, mean)
    m = mean.double()
    var = (dot.double() - m * (total.double() - count * m)) / count
    return mean, var.clamp_min(0.0).to(x.dtype)
