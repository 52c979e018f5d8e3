"""Process-group helpers (rank, world size, gather, barrier) that also work without a process group.

Everything here degrades to the single-process answer when torch.distributed is not initialized, so
evaluation and training code can call them unconditionally (detectron2's utils/comm.py habit).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist


def is_dist() -> bool:
    """True when a default process group is up."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if is_dist() else 0


def get_local_rank() -> int:
    """This process's index on its machine (0 without distribution): LOCAL_RANK as launch/torchrun set it."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on rank 0: the process that writes shared files and prints results."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across processes; a no-op with a single process."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (any picklable object), in rank order, on every rank."""
    world = get_world_size()
    if world == 1:
        return [obj]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def gather(obj: Any, dst: int = 0) -> List[Any]:
    """Every rank's ``obj`` in rank order on rank ``dst``; ``[]`` on the other ranks (they need not hold
    everyone's objects, as all_gather would make them)."""
    world = get_world_size()
    if world == 1:
        return [obj]
    out: Optional[List[Any]] = [None] * world if get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out if out is not None else []


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_mean_dict(values: Dict[str, float]) -> Dict[str, float]:
    """The mean over processes of each float in ``values`` (same keys on every rank), for logging."""
    world = get_world_size()
    if world == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.cpu().tolist())}
