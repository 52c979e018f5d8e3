"""Precise BN: recompute the running statistics of the norms that keep them from batch statistics (BN,
SyncBN, SN with its BN branch, any norm whose traits say running_stats and batch_dependent) as the true
average over many batches, instead of the EMA left by training (Wu & Johnson, "Rethinking BN", 2021;
fvcore's update_bn_stats). GN/LN/IN/FrozenBN and frozen statistics are untouched.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from gn_det.layers import norm_name, norm_traits
from gn_det.utils import comm

_STAT_BUFFERS = ("running_mean", "running_var")


def _stat_buffers(module: nn.Module) -> List[torch.Tensor]:
    """The running-statistics buffers ``module`` holds (BN: both; EvoNorm-B0-like norms: running_var only)."""
    return [b for b in (getattr(module, n, None) for n in _STAT_BUFFERS) if isinstance(b, torch.Tensor)]


def _batch_stat_norms(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """(name, module) of every norm whose traits say running_stats and batch_dependent: training moves
    its statistics with each process's batch."""
    for name, m in model.named_modules():
        traits = norm_traits(m)
        if traits is not None and traits.running_stats and traits.batch_dependent:
            yield name, m


def _stat_layers(model: nn.Module) -> List[nn.Module]:
    """``_batch_stat_norms`` for precise BN, which recomputes them.

    Each must update ``running_mean``/``running_var`` with a ``momentum`` attribute in PyTorch's
    convention (new = (1 - momentum) * old + momentum * batch); a ValueError names one that does not.
    """
    layers = []
    for name, m in _batch_stat_norms(model):
        if not hasattr(m, "momentum") or not _stat_buffers(m):
            raise ValueError(f"precise BN: norm {norm_name(m)!r} at {name or '<model>'} declares running_stats and "
                             "batch_dependent but has no `momentum` attribute and running_mean/running_var buffers "
                             "to recompute (TEST.PRECISE_BN.ENABLED False turns precise BN off)")
        layers.append(m)
    return layers


def has_bn_stats(model: nn.Module) -> bool:
    """True when ``model`` has a layer whose running statistics precise BN would recompute."""
    return bool(_stat_layers(model))


def _run_image_target_batch(model: nn.Module) -> Callable[[Any], Any]:
    """gn_det's batches: a list of (image, target) pairs -> ``model(images, targets)``."""
    def run(batch):
        return model([img for img, _ in batch], [t for _, t in batch])
    return run


@torch.no_grad()
def update_bn_stats(model: nn.Module, data: Iterable[Any], num_iter: int, *,
                    run: Optional[Callable[[Any], Any]] = None, layers: Optional[List[nn.Module]] = None) -> int:
    """Set each BN-like layer's running stats to the mean over ``num_iter`` batches of its batch stats.

    Runs each batch through the model in training mode (losses discarded, no gradient): ``run(batch)``,
    by default ``model(images, targets)`` on gn_det's list of (image, target) pairs (gn_det.detectron2
    passes ``model`` itself for detectron2's list of dicts). ``layers``: the norms to recompute (default:
    every norm whose traits say running_stats and batch_dependent). With momentum set to ``1 / (k + 1)``
    at batch k the EMA becomes the exact running average of batch statistics. Only running mean/var
    change: each layer's step count (``num_batches_tracked``, which drives BRN's rmax/dmax warm-up) is
    restored afterwards. Returns the number of layers updated.
    """
    layers = _stat_layers(model) if layers is None else list(layers)
    run = _run_image_target_batch(model) if run is None else run
    if not layers or num_iter <= 0:
        return 0
    momenta = {m: m.momentum for m in layers}
    steps = {m: m.num_batches_tracked.clone() for m in layers
             if isinstance(getattr(m, "num_batches_tracked", None), torch.Tensor)}
    training = model.training
    model.train()
    for m in layers:  # overwritten at the first batch (momentum 1)
        if isinstance(getattr(m, "running_mean", None), torch.Tensor):
            m.running_mean.zero_()
        if isinstance(getattr(m, "running_var", None), torch.Tensor):
            m.running_var.fill_(1.0)
    count = 0
    try:
        for count, batch in enumerate(data, start=1):
            for m in layers:
                m.momentum = 1.0 / count
            run(batch)
            if count >= num_iter:
                break
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, step in steps.items():
            m.num_batches_tracked.copy_(step)
        model.train(training)
    _average_across_processes(layers)
    if count < num_iter:
        raise ValueError(f"TEST.PRECISE_BN.NUM_ITER={num_iter} but the loader gave only {count} batches")
    return len(layers)


def running_stat_layers(model: nn.Module) -> List[nn.Module]:
    """``_batch_stat_norms`` holding running_mean/running_var buffers (no momentum needed): what
    ``average_running_stats`` averages."""
    return [m for _, m in _batch_stat_norms(model) if _stat_buffers(m)]


@torch.no_grad()
def average_running_stats(model: nn.Module) -> int:
    """Average the running statistics of ``model``'s batch-dependent norms over processes, in place, so
    every process holds one model's statistics (DDP runs with broadcast_buffers=False: each process's
    BN/SN/BRN/EvoNorm-B0 statistics follow its own images). A no-op in one process. Returns the number of
    layers averaged (on every process)."""
    layers = running_stat_layers(model)
    _average_across_processes(layers)
    return len(layers)


def _average_across_processes(layers: List[nn.Module]) -> None:
    """Average the layers' running statistics over processes, in place: one all-reduce per dtype and device
    of every buffer flattened (plain BN gets one set of statistics; SyncBN's are equal already)."""
    world = comm.get_world_size()
    if world == 1 or not layers:
        return
    by_kind: Dict[Tuple[torch.dtype, torch.device], List[torch.Tensor]] = {}
    for b in (b for m in layers for b in _stat_buffers(m)):
        by_kind.setdefault((b.dtype, b.device), []).append(b)
    for group in by_kind.values():
        flat = torch.cat([b.reshape(-1) for b in group])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for b in group:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()
