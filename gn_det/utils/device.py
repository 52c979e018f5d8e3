"""Which device a process uses: MODEL.DEVICE ("auto", "cpu", "cuda", "cuda:N") resolved per process.

"auto" (the default) is what a detectron2 user expects: each process on its own GPU,
``cuda:<local rank>``, when CUDA is present, else the CPU. "cuda" means ``cuda:<local rank>`` too;
"cuda:N" pins device N. Asking for CUDA where there is none is a one-line ValueError naming
MODEL.DEVICE and the fix. The tools resolve the key once per process, before freezing the config,
so OUTPUT_DIR/config.yaml records the device actually used.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

import torch

from .comm import get_local_rank

DEVICE_KEY = "MODEL.DEVICE"
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def resolve_device(spec: str, local_rank: Optional[int] = None) -> torch.device:
    """The torch.device that ``spec`` means for the process with ``local_rank`` (default: LOCAL_RANK or 0)."""
    text = str(spec).strip().lower()
    rank = get_local_rank() if local_rank is None else int(local_rank)
    if text in ("cpu", "meta"):  # meta: shapes without storage (gn_det.engine.validate builds the model so)
        return torch.device(text)
    if text == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    match = _CUDA_INDEX.match(text)
    if text not in ("auto", "cuda") and match is None:
        raise ValueError(f"{DEVICE_KEY}={spec!r} is not a device; use 'auto' (GPU if present, else CPU), "
                         "'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_KEY}={spec!r} but CUDA is not available on this machine (torch "
                         f"{torch.__version__}); set {DEVICE_KEY} cpu or auto, or install a CUDA build of torch")
    index = rank if match is None else int(match.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"{DEVICE_KEY}={spec!r} needs CUDA device {index} (local rank {rank}) but only {count} "
                         f"are visible; use at most --num-gpus {count} or set {DEVICE_KEY} to a visible device")
    return torch.device("cuda", index)


def check_processes_per_machine(spec: str, procs_per_machine: int, backend: Optional[str] = None) -> None:
    """ValueError (one line) unless ``procs_per_machine`` processes on MODEL.DEVICE ``spec`` each get a
    GPU of their own when they use CUDA (NCCL refuses two processes on one GPU: "Duplicate GPU detected").
    With ``backend`` "gloo" processes may share a GPU (MODEL.DEVICE cuda:N pins them all to it)."""
    device = resolve_device(spec, 0)
    if device.type != "cuda" or procs_per_machine <= 1:
        return
    pinned = _CUDA_INDEX.match(str(spec).strip().lower())
    if backend == "gloo" and pinned:
        return
    if pinned:
        raise ValueError(f"{DEVICE_KEY}={spec!r} puts every process on GPU {device.index}, but {procs_per_machine} "
                         f"processes run on this machine (--num-gpus {procs_per_machine}) and NCCL needs one GPU per "
                         f"process; set {DEVICE_KEY} cuda (each process on the GPU of its local rank; choose the GPUs "
                         "with CUDA_VISIBLE_DEVICES), or pass --num-gpus 1")
    count = torch.cuda.device_count()
    if procs_per_machine > count:
        raise ValueError(f"--num-gpus {procs_per_machine} starts {procs_per_machine} processes on this machine, one "
                         f"per GPU, but only {count} CUDA device(s) are visible; pass --num-gpus {count}, or "
                         f"{DEVICE_KEY} cpu for CPU processes" + (
                             f", or {DEVICE_KEY} cuda:0 to share GPU 0 over gloo" if backend == "gloo" else ""))


def resolve_cfg_device(cfg) -> torch.device:
    """Resolve ``cfg.MODEL.DEVICE`` for this process, write the result back (cfg must not be frozen) and
    make it the current CUDA device (``use_device``)."""
    device = resolve_device(cfg.MODEL.DEVICE)
    cfg.MODEL.DEVICE = str(device)
    use_device(device)
    return device


def use_device(device: torch.device) -> None:
    """Make a CUDA ``device`` the current one (no-op on CPU): calls without a device (the allocator's
    peak, ``torch.cuda.synchronize()``, new CUDA tensors, NCCL) then mean it, not cuda:0, also in the
    one-process path with MODEL.DEVICE cuda:N (issue 21)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function waiting for ``device``'s queued work (``torch.cuda.synchronize(device)``); a no-op on CPU.
    Timing code calls it so that it waits on the device it measures, whatever device is current."""
    if device.type != "cuda":
        return lambda: None
    return lambda: torch.cuda.synchronize(device)


def backend_for(device: torch.device) -> str:
    """The process-group backend for processes on ``device``: NCCL on CUDA, gloo on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"
