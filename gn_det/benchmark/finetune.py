"""The fine-tuning comparison in miniature: the papers' protocol on the tiny Mask R-CNN.

The GN and SN papers compare norms by fine-tuning ImageNet-pretrained backbones at 1-2 images per GPU:
frozen BN (BN*, BN-dagger), fine-tuned BN, SyncBN, GN and SN throughout. Here each backbone kind (BN,
GN, SN, GN+WS) is pretrained once on texture classification (tools/pretrain_backbone.py,
configs/tiny/pretrain/), then every cell (configs/tiny/finetune/) fine-tunes the shapes Mask R-CNN from
it at 1 and 2 images per process, 2 processes, seeds 0, 1, 2. tools/norm_sweep.py --protocol finetune
runs it; this module declares the grid, the claims, the pretraining jobs, the published counterparts and
the docs page.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .formatting import Column, Table
from .reference import REFERENCE_FILE, ReferenceRow, load_reference_numbers
from .sweep import SEEDS, Claim, ClaimResult, Protocol, SweepCell

# Recipe file stems of configs/tiny/finetune/ (backbone/head, the papers' notation), in table order.
FINETUNE_LABELS: Dict[str, str] = {
    "frozenbn": "FrozenBN/-",
    "frozenbn_gn": "FrozenBN/GN",
    "frozenbn_sn": "FrozenBN/SN",
    "bn": "BN/BN",
    "syncbn": "SyncBN/SyncBN",
    "gn": "GN/GN",
    "sn": "SN/SN",
    "gnws": "GN+WS/GN+WS",
}
# The pretrained backbone each recipe loads (gn_det.checkpoint.pretrained.LOAD_TABLE; a test checks
# this against each recipe's MODEL.RESNETS.NORM/CONV).
FINETUNE_BACKBONES: Dict[str, str] = {
    "frozenbn": "bn", "frozenbn_gn": "bn", "frozenbn_sn": "bn", "bn": "bn", "syncbn": "bn",
    "gn": "gn", "sn": "sn", "gnws": "gnws",
}
FINETUNE_SIZES = (1, 2)
_L = tuple(FINETUNE_LABELS.items())

# The papers' readings, each at 2 images per process (their 2 images per GPU), box AP.
FINETUNE_CLAIMS = (
    Claim("frozenbn", 2, "bn", 2, labels=_L),  # GN paper: fine-tuning BN at 2 images per GPU "about -6 AP"
    Claim("gn", 2, "frozenbn", 2, labels=_L),  # GN paper Table 5: GN/GN 40.0 vs BN*/- 38.6
    Claim("sn", 2, "gn", 2, labels=_L),  # SN paper: SN/SN 41.0 vs GN/GN 40.2
    Claim("frozenbn_gn", 2, "frozenbn", 2, labels=_L),  # GN paper Table 5: BN*/GN 39.5 vs BN*/- 38.6
    Claim("gnws", 2, "gn", 2, labels=_L),  # WS paper / mmdetection: GN+WS above GN
    Claim("syncbn", 2, "bn", 2, labels=_L),  # SyncBN above per-process BN at small batches
)

FINETUNE = Protocol(
    name="finetune",
    labels=FINETUNE_LABELS,
    grid=tuple((recipe, k, seed) for recipe in FINETUNE_LABELS for k in FINETUNE_SIZES for seed in SEEDS),
    claims=FINETUNE_CLAIMS,
    backbones=FINETUNE_BACKBONES,
)

# Published counterparts (rows of gn_det/benchmark/reference_numbers.csv), per recipe.
PUBLISHED: Dict[str, Sequence[str]] = {
    "frozenbn": ("gn_paper_mask_rcnn_R_50_FPN_bnstar", "sn_paper_faster_rcnn_R_50_C4_bndagger"),
    "frozenbn_gn": ("gn_paper_mask_rcnn_R_50_FPN_bnstar_gn",),
    "frozenbn_sn": ("sn_paper_mask_rcnn_R_50_FPN_bndagger_sn",),
    "bn": ("sn_paper_faster_rcnn_R_50_C4_bn",),
    "syncbn": ("mask_rcnn_R_50_FPN_3x_syncbn",),
    "gn": ("gn_paper_mask_rcnn_R_50_FPN_gn", "sn_paper_mask_rcnn_R_50_FPN_gn", "sn_paper_faster_rcnn_R_50_C4_gn"),
    "sn": ("sn_paper_mask_rcnn_R_50_FPN_sn", "sn_paper_faster_rcnn_R_50_C4_sn"),
    "gnws": ("mask_rcnn_R_50_FPN_2x_gnws",),
}


# ----------------------------------------------------------------------------- pretraining
@dataclass(frozen=True)
class PretrainJob:
    """One backbone to pretrain: its kind (bn, gn, sn, gnws), recipe file and OUTPUT_DIR."""

    kind: str
    config_file: str
    output_dir: str

    @property
    def weights(self) -> str:
        return os.path.join(self.output_dir, "model_final.pth")


def plan_pretraining(cells: Sequence[SweepCell], config_dir: str) -> List[PretrainJob]:
    """The pretraining jobs the ``cells`` need, once each, in the order first needed."""
    from gn_det.checkpoint.pretrained import PRETRAIN_RECIPES

    jobs: Dict[str, PretrainJob] = {}
    for cell in cells:
        if cell.pretrained and cell.pretrained not in jobs:
            config = os.path.join(config_dir, f"{PRETRAIN_RECIPES[cell.pretrained]}.yaml")
            if not os.path.isfile(config):
                raise FileNotFoundError(f"pretrained backbone {cell.pretrained!r} needs {config}; it is missing")
            jobs[cell.pretrained] = PretrainJob(cell.pretrained, config, os.path.dirname(cell.weights))
    return list(jobs.values())


def pretrain_status(output_dir: str) -> str:
    """"done" (model_final.pth and its held-out evaluation), "resume" (a checkpoint) or "new"."""
    if os.path.isfile(os.path.join(output_dir, "model_final.pth")) and os.path.isfile(
            os.path.join(output_dir, "inference", "textures_val", "metrics.json")):
        return "done"
    if os.path.isfile(os.path.join(output_dir, "last_checkpoint")):
        return "resume"
    return "new"


def pretrain_command(job: PretrainJob, status: str, *, iters: int = 0,
                     tool: str = os.path.join("tools", "pretrain_backbone.py")) -> List[str]:
    """The tools/pretrain_backbone.py command for ``job`` in ``status`` ("new" or "resume"); ``iters`` > 0
    replaces the recipe's SOLVER.MAX_ITER (steps at 73 % and 90 %, warmup 10 %, as the recipe's own)."""
    cmd = [sys.executable, tool, "--config", job.config_file]
    if status == "resume":
        cmd.append("--resume")
    cmd += ["OUTPUT_DIR", job.output_dir]
    if iters:
        steps = f"({max(1, int(iters * 0.73))}, {max(2, int(iters * 0.9))})"
        cmd += ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", steps,
                "SOLVER.WARMUP_ITERS", str(max(1, iters // 10)), "SOLVER.CHECKPOINT_PERIOD", str(max(1, iters // 3)),
                "TEST.EVAL_PERIOD", str(max(1, iters // 3))]
    return cmd


def pretrain_accuracy(output_dir: str) -> Optional[float]:
    """The held-out accuracy (percent) a finished pretraining wrote, None before."""
    import json

    path = os.path.join(output_dir, "inference", "textures_val", "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return float(json.load(f)["classification"]["accuracy"])


# ----------------------------------------------------------------------------- published numbers
def published_rows(recipes: Sequence[str], path: str = REFERENCE_FILE) -> List[Dict[str, Any]]:
    """One row per published counterpart of ``recipes``: the cell, the paper's recipe and numbers, the source."""
    by_config: Dict[str, List[ReferenceRow]] = {}
    for row in load_reference_numbers(path):
        by_config.setdefault(row.config, []).append(row)
    out = []
    for recipe in recipes:
        for config in PUBLISHED.get(recipe, ()):
            for ref in by_config.get(config, []):
                v = ref.values
                out.append({"cell": FINETUNE_LABELS.get(recipe, recipe), "model": f"{v['model']} {v['backbone']}",
                            "norms": f"{v['norm_backbone']} / {v['norm_heads'] or '-'}", "schedule": v["schedule"],
                            "box_AP": v["box_AP"], "mask_AP": v["mask_AP"], "source": ref.source})
    return out


PUBLISHED_COLUMNS = [Column("cell", "cell here"), Column("model", "published model"),
                     Column("norms", "backbone / heads"),
                     Column("schedule", "schedule"), Column("box_AP", "box AP", 1, True),
                     Column("mask_AP", "mask AP", 1, True), Column("source", "source")]


def published_table(recipes: Sequence[str]) -> Table:
    """The published counterparts of ``recipes`` (COCO, R-50), to read beside the miniature's table."""
    return Table(columns=PUBLISHED_COLUMNS, rows=published_rows(recipes), title="Published counterparts (COCO)")


def claim_reasons(results: Sequence[ClaimResult]) -> List[str]:
    """One line per claim: the verdict and the numbers behind it (gap against 2 x the larger std)."""
    lines = []
    for r in results:
        if r.gap is None:
            lines.append(f"- {r.claim.text}: {r.verdict} (a side has no finished run)")
            continue
        bound = 2.0 * max(r.better[1] or 0.0, r.worse[1] or 0.0)
        lines.append(f"- {r.claim.text}: **{r.verdict}**: gap {r.gap:+.1f} AP against 2 std = {bound:.1f} "
                     f"(n = {r.better[2]} and {r.worse[2]} seeds)")
    return lines


# ----------------------------------------------------------------------------- the docs page
PRETRAIN_COLUMNS = [Column("kind", "backbone"), Column("recipe", "pretraining recipe"), Column("used_by", "cells"),
                    Column("accuracy", "held-out accuracy (%)", 1, True), Column("wall_s", "wall (s)", 0, True),
                    Column("status", "status")]


def pretrain_table(jobs: Sequence[PretrainJob], wall_times: Dict[str, float]) -> Table:
    """The pretrained backbones: held-out texture accuracy (chance 12.5 %) and pretraining wall time."""
    rows = []
    for job in jobs:
        users = [FINETUNE_LABELS[r] for r, kind in FINETUNE_BACKBONES.items() if kind == job.kind]
        recipe = os.path.relpath(job.config_file) if os.path.isabs(job.config_file) else job.config_file
        rows.append({"kind": job.kind, "recipe": recipe, "used_by": ", ".join(users),
                     "accuracy": pretrain_accuracy(job.output_dir), "wall_s": wall_times.get(f"pretrain_{job.kind}"),
                     "status": pretrain_status(job.output_dir)})
    return Table(columns=PRETRAIN_COLUMNS, rows=rows, title="Pretrained backbones")


def finetune_markdown(table: Table, results: Sequence[ClaimResult], jobs: Sequence[PretrainJob],
                      wall_times: Dict[str, float], *, iters: int, recipes: Sequence[str],
                      lr_per_image: float = 0.005) -> str:
    """docs/norm_finetune.md: protocol, the table, the claims with verdicts, the pretrained backbones, the
    published counterparts and what the miniature does not show. Numbers come from finished runs only."""
    from .formatting import render
    from .sweep import claims_table

    total = sum(wall_times.values())
    lines = [
        "# The norm comparison in miniature: the papers' fine-tuning protocol",
        "",
        "Written by `python tools/norm_sweep.py --protocol finetune --docs` from the runs that finished; "
        "a cell without a finished run shows `-`.",
        "",
        "**Protocol.** Each backbone kind (BN, GN, SN, GN+WS) is pretrained once as a texture classifier "
        "(`tools/pretrain_backbone.py`, `configs/tiny/pretrain/`: R-18 with 64 channels, 64 images per step, "
        "8 texture classes, not the detection shapes). Each cell (`configs/tiny/finetune/`) then fine-tunes the "
        f"tiny Mask R-CNN on the shapes data from its backbone for {iters} iterations with 2 processes at 1 or 2 "
        "images per process, seeds 0, 1, 2: stem and res2 frozen, no weight decay on norm parameters, the 4conv1fc "
        "box head wherever the head has a norm (FrozenBN/- keeps the 2fc head), "
        f"BASE_LR {lr_per_image:g} x images per step. "
        "FrozenBN holds the BN backbone's pretrained statistics; BN and SyncBN start from them and keep training.",
        "",
        render(table, "markdown"),
        "",
        "![AP per cell, mean +- one std over seeds](norm_finetune.png)",
        "",
        "## Claims",
        "",
        render(claims_table(results, title="Claims (holds: gap > 2 x the larger std over seeds)"), "markdown"),
        "",
        *claim_reasons(results),
        "",
        "## Pretrained backbones",
        "",
        render(pretrain_table(jobs, wall_times), "markdown"),
        "",
        f"Wall time of everything finished so far (pretraining included): {total / 60:.0f} min.",
        "",
        "## Published counterparts",
        "",
        render(published_table(recipes), "markdown"),
        "",
        "## What this does not show",
        "",
        "- COCO numbers: the miniature is R-18 at 128 px on 4 synthetic shape classes for a few hundred "
        "iterations; read its ordering against the papers', not its AP values.",
        "- ImageNet pretraining: the backbones learn a synthetic texture task for a few hundred steps, so the "
        "pretrained statistics and features are far weaker than ImageNet's and the frozen-BN advantage is smaller.",
        "- Long schedules and large per-step batches: 2 processes, 1-2 images each.",
        "",
    ]
    return "\n".join(lines)
