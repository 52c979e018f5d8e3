"""Start one training/evaluation process per device: ``launch(main_func, num_gpus_per_machine, ...)``.

detectron2's convention: N processes per machine (NCCL on GPUs, gloo on CPU), ranks numbered
``machine_rank * N + local_rank``. The backend follows the device the processes will use (``device``,
MODEL.DEVICE: "auto" = CUDA when present): a CPU run on a GPU machine (MODEL.DEVICE cpu) uses gloo.
Under ``torchrun`` (RANK/WORLD_SIZE/LOCAL_RANK in the environment) the process group comes from those
variables and ``main_func`` runs in the current process.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gn_det.utils.device import backend_for, check_processes_per_machine, resolve_device

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def find_free_port() -> int:
    """A TCP port free on this machine right now (for single-machine ``dist_url='auto'``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_backend(device: str = "auto", local_rank: int = 0) -> str:
    """The backend for processes on MODEL.DEVICE ``device``: NCCL on CUDA, gloo on CPU."""
    return backend_for(resolve_device(device, local_rank))


def under_torchrun() -> bool:
    """True when a launcher such as torchrun has set RANK, WORLD_SIZE and LOCAL_RANK."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def check_launch_args(num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
                      dist_url: Optional[str] = None) -> None:
    """ValueError (one line, naming the flag) unless --num-gpus / --num-machines / --machine-rank /
    --dist-url make a valid set of processes (what ``launch`` starts without torchrun)."""
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(f"--num-gpus and --num-machines must be >= 1, got {num_gpus_per_machine} "
                         f"and {num_machines}")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank should be in [0, {num_machines - 1}], got {machine_rank}")
    if num_machines > 1 and dist_url in (None, "", "auto"):
        raise ValueError("--dist-url auto works on one machine only; with --num-machines > 1 pass "
                         "--dist-url tcp://<machine 0 address>:<port>")


def launch(main_func: Callable[..., Any], num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: Optional[str] = None, args: Sequence[Any] = (),
           timeout: timedelta = DEFAULT_TIMEOUT, device: str = "auto", backend: Optional[str] = None) -> None:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine * num_machines`` processes in total.

    ``num_gpus_per_machine`` is the number of processes on this machine (one per GPU; on a CPU-only
    machine it is the number of CPU processes, joined with gloo). ``dist_url`` is "auto" (a free local
    port, single machine only) or "tcp://HOST:PORT" of machine 0. ``device`` is MODEL.DEVICE: it picks
    the backend (NCCL for CUDA, gloo for CPU) and each process's current CUDA device. ``backend``
    ("gloo" or "nccl", the --dist-backend flag; None or "auto": by the device) overrides that choice:
    gloo with CUDA tensors runs DDP, SyncBN and the evaluator's gather on one GPU (tools/gpu_check.sh).
    """
    backend = check_backend(backend, device)
    if under_torchrun():
        _init_from_env(timeout, device, backend)
        try:
            main_func(*args)
        finally:
            _destroy()
        return
    check_launch_args(num_gpus_per_machine, num_machines, machine_rank, dist_url)
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url in (None, "", "auto"):
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    check_processes_per_machine(device, num_gpus_per_machine, backend)
    mp.start_processes(_worker, nprocs=num_gpus_per_machine, join=True, start_method="spawn",
                       args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout,
                             device, backend))


def _worker(local_rank: int, main_func: Callable[..., Any], world_size: int, num_per_machine: int,
            machine_rank: int, dist_url: str, args: Sequence[Any], timeout: timedelta, device: str,
            backend: Optional[str] = None) -> None:
    rank = machine_rank * num_per_machine + local_rank
    os.environ["LOCAL_RANK"] = str(local_rank)  # read by get_local_rank() and device selection
    chosen = _use_device(device, local_rank)
    backend = backend or chosen
    if chosen == "gloo":  # CPU processes
        share_cpu_threads(num_per_machine)
    try:
        dist.init_process_group(backend=backend, init_method=dist_url, world_size=world_size, rank=rank,
                                timeout=timeout)
    except Exception as e:
        raise RuntimeError(f"Process group initialization failed at {dist_url} (rank {rank}/{world_size}): {e}") from e
    dist.barrier()
    try:
        main_func(*args)
    finally:
        _destroy()


def share_cpu_threads(num_processes: int) -> None:
    """Give each CPU process its share of the cores unless OMP_NUM_THREADS says otherwise: N processes
    of torch's default (all cores each) oversubscribe the CPU, measured 6.4 s/iter vs 0.41 s/iter for
    2 processes on 2 cores."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_processes))


def _use_device(device: str, local_rank: int) -> str:
    """Make this process's CUDA device current (NCCL and the CUDA allocator use it); its backend."""
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    return backend_for(resolved)


def check_backend(backend: Optional[str], device: str = "auto") -> Optional[str]:
    """``backend`` (--dist-backend) checked against MODEL.DEVICE ``device``: None for "auto"/None (by the
    device), else "gloo" or "nccl"; ValueError (one line) for another name or NCCL without CUDA."""
    if backend in (None, "", "auto"):
        return None
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"--dist-backend {backend!r} is not a backend; use auto, gloo or nccl")
    if backend == "nccl" and resolve_device(device, 0).type != "cuda":
        raise ValueError(f"--dist-backend nccl needs CUDA processes but MODEL.DEVICE {device!r} runs on the CPU; "
                         "use --dist-backend gloo (or auto)")
    return backend


def _init_from_env(timeout: timedelta, device: str, backend: Optional[str] = None) -> None:
    """torchrun's process group, then a barrier (as the spawn path): every process has passed the
    preflight, in particular rank 0's --overwrite clean-up of OUTPUT_DIR, before any opens a file there
    (NCCL connects lazily, so init alone does not wait for rank 0; issue 21)."""
    chosen = _use_device(device, int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or chosen, init_method="env://", timeout=timeout)
    dist.barrier()


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
