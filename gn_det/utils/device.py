"""Which device a process uses: MODEL.DEVICE ("auto", "cpu", "cuda", "cuda:N") resolved per process.

"auto" (the default) is what a detectron2 user expects: each process on its own GPU,
``cuda:<local rank>``, when CUDA is present, else the CPU. "cuda" means ``cuda:<local rank>`` too;
"cuda:N" pins device N. Asking for CUDA where there is none is a one-line ValueError naming
MODEL.DEVICE and the fix. The tools resolve the key once per process, before freezing the config,
so OUTPUT_DIR/config.yaml records the device actually used.
"""
from __future__ import annotations

import re
from typing import Optional

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


def resolve_cfg_device(cfg) -> torch.device:
    """Resolve ``cfg.MODEL.DEVICE`` for this process and write the result back (cfg must not be frozen)."""
    device = resolve_device(cfg.MODEL.DEVICE)
    cfg.MODEL.DEVICE = str(device)
    return device


def backend_for(device: torch.device) -> str:
    """The process-group backend for processes on ``device``: NCCL on CUDA, gloo on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"
