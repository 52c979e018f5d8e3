"""The norm comparison in miniature: plan, resume and tabulate a grid of (norm recipe x images per process).

Each cell trains the same small Mask R-CNN from scratch with one recipe config (configs/tiny/sweep/)
into its own OUTPUT_DIR by calling tools/train_net.py; a cell whose evaluation exists is skipped,
one with a checkpoint is resumed. tools/norm_sweep.py is the command line over this module.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from gn_det.utils.file_io import atomic_write_json

from .formatting import Column, Table
from .runs import RunRecord, as_float, load_run
from .tables import describe_norms

# Recipes in the order the table and plot show them; file stems in configs/tiny/sweep/.
RECIPES = ("bn", "frozenbn", "syncbn", "gn", "sn", "sn_nobn", "xbn")
RECIPE_LABELS = {
    "bn": "BN (batch stats)",
    "frozenbn": "FrozenBN",
    "syncbn": "SyncBN (2 proc)",
    "gn": "GN",
    "sn": "SN",
    "sn_nobn": "SN w/o BN",
    "xbn": "XBN (BN + GN@3x3)",
}
WALL_TIMES_FILE = "wall_times.json"


@dataclass(frozen=True)
class SweepCell:
    """One training run of the sweep: a recipe at a number of images per process."""

    recipe: str
    config_file: str
    ims_per_process: int
    num_processes: int
    output_dir: str

    @property
    def name(self) -> str:
        """Run name, also the OUTPUT_DIR's base name: ``<recipe>_<k>img``."""
        return f"{self.recipe}_{self.ims_per_process}img"


def plan_cells(
    config_dir: str,
    output_root: str,
    ims_per_process: Sequence[int] = (1, 2),
    num_processes: int = 2,
    only: Optional[Sequence[str]] = None,
) -> List[SweepCell]:
    """The grid of runs, restricted to ``only`` (recipe names or run names like ``gn_1img``)."""
    cells = []
    for recipe in RECIPES:
        config_file = os.path.join(config_dir, f"{recipe}.yaml")
        for k in ims_per_process:
            cell = SweepCell(recipe, config_file, k, num_processes, os.path.join(output_root, f"{recipe}_{k}img"))
            if only and recipe not in only and cell.name not in only:
                continue
            if not os.path.isfile(config_file):
                raise FileNotFoundError(f"sweep recipe {recipe!r} needs {config_file}; it is missing")
            cells.append(cell)
    if only:
        known = {c for r in RECIPES for c in [r] + [f"{r}_{k}img" for k in ims_per_process]}
        unknown = [name for name in only if name not in known]
        if unknown:
            raise ValueError(f"--only: unknown recipe or run {', '.join(unknown)}; choose from {', '.join(RECIPES)}"
                             f" or <recipe>_<k>img")
    return cells


def is_evaluated(output_dir: str) -> bool:
    """True when the run wrote an evaluation (inference/<DATASET>/metrics.json)."""
    inference = os.path.join(output_dir, "inference")
    return os.path.isdir(inference) and any(
        os.path.isfile(os.path.join(inference, d, "metrics.json")) for d in os.listdir(inference)
    )


def cell_status(output_dir: str) -> str:
    """"done" (evaluated), "evaluate" (trained, not evaluated), "resume" (has a checkpoint) or "new"."""
    if is_evaluated(output_dir):
        return "done"
    if os.path.isfile(os.path.join(output_dir, "model_final.pth")):
        return "evaluate"
    if os.path.isfile(os.path.join(output_dir, "last_checkpoint")):
        return "resume"
    return "new"


def train_command(
    cell: SweepCell,
    status: str,
    *,
    iters: int,
    lr_per_image: float,
    seed: int = 0,
    train_net: str = os.path.join("tools", "train_net.py"),
    extra_opts: Sequence[str] = (),
) -> List[str]:
    """The tools/train_net.py command line for ``cell`` in ``status`` ("new", "resume" or "evaluate")."""
    total = cell.ims_per_process * cell.num_processes
    steps = max(1, int(iters * 0.8))
    cmd = [sys.executable, train_net, "--config-file", cell.config_file, "--num-gpus", str(cell.num_processes)]
    if status == "resume":
        cmd.append("--resume")
    if status == "evaluate":
        cmd.append("--eval-only")
    opts = [
        "OUTPUT_DIR", cell.output_dir,
        "SEED", str(seed),
        "SOLVER.IMS_PER_BATCH", str(total),
        "SOLVER.BASE_LR", repr(lr_per_image * total),  # linear scaling rule (Goyal et al. 2017)
        "SOLVER.MAX_ITER", str(iters),
        "SOLVER.STEPS", f"({steps},)",
        "SOLVER.WARMUP_ITERS", str(min(100, iters // 5)),
        "SOLVER.CHECKPOINT_PERIOD", str(max(1, iters // 4)),
    ]
    if status == "evaluate":
        opts += ["MODEL.WEIGHTS", os.path.join(cell.output_dir, "model_final.pth")]
    return cmd + opts + list(extra_opts)


def load_wall_times(output_root: str) -> Dict[str, float]:
    """Seconds each run's train_net.py calls took, summed over sweep invocations."""
    path = os.path.join(output_root, WALL_TIMES_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {k: float(v) for k, v in json.load(f).items()}


def add_wall_time(output_root: str, name: str, seconds: float) -> None:
    """Add ``seconds`` to run ``name``'s total in wall_times.json (atomic rewrite)."""
    times = load_wall_times(output_root)
    times[name] = times.get(name, 0.0) + seconds
    atomic_write_json(os.path.join(output_root, WALL_TIMES_FILE), times, indent=1, sort_keys=True)


SWEEP_COLUMNS = [
    Column("recipe", "norm recipe"),
    Column("norm_backbone", "backbone"),
    Column("norm_fpn", "FPN"),
    Column("norm_heads", "heads"),
    Column("ims_per_process", "im/process", None, True),
    Column("box_AP", "box AP", 1, True),
    Column("box_AP50", "box AP50", 1, True),
    Column("mask_AP", "mask AP", 1, True),
    Column("mask_AP50", "mask AP50", 1, True),
    Column("train_s_iter", "s/iter", 3, True),
    Column("peak_mem_mb", "peak mem (MB)", 0, True),
    Column("wall_s", "wall (s)", 0, True),
    Column("status", "status"),
]

# Words in a failed run's output that mean training diverged (the trainer stops on a non-finite loss).
_DIVERGED = ("non-finite", "nan loss", "floatingpointerror", "loss is nan", "loss became infinite")


def run_state(output_dir: str) -> str:
    """"ok" (evaluated), "diverged", "trained" (not evaluated), "incomplete" or "not run"."""
    if is_evaluated(output_dir):
        return "ok"
    log = os.path.join(output_dir, "sweep_stdout.txt")
    if os.path.isfile(log):
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read().lower()
        if any(word in text for word in _DIVERGED):
            return "diverged"
    if os.path.isfile(os.path.join(output_dir, "model_final.pth")):
        return "trained"
    return "incomplete" if os.path.isdir(output_dir) else "not run"


def sweep_rows(cells: Sequence[SweepCell], wall_times: Optional[Dict[str, float]] = None) -> List[Dict[str, Any]]:
    """One row per cell with what its run holds (a cell not run yet has every number missing)."""
    rows = []
    for cell in cells:
        row: Dict[str, Any] = {"recipe": RECIPE_LABELS.get(cell.recipe, cell.recipe), "ims_per_process": cell.ims_per_process}
        if os.path.isfile(os.path.join(cell.output_dir, "config.yaml")):
            record: RunRecord = load_run(cell.output_dir, cell.name)
            row.update(describe_norms(record))
            row["train_s_iter"] = record.median_iter_time()
            row["peak_mem_mb"] = record.peak_memory_mb()
            for result in list(record.results.values())[:1]:
                for task, prefix in (("bbox", "box"), ("segm", "mask")):
                    for metric in ("AP", "AP50", "AP75"):
                        value = result.get(task, {}).get(metric)
                        row[f"{prefix}_{metric}"] = as_float(value)
        row["wall_s"] = (wall_times or {}).get(cell.name)
        row["status"] = run_state(cell.output_dir)
        rows.append(row)
    return rows


def sweep_table(rows: Sequence[Dict[str, Any]], title: str = "") -> Table:
    """The sweep's table (text/Markdown/CSV via gn_det.benchmark.formatting.render)."""
    return Table(columns=SWEEP_COLUMNS, rows=list(rows), title=title)


@dataclass
class SweepSummary:
    """What a sweep invocation did: runs skipped, run, failed, and the total wall time."""

    skipped: List[str] = field(default_factory=list)
    ran: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)
    wall_seconds: float = 0.0
