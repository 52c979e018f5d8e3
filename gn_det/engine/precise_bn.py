"""Precise BN: recompute the running statistics of BN / SyncBN / SN layers as the true average over
many batches, instead of the EMA left by training (Wu & Johnson, "Rethinking BN", 2021; fvcore's
update_bn_stats). GN/LN/IN/FrozenBN have no running statistics and are untouched.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

import torch
import torch.distributed as dist
from torch import nn

from gn_det.utils import comm


def _stat_layers(model: nn.Module) -> List[nn.Module]:
    """Layers whose ``running_mean``/``running_var`` training updates with a momentum (BN, SyncBN, SN)."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "running_mean", None), torch.Tensor)
            and isinstance(getattr(m, "running_var", None), torch.Tensor)
            and hasattr(m, "momentum")
            and not getattr(m, "freeze_stats", False)  # SN fine-tuning mode: statistics stay frozen
            and type(m).__name__ not in ("FrozenBatchNorm2d",)]


def has_bn_stats(model: nn.Module) -> bool:
    """True when ``model`` has a layer whose running statistics precise BN would recompute."""
    return bool(_stat_layers(model))


@torch.no_grad()
def update_bn_stats(model: nn.Module, data: Iterable[List[Tuple[torch.Tensor, dict]]], num_iter: int) -> int:
    """Set each BN-like layer's running stats to the mean over ``num_iter`` batches of its batch stats.

    Runs ``model(images, targets)`` in training mode (losses discarded, no gradient). With momentum
    set to ``1 / (k + 1)`` at batch k the EMA becomes the exact running average of batch statistics.
    Returns the number of layers updated.
    """
    layers = _stat_layers(model)
    if not layers or num_iter <= 0:
        return 0
    momenta = {m: m.momentum for m in layers}
    training = model.training
    model.train()
    for m in layers:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)  # overwritten at the first batch (momentum 1)
    count = 0
    try:
        for count, batch in enumerate(data, start=1):
            for m in layers:
                m.momentum = 1.0 / count
            images = [img for img, _ in batch]
            targets = [t for _, t in batch]
            model(images, targets)
            if count >= num_iter:
                break
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        model.train(training)
    _average_across_processes(layers)
    if count < num_iter:
        raise ValueError(f"TEST.PRECISE_BN.NUM_ITER={num_iter} but the loader gave only {count} batches")
    return len(layers)


def _average_across_processes(layers: List[nn.Module]) -> None:
    """Average running stats over processes: plain BN gets one set of statistics (SyncBN's are equal)."""
    world = comm.get_world_size()
    if world == 1:
        return
    for m in layers:
        for buf in (m.running_mean, m.running_var):
            dist.all_reduce(buf)
            buf.div_(world)
