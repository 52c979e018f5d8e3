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

from gn_det.utils.file_io import atomic_write_text

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


def peak_memory_mb(device: Optional[torch.device] = None) -> float:
    """Peak memory in MiB: CUDA allocator peak of ``device`` (default: the current CUDA device, which
    MODEL.DEVICE sets, see gn_det.utils.device.use_device) on GPU, else the process's peak resident set size."""
    if device is not None and device.type != "cuda":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated(device if device is not None else torch.cuda.current_device()) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


class JSONWriter:
    """Appends one JSON object per logged iteration to ``path`` (``OUTPUT_DIR/metrics.json``).

    ``start(start_iter)`` (called before training) first drops the lines of iterations >= start_iter
    an earlier attempt left (a run resumed from iteration k repeats k, k+1, ...; a fresh run starts
    empty), so one run's metrics.json never holds two runs' lines for an iteration.
    """

    def __init__(self, path: str):
        self.path = path
        self._file = None
        self._last_written = -1

    def start(self, start_iter: int) -> None:
        """Keep the lines of iterations before ``start_iter`` (atomically rewritten), then append."""
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            kept = [line for line in lines if _iteration_of(line) is not None and _iteration_of(line) < start_iter]
            if len(kept) != len(lines):
                logger.info("%s: dropped %d line(s) of iterations >= %d written before this run started",
                            self.path, len(lines) - len(kept), start_iter)
                atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, storage: EventStorage) -> None:
        """Write every scalar recorded at iterations after the last write, grouped by iteration."""
        if self._file is None:
            self.start(0)
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
        if self._file is not None:
            self._file.close()


def _iteration_of(line: str) -> Optional[int]:
    """The "iteration" of one metrics.json line; None for a line that is not such a JSON object."""
    try:
        value = json.loads(line).get("iteration")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


class TensorboardWriter:
    """Writes each new scalar to tensorboard event files in ``log_dir``.

    ``start(start_iter)`` opens the event file; a resumed run passes tensorboard's ``purge_step`` so
    that events an earlier attempt logged at iterations >= start_iter are hidden.
    """

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._writer = None
        self._last_written = -1

    def start(self, start_iter: int) -> None:
        """Open the event file (purging events from ``start_iter`` on when resuming)."""
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(self.log_dir, purge_step=start_iter if start_iter > 0 else None)

    def write(self, storage: EventStorage) -> None:
        """Add scalars recorded since the last call."""
        if self._writer is None:
            self.start(0)
        newest = self._last_written
        for name, (value, it) in storage.latest().items():
            if it > self._last_written:
                self._writer.add_scalar(name, value, it)
                newest = max(newest, it)
        self._last_written = newest
        self._writer.flush()

    def close(self) -> None:
        """Close the event file."""
        if self._writer is not None:
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
