"""Run a test's worker in a real 2-process group (spawned) and collect what each rank reports.

The worker is ``worker(rank, port, queue, *args)``: it joins the group at ``tcp://127.0.0.1:<port>``,
checks its cases, and puts ``(rank, case, None)`` on success or ``(rank, case, traceback)`` on failure
for each case. A hang or a dead rank becomes ``{"error": ...}`` after ``timeout`` seconds.
"""
import socket
from typing import Any, Callable, Dict, Sequence

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port free on this machine right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(worker: Callable, num_cases: int, timeout: float, args: Sequence[Any] = ()) -> Dict:
    """``{(rank, case): None or traceback}`` from both ranks, or ``{"error": why}`` if they did not report."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(rank, port, queue, *args), daemon=True) for rank in range(2)]
    for p in procs:
        p.start()
    out: Dict = {}
    try:
        for _ in range(2 * num_cases):
            rank, case, err = queue.get(timeout=timeout)
            out[rank, case] = err
    except Exception as e:  # queue.Empty: a rank hung or died
        out["error"] = f"distributed workers did not report within {timeout}s: {e!r}"
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return out
