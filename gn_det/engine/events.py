"""Training metrics: an ``EventStorage`` the trainer fills each step, and writers that drain it to
``metrics.json`` (one JSON object per line), tensorboard event files and a console line (detectron2's
utils/events.py shape, kept small)."""
from __future__ import annotations

import datetime
import json
import math
import logging
import os
import resource
import time
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch

logger = logging.getLogger(__name__)


class EventStorage:
    """Scalars per iteration: ``put_scalar(name, value)`` records at the current ``iter``."""

    def __init__(self, start_iter: int = 0):
        self.iter = start_iter
        self._history: Dict[str, List[Tuple[int, float]]] = defaultdict(list)
        self._latest: Dict[str, Tuple[float, int]] = {}

    def put_scalar(self, name: str, value: float) -> None:
        """Record ``value`` for ``name`` at the current iteration."""
        value = float(value)
        self._history[name].append((self.iter, value))
        self._latest[name] = (value, self.iter)

    def put_scalars(self, **kwargs: float) -> None:
        """Record several scalars at the current iteration."""
        for k, v in kwargs.items():
            self.put_scalar(k, v)

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """``{name: (value, iteration)}`` of each scalar's newest record."""
        return dict(self._latest)

    def median(self, name: str, window: int) -> float:
        """Median of the last ``window`` values of ``name`` (smooths the console line)."""
        vals = sorted(v for _, v in self._history[name][-window:])
        return vals[len(vals) // 2] if vals else float("nan")

    def history(self, name: str) -> List[Tuple[int, float]]:
        """All ``(iteration, value)`` records of ``name``."""
        return list(self._history[name])

    def step(self) -> None:
        """Advance to the next iteration."""
        self.iter += 1


def peak_memory_mb() -> float:
    """Peak memory in MiB: CUDA allocator peak on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


class JSONWriter:
    """Appends one JSON object per logged iteration to ``path`` (``OUTPUT_DIR/metrics.json``)."""

    def __init__(self, path: str):
        self._file = open(path, "a", encoding="utf-8")
        self._last_written = -1

    def write(self, storage: EventStorage) -> None:
        """Write every scalar recorded at iterations after the last write, grouped by iteration."""
        by_iter: Dict[int, Dict[str, float]] = defaultdict(dict)
        for name, (value, it) in storage.latest().items():
            if it > self._last_written:
                by_iter[it][name] = value
        for it in sorted(by_iter):
            # NaN (e.g. AP of an area range with no objects) as null: every line stays strict JSON.
            row = {k: (None if math.isnan(v) else v) for k, v in by_iter[it].items()}
            self._file.write(json.dumps({"iteration": it, **row}, sort_keys=True) + "\n")
        if by_iter:
            self._last_written = max(by_iter)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class TensorboardWriter:
    """Writes each new scalar to tensorboard event files in ``log_dir``."""

    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)
        self._last_written = -1

    def write(self, storage: EventStorage) -> None:
        """Add scalars recorded since the last call."""
        newest = self._last_written
        for name, (value, it) in storage.latest().items():
            if it > self._last_written:
                self._writer.add_scalar(name, value, it)
                newest = max(newest, it)
        self._last_written = newest
        self._writer.flush()

    def close(self) -> None:
        """Close the event file."""
        self._writer.close()


class ConsoleWriter:
    """Logs ``eta  iter  losses  time  data_time  lr  max_mem``, losses smoothed over ``window`` steps."""

    def __init__(self, max_iter: int, window: int = 20):
        self.max_iter = max_iter
        self.window = window
        self._last: Optional[Tuple[int, float]] = None
        self._printed = -1

    def _eta(self, storage: EventStorage, it: int) -> str:
        now = time.perf_counter()
        if self._last is None or it == self._last[0]:
            sec = storage.median("time", self.window) * (self.max_iter - it - 1)
        else:
            sec = (now - self._last[1]) / (it - self._last[0]) * (self.max_iter - it - 1)
        self._last = (it, now)
        return str(datetime.timedelta(seconds=int(sec))) if sec == sec else "?"

    def write(self, storage: EventStorage) -> None:
        """Log one progress line for the newest iteration."""
        latest = storage.latest()
        if "time" not in latest:
            return
        it = latest["time"][1]
        if it == self._printed:
            return
        self._printed = it
        losses = "  ".join(f"{k}: {storage.median(k, self.window):.4g}" for k in sorted(latest)
                           if k.startswith("loss") or k == "total_loss")
        lr = latest.get("lr", (float("nan"), 0))[0]
        logger.info("eta: %s  iter: %d/%d  %s  time: %.3f  data_time: %.3f  lr: %.5g  max_mem: %.0fM",
                    self._eta(storage, it), it + 1, self.max_iter, losses, storage.median("time", self.window),
                    storage.median("data_time", self.window), lr, latest.get("peak_mem_mb", (0.0, 0))[0])

    def close(self) -> None:
        """Nothing to close."""
