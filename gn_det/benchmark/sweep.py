"""The norm comparison in miniature: plan, resume and tabulate a grid of (norm recipe x images per process x seed).

Each cell trains the same small Mask R-CNN from scratch with one recipe config (configs/tiny/sweep/)
into its own OUTPUT_DIR by calling tools/train_net.py; a cell whose evaluation exists is skipped,
one with a checkpoint is resumed. tools/norm_sweep.py is the command line over this module.

The grid is declared once, below: every recipe at 1 and 2 images per process, the GN paper's
batch-size axis (1, 2, 4, 8 images per process, its Figure 1) for BN, GN and SN, and 3 seeds for every
cell a claim in CLAIMS compares (one seed elsewhere). A claim "A beats B" holds when A's mean AP over
the seeds exceeds B's by more than two standard deviations of each (the larger sample standard
deviation of the two, ddof=1); the sweep reports every claim, held or not.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from gn_det.utils.file_io import atomic_write_json

from .formatting import Column, Table
from .runs import RunRecord, as_float, load_run
from .tables import describe_norms

# Recipes in the order the table and plot show them; file stems in configs/tiny/sweep/.
RECIPE_LABELS = {
    "bn": "BN (batch stats)",
    "frozenbn": "FrozenBN",
    "syncbn": "SyncBN (2 proc)",
    "gn": "GN",
    "gnws": "GN+WS",
    "sn": "SN",
    "sn_nobn": "SN w/o BN",
    "xbn": "XBN (BN + GN@3x3)",
    "brn": "BRN",
    "frn": "FRN+TLU",
    "evonorm_s0": "EvoNorm-S0",
    "evonorm_b0": "EvoNorm-B0",
}
RECIPES = tuple(RECIPE_LABELS)
BASE_SIZES = (1, 2)  # images per process of every recipe
BATCH_AXIS = {"bn": (1, 2, 4, 8), "gn": (1, 2, 4, 8), "sn": (1, 2, 4, 8)}  # GN paper, Figure 1
SEEDS = (0, 1, 2)  # seeds of the cells a claim relies on; other cells run SEEDS[0] only
WALL_TIMES_FILE = "wall_times.json"


@dataclass(frozen=True)
class Claim:
    """"``better`` at ``better_k`` images per process beats ``worse`` at ``worse_k``" on ``metric``."""

    better: str
    better_k: int
    worse: str
    worse_k: int
    metric: str = "box_AP"
    # (recipe, label) pairs naming the sides in ``text``; None: RECIPE_LABELS (the scratch grid's)
    labels: Optional[Tuple[Tuple[str, str], ...]] = field(default=None, compare=False)

    @property
    def text(self) -> str:
        """The claim as a sentence, e.g. "GN > BN (batch stats) at 1 img/process (box AP)"."""
        names = dict(self.labels) if self.labels is not None else RECIPE_LABELS
        a, b = names.get(self.better, self.better), names.get(self.worse, self.worse)
        metric = self.metric.replace("_", " ")
        if self.better_k == self.worse_k:
            return f"{a} > {b} at {self.better_k} img/process ({metric})"
        return f"{a} at {self.better_k} img/process > {b} at {self.worse_k} ({metric})"


# The readings README states, each checked against the sweep: the GN paper's (GN beats BN at small
# batches; BN recovers as the batch grows), SN's, and one each for the newer norms where a published
# number suggests an ordering (mmdetection's GN+WS 2x rows; MABN's BRN vs BN at 2 images per GPU).
CLAIMS = (
    Claim("gn", 1, "bn", 1),
    Claim("gn", 2, "bn", 2),
    Claim("gn", 1, "bn", 1, "mask_AP"),
    Claim("gn", 2, "bn", 2, "mask_AP"),
    Claim("bn", 8, "bn", 1),
    Claim("sn", 1, "bn", 1),
    Claim("gnws", 2, "gn", 2),
    Claim("brn", 2, "bn", 2),
)


@dataclass(frozen=True)
class SweepCell:
    """One training run of the sweep: a recipe at a number of images per process, with one seed."""

    recipe: str
    config_file: str
    ims_per_process: int
    num_processes: int
    output_dir: str
    seed: int = 0
    label: str = ""  # the table's name for the recipe ("" = RECIPE_LABELS')
    weights: str = ""  # MODEL.WEIGHTS of a fresh start ("" = from scratch)
    pretrained: str = ""  # the pretrained backbone it fine-tunes (bn, gn, sn, gnws), "" from scratch

    @property
    def group(self) -> str:
        """The (recipe, images per process) cell this run is a seed of: ``<recipe>_<k>img``."""
        return f"{self.recipe}_{self.ims_per_process}img"

    @property
    def name(self) -> str:
        """Run name, also the OUTPUT_DIR's base name: ``<recipe>_<k>img`` (+ ``_s<seed>`` past the first seed)."""
        return self.group if self.seed == SEEDS[0] else f"{self.group}_s{self.seed}"


def claimed_groups(claims: Sequence[Claim] = CLAIMS) -> set:
    """The ``(recipe, images per process)`` cells some claim compares: they run every seed of SEEDS."""
    return {(c.better, c.better_k) for c in claims} | {(c.worse, c.worse_k) for c in claims}


def grid(recipes: Sequence[str] = RECIPES, claims: Sequence[Claim] = CLAIMS) -> List[Tuple[str, int, int]]:
    """``(recipe, images per process, seed)`` of every run, in table order."""
    seeded = claimed_groups(claims)
    out = []
    for recipe in recipes:
        for k in BATCH_AXIS.get(recipe, BASE_SIZES):
            for seed in SEEDS if (recipe, k) in seeded else SEEDS[:1]:
                out.append((recipe, k, seed))
    return out


def plan_cells(
    config_dir: str,
    output_root: str,
    num_processes: int = 2,
    only: Optional[Sequence[str]] = None,
    seeds: Optional[Sequence[int]] = None,
    protocol: Optional["Protocol"] = None,
) -> List[SweepCell]:
    """The runs of the grid (``protocol``'s; default the from-scratch grid above), restricted to ``only``
    (recipes, ``<recipe>_<k>img`` cells or run names) and to ``seeds`` when given."""
    protocol = SCRATCH if protocol is None else protocol
    cells, known = [], set()
    for recipe, k, seed in protocol.grid:
        pretrained = protocol.backbones.get(recipe, "")
        cell = SweepCell(recipe, os.path.join(config_dir, f"{recipe}.yaml"), k, num_processes,
                         os.path.join(output_root, f"{recipe}_{k}img" + ("" if seed == SEEDS[0] else f"_s{seed}")),
                         seed, label=protocol.labels.get(recipe, recipe),
                         weights=protocol.weights_path(output_root, pretrained) if pretrained else "",
                         pretrained=pretrained)
        known.update({recipe, cell.group, cell.name})
        if only and not {recipe, cell.group, cell.name} & set(only):
            continue
        if seeds is not None and seed not in seeds:
            continue
        if not os.path.isfile(cell.config_file):
            raise FileNotFoundError(f"sweep recipe {recipe!r} needs {cell.config_file}; it is missing")
        cells.append(cell)
    unknown = [name for name in only or () if name not in known]
    if unknown:
        raise ValueError(f"--only: unknown recipe or run {', '.join(unknown)}; choose from {', '.join(protocol.recipes)}, "
                         "<recipe>_<k>img or <recipe>_<k>img_s<seed>")
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
        "SEED", str(cell.seed),
        "SOLVER.IMS_PER_BATCH", str(total),
        "SOLVER.BASE_LR", repr(lr_per_image * total),  # linear scaling rule (Goyal et al. 2017)
        "SOLVER.MAX_ITER", str(iters),
        "SOLVER.STEPS", f"({steps},)",
        "SOLVER.WARMUP_ITERS", str(min(100, iters // 5)),
        "SOLVER.CHECKPOINT_PERIOD", str(max(1, iters // 4)),
    ]
    if status == "evaluate":
        opts += ["MODEL.WEIGHTS", os.path.join(cell.output_dir, "model_final.pth")]
    elif cell.weights:  # fine-tuning: the pretrained backbone (a resumed run restores its checkpoint instead)
        opts += ["MODEL.WEIGHTS", cell.weights]
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


METRICS = ("box_AP", "box_AP50", "mask_AP", "mask_AP50")


def run_row(cell: SweepCell, wall_times: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """What one run holds (a run not made yet has every number missing)."""
    row: Dict[str, Any] = {"recipe": cell.label or RECIPE_LABELS.get(cell.recipe, cell.recipe),
                           "ims_per_process": cell.ims_per_process, "seed": cell.seed}
    if os.path.isfile(os.path.join(cell.output_dir, "config.yaml")):
        record: RunRecord = load_run(cell.output_dir, cell.name)
        row.update(describe_norms(record))
        row["train_s_iter"] = record.median_iter_time()
        row["peak_mem_mb"] = record.peak_memory_mb()
        for result in list(record.results.values())[:1]:
            for task, prefix in (("bbox", "box"), ("segm", "mask")):
                for metric in ("AP", "AP50"):
                    row[f"{prefix}_{metric}"] = as_float(result.get(task, {}).get(metric))
    row["wall_s"] = (wall_times or {}).get(cell.name)
    row["status"] = run_state(cell.output_dir)
    return row


def _mean_std(values: Iterable[Optional[float]]) -> Tuple[Optional[float], Optional[float], int]:
    """(mean, sample standard deviation or None below 2 values, count) of the values present."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None, 0
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else None), len(present)


def sweep_rows(cells: Sequence[SweepCell], wall_times: Optional[Dict[str, float]] = None) -> List[Dict[str, Any]]:
    """One row per (recipe, images per process): each metric's mean and standard deviation over its seeds."""
    groups: Dict[str, List[SweepCell]] = {}
    for cell in cells:
        groups.setdefault(cell.group, []).append(cell)
    rows = []
    for members in groups.values():
        runs = [run_row(c, wall_times) for c in members]
        row: Dict[str, Any] = {k: runs[0].get(k) for k in ("recipe", "ims_per_process", "norm_backbone", "norm_fpn",
                                                           "norm_heads")}
        for metric in METRICS:
            mean, std, n = _mean_std(r.get(metric) for r in runs)
            row[metric], row[f"{metric}_std"] = mean, std
            if metric == "box_AP":
                row["seeds"] = f"{n}/{len(runs)}"
        row["train_s_iter"] = _mean_std(r.get("train_s_iter") for r in runs)[0]
        row["peak_mem_mb"] = max((r["peak_mem_mb"] for r in runs if r.get("peak_mem_mb") is not None), default=None)
        walls = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
        row["wall_s"] = sum(walls) if walls else None
        states = sorted({r["status"] for r in runs})
        row["status"] = states[0] if len(states) == 1 else ", ".join(states)
        row["_recipe_key"], row["_runs"] = members[0].recipe, runs
        rows.append(row)
    return rows


SWEEP_COLUMNS = [
    Column("recipe", "norm recipe"),
    Column("norm_backbone", "backbone"),
    Column("norm_fpn", "FPN"),
    Column("norm_heads", "heads"),
    Column("ims_per_process", "im/process", None, True),
    Column("seeds", "seeds", None, True),
    Column("box_AP", "box AP", 1, True),
    Column("box_AP_std", "+-", 1, True),
    Column("box_AP50", "box AP50", 1, True),
    Column("mask_AP", "mask AP", 1, True),
    Column("mask_AP_std", "+-", 1, True),
    Column("mask_AP50", "mask AP50", 1, True),
    Column("train_s_iter", "s/iter", 3, True),
    Column("peak_mem_mb", "peak mem (MB)", 0, True),
    Column("wall_s", "wall (s)", 0, True),
    Column("status", "status"),
]


def sweep_table(rows: Sequence[Dict[str, Any]], title: str = "") -> Table:
    """The sweep's table (text/Markdown/CSV via gn_det.benchmark.formatting.render): mean and +- one
    sample standard deviation over the seeds that finished ("seeds": finished/planned)."""
    return Table(columns=SWEEP_COLUMNS, rows=list(rows), title=title)


@dataclass(frozen=True)
class ClaimResult:
    """A claim checked against the sweep: the two means and standard deviations, and the verdict."""

    claim: Claim
    better: Tuple[Optional[float], Optional[float], int]  # mean, std, seeds
    worse: Tuple[Optional[float], Optional[float], int]

    @property
    def gap(self) -> Optional[float]:
        """Mean of ``better`` minus mean of ``worse`` (None when a side has no result)."""
        if self.better[0] is None or self.worse[0] is None:
            return None
        return self.better[0] - self.worse[0]

    @property
    def verdict(self) -> str:
        """"holds" (gap > 2 x the larger standard deviation), "does not hold", or why it cannot be judged."""
        if self.gap is None:
            return "no result"
        if self.better[2] < 2 or self.worse[2] < 2:
            return "too few seeds"
        bound = 2.0 * max(self.better[1] or 0.0, self.worse[1] or 0.0)
        return "holds" if self.gap > bound else "does not hold"


def check_claims(rows: Sequence[Dict[str, Any]], claims: Sequence[Claim] = CLAIMS) -> List[ClaimResult]:
    """Each claim judged on the per-cell runs of ``rows`` (sweep_rows' output)."""
    by_cell = {(r["_recipe_key"], r["ims_per_process"]): r["_runs"] for r in rows}
    results = []
    for claim in claims:
        sides = []
        for recipe, k in ((claim.better, claim.better_k), (claim.worse, claim.worse_k)):
            sides.append(_mean_std(run.get(claim.metric) for run in by_cell.get((recipe, k), [])))
        results.append(ClaimResult(claim, sides[0], sides[1]))
    return results


def _fmt(side: Tuple[Optional[float], Optional[float], int]) -> Optional[str]:
    mean, std, n = side
    if mean is None:
        return None
    return f"{mean:.1f} +- {std:.1f} (n={n})" if std is not None else f"{mean:.1f} (n={n})"


def claims_table(results: Sequence[ClaimResult], title: str = "") -> Table:
    """The claims, the two sides (mean +- std over seeds), the gap, two standard deviations, the verdict."""
    rows = []
    for r in results:
        bound = None if r.gap is None else 2.0 * max(r.better[1] or 0.0, r.worse[1] or 0.0)
        rows.append({"claim": r.claim.text, "better": _fmt(r.better), "worse": _fmt(r.worse), "gap": r.gap,
                     "bound": bound, "verdict": r.verdict})
    columns = [Column("claim", "claim"), Column("better", "left side"), Column("worse", "right side"),
               Column("gap", "gap", 1, True), Column("bound", "2 std", 1, True), Column("verdict", "verdict")]
    return Table(columns=columns, rows=rows, title=title)


@dataclass
class SweepSummary:
    """What a sweep invocation did: runs skipped, run, failed, and the total wall time."""

    skipped: List[str] = field(default_factory=list)
    ran: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)
    wall_seconds: float = 0.0


@dataclass(frozen=True)
class Protocol:
    """A grid of the sweep: SCRATCH below (the from-scratch grid) or gn_det.benchmark.finetune's
    fine-tuning grid: its recipes' table labels, runs ``(recipe, images per process, seed)``, claims, and the pretrained
    backbone each recipe starts from (``backbones``; weights at ``weights_path``)."""

    name: str
    labels: Dict[str, str]
    grid: Tuple[Tuple[str, int, int], ...]
    claims: Tuple[Claim, ...]
    backbones: Dict[str, str] = field(default_factory=dict)
    pretrain_dir: str = "pretrain"  # under the output root

    @property
    def recipes(self) -> Tuple[str, ...]:
        return tuple(self.labels)

    def weights_path(self, output_root: str, pretrained: str) -> str:
        """OUTPUT_ROOT/<pretrain_dir>/<pretraining recipe>/model_final.pth of backbone ``pretrained``."""
        from gn_det.checkpoint.pretrained import PRETRAIN_RECIPES

        return os.path.join(output_root, self.pretrain_dir, PRETRAIN_RECIPES[pretrained], "model_final.pth")


SCRATCH = Protocol("scratch", RECIPE_LABELS, tuple(grid()), CLAIMS)  # the from-scratch grid, plan_cells' default
