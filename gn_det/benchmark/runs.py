"""Read what a training run left in its OUTPUT_DIR (docs/INTERFACES.md, "gn_det.engine / checkpoint / tools").

A run directory holds ``config.yaml`` (the resolved config), ``metrics.json`` (one JSON object per
line, written during training) and ``inference/<DATASET>/metrics.json`` (``{"bbox": {...}, "segm":
{...}}`` in percent). Anything absent stays ``None`` here, so tables can show it as missing, never 0.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml

# Keys under which a metrics.json line may record the number of training processes. The training
# tools own that file; we read the first of these a run wrote and ask nothing else of it.
WORLD_SIZE_KEYS = ("world_size", "num_processes", "num_gpus")
# tools/train_net.py's first log line in OUTPUT_DIR/log.txt (gn_det.engine.default_setup):
# "Rank 0 of <world size>; command line: <argv>".
_LOG_LAUNCH = re.compile(r"Rank 0 of (\d+); command line: (.*)$")
# Keys under which a metrics.json line may record peak memory, with the factor that turns the
# value into MB (detectron2 logs "max_mem" in MB; CPU runs usually log resident memory).
PEAK_MEMORY_KEYS = {
    "peak_memory_mb": 1.0,
    "peak_mem_mb": 1.0,
    "max_mem_mb": 1.0,
    "max_mem": 1.0,
    "peak_memory": 1.0 / (1024 * 1024),  # bytes
    "peak_memory_gb": 1024.0,
}


class RunReadError(ValueError):
    """A run directory that cannot be read (missing or malformed config.yaml / metrics files)."""


@dataclass
class RunRecord:
    """What one run holds, as read from its OUTPUT_DIR; a field is None when the run does not record it."""

    run_dir: str
    name: str
    config: Dict[str, Any]
    # stem of the config file the run was trained from (matches published numbers); run name if unknown
    config_name: str = ""
    # that config file as the training command line gave it (None when log.txt does not show it)
    config_file: Optional[str] = None
    train_lines: List[Dict[str, Any]] = field(default_factory=list)
    world_size: Optional[int] = None
    # {dataset name: {"bbox": {...}, "segm": {...}}}, in percent, as the evaluator wrote them
    results: Dict[str, Dict[str, Dict[str, float]]] = field(default_factory=dict)

    def cfg(self, dotted: str, default: Any = None) -> Any:
        """The resolved config value at a dotted key (``"MODEL.RESNETS.NORM"``), or ``default``."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def median_iter_time(self) -> Optional[float]:
        """Median seconds per training iteration over the metrics.json lines that carry "time"."""
        times = [as_float(line.get("time")) for line in self.train_lines]
        times = [t for t in times if t is not None]
        return statistics.median(times) if times else None

    def peak_memory_mb(self) -> Optional[float]:
        """Largest peak memory (MB) any metrics.json line records, or None when none does."""
        best: Optional[float] = None
        for line in self.train_lines:
            for key, to_mb in PEAK_MEMORY_KEYS.items():
                value = as_float(line.get(key))
                if value is not None:
                    best = value * to_mb if best is None else max(best, value * to_mb)
        return best


def as_float(value: Any) -> Optional[float]:
    """``value`` as a finite float, or None (missing, non-numeric, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_metrics_lines(path: str) -> List[Dict[str, Any]]:
    """The JSON objects of a metrics.json file, one per non-empty line (a torn last line is skipped)."""
    lines: List[Dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        raw = f.read().splitlines()
    for number, text in enumerate(raw, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if number == len(raw):  # a run killed mid-write leaves a partial last line
                break
            raise RunReadError(f"{path}: line {number} is not JSON ({e.msg})") from e
        if isinstance(obj, dict):
            lines.append(obj)
    return lines


def _world_size(lines: Iterable[Dict[str, Any]]) -> Optional[int]:
    for line in lines:
        for key in WORLD_SIZE_KEYS:
            value = line.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _launch_info(run_dir: str) -> Tuple[Optional[int], Optional[str]]:
    """(world size, config file) of the first training launch logged in log.txt (eval-only launches skipped)."""
    path = os.path.join(run_dir, "log.txt")
    if not os.path.isfile(path):
        return None, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = _LOG_LAUNCH.search(line.rstrip("\n"))
            if not match:
                continue
            try:
                argv = shlex.split(match.group(2))
            except ValueError:
                argv = match.group(2).split()
            if "--eval-only" in argv:
                continue
            config = None
            for i, arg in enumerate(argv):
                if arg in ("--config", "--config-file") and i + 1 < len(argv):
                    config = argv[i + 1]
                elif arg.startswith(("--config=", "--config-file=")):
                    config = arg.split("=", 1)[1]
            return int(match.group(1)), config
    return None, None


def _read_results(run_dir: str) -> Dict[str, Dict[str, Dict[str, float]]]:
    inference = os.path.join(run_dir, "inference")
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    if not os.path.isdir(inference):
        return results
    for dataset in sorted(os.listdir(inference)):
        path = os.path.join(inference, dataset, "metrics.json")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise RunReadError(f"{path} is not JSON ({e.msg}); re-run the evaluation (--eval-only)") from e
        if not isinstance(data, dict):
            raise RunReadError(f'{path} must hold {{"bbox": {{...}}, "segm": {{...}}}}, got {type(data).__name__}')
        results[dataset] = {task: dict(vals) for task, vals in data.items() if isinstance(vals, dict)}
    return results


def load_run(run_dir: str, name: Optional[str] = None) -> RunRecord:
    """Read one run's OUTPUT_DIR.

    ``name`` (default: the directory's base name) labels the run and, when given, is also the config
    name published numbers are matched by; otherwise that is the stem of the config file the run's
    log.txt shows it was trained from. The world size comes from metrics.json if a line records it,
    else from log.txt's "Rank 0 of N" launch line.
    """
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config_path):
        raise RunReadError(
            f"{run_dir} has no config.yaml: pass the OUTPUT_DIR of a run of tools/train_net.py"
        )
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise RunReadError(f"{config_path} does not hold a config mapping")
    metrics_path = os.path.join(run_dir, "metrics.json")
    lines = read_metrics_lines(metrics_path) if os.path.isfile(metrics_path) else []
    logged_world, config_file = _launch_info(run_dir)
    run_name = name or os.path.basename(os.path.normpath(run_dir))
    config_name = name or (os.path.splitext(os.path.basename(config_file))[0] if config_file else run_name)
    return RunRecord(
        run_dir=run_dir,
        name=run_name,
        config=config,
        config_name=config_name,
        config_file=None if name else config_file,
        train_lines=lines,
        world_size=_world_size(lines) or logged_world,
        results=_read_results(run_dir),
    )
