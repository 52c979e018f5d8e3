"""The norm sweep's cost columns: per recipe, inference GFLOPs per image and the memory a training
forward keeps for backward per image (gn_det.benchmark.model_cost), measured on the first images of the
recipe's DATASETS.TEST with the trained weights of one of its runs (random init when none finished),
cached in OUTPUT_ROOT/model_cost.json (keyed by the config text and the weights file), so
``tools/norm_sweep.py --table-only`` measures each recipe once."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import torch

from gn_det.utils.cli import USER_ERRORS, one_line
from gn_det.utils.file_io import atomic_write_json
from .formatting import Column

logger = logging.getLogger(__name__)

COST_FILE = "model_cost.json"
COST_COLUMNS = [Column("gflops", "GFLOPs", 2, True), Column("act_mib", "act. mem (MiB)", 1, True)]

__all__ = ["COST_FILE", "COST_COLUMNS", "recipe_cost", "add_cost_columns", "with_cost_columns"]


def recipe_cost(config_file: str, weights: Optional[str], num_images: int) -> Dict[str, Optional[float]]:
    """{"gflops": mean inference GFLOPs per image, "act_mib": mean MiB a training forward saves per image};
    both None for a recipe without DATASETS.TEST (nothing to measure on)."""
    from gn_det.checkpoint import load_weights
    from gn_det.config import config_from_args
    from gn_det.data import register_from_cfg
    from gn_det.modeling import build_model
    from .model_cost import activation_stats, dataset_samples, flop_stats

    cfg = config_from_args(config_file, ["MODEL.DEVICE", "cpu"])
    if not cfg.DATASETS.TEST:
        return {"gflops": None, "act_mib": None}
    register_from_cfg(cfg)
    cfg.freeze()
    torch.manual_seed(0)
    model = build_model(cfg)
    if weights:
        load_weights(model, weights, cfg=cfg)
    samples = dataset_samples(cfg, cfg.DATASETS.TEST[0], num_images)
    return {"gflops": flop_stats(model, samples).total[0], "act_mib": activation_stats(model, samples).train_saved[0]}


def _key(config_file: str, weights: Optional[str], num_images: int) -> str:
    h = hashlib.sha1()
    with open(config_file, "rb") as f:
        h.update(f.read())
    if weights:
        st = os.stat(weights)
        h.update(f"{os.path.abspath(weights)}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(str(num_images).encode())
    return h.hexdigest()


def add_cost_columns(rows: Sequence[Dict[str, Any]], cells: Sequence[Any], output_root: str, num_images: int) -> None:
    """Fill each sweep row's "gflops" and "act_mib" from its recipe's cost (computed or cached)."""
    path = os.path.join(output_root, COST_FILE)
    cache: Dict[str, Dict[str, Any]] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            cache = json.load(f)
    by_recipe: Dict[str, List[Any]] = {}
    for cell in cells:
        by_recipe.setdefault(cell.recipe, []).append(cell)
    changed = False
    for recipe, members in by_recipe.items():
        weights = next((os.path.join(c.output_dir, "model_final.pth") for c in members
                        if os.path.isfile(os.path.join(c.output_dir, "model_final.pth"))), None)
        key = _key(members[0].config_file, weights, num_images)
        if cache.get(recipe, {}).get("key") != key:
            try:
                cost = recipe_cost(members[0].config_file, weights, num_images)
            except USER_ERRORS as e:  # a recipe that cannot be measured leaves its cells empty, not the table
                logger.warning("cost of recipe %r not measured: %s", recipe, one_line(e))
                continue
            cache[recipe] = {"key": key, "weights": weights, **cost}
            changed = True
    if changed:
        atomic_write_json(path, cache, indent=1)
    for row in rows:
        cost = cache.get(row.get("_recipe_key"), {})
        row["gflops"], row["act_mib"] = cost.get("gflops"), cost.get("act_mib")


def with_cost_columns(columns: Sequence[Column]) -> List[Column]:
    """``columns`` with the cost columns before "status" (at the end when there is none)."""
    out = [c for c in columns if c.key != "status"]
    return out + list(COST_COLUMNS) + [c for c in columns if c.key == "status"]
