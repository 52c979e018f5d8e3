"""Data parallelism across processes: DistributedDataParallel on GPUs, gradient all-reduce on CPU.

On CUDA the model is wrapped in torch's DDP on the process's own device (NCCL buckets overlap the
all-reduce with the backward). torch's DDP refuses CPU modules that contain nn.SyncBatchNorm subclasses
(gn_det's SyncBN runs on CPU through gloo), so on CPU we do what DDP does by hand: broadcast rank 0's
parameters and buffers once, then after each backward average the gradients over processes with one
flat all-reduce.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from gn_det.utils import comm


def broadcast_model(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every process (same start everywhere)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=src)


def make_gradient_averager(model: nn.Module) -> Callable[[], None]:
    """A function averaging ``.grad`` of ``model``'s trainable parameters over processes in one all-reduce
    (parameters without a gradient this step count as zero, so every rank sends the same layout)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def average() -> None:
        world = comm.get_world_size()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat.div_(world)
        for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)

    return average


def wrap_data_parallel(model: nn.Module) -> Tuple[nn.Module, Optional[Callable[[], None]]]:
    """(model to train, gradient hook): DDP on CUDA; on CPU the model itself, synced by hand."""
    if comm.get_world_size() == 1:
        return model, None
    device = next(model.parameters()).device
    if device.type == "cuda":
        # broadcast_buffers=False: BN running statistics stay per process (precise BN averages them).
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index], output_device=device.index,
                                                  broadcast_buffers=False)
        return ddp, None
    broadcast_model(model)
    return model, make_gradient_averager(model)
