"""Published box/mask AP, speed and memory numbers, read from the package's ``reference_numbers.csv``.

Each row names the recipe it matches (``config``: our config stem, detectron2-style) and the exact
``source`` it was read from (the GN release in Detectron, detectron2's model zoo, the SN authors'
detection README). Only numbers found in those sources are in the file; a number a source does not
give is an empty field, read here as None.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

REFERENCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_numbers.csv")

REQUIRED_COLUMNS = (
    "config", "source_config", "model", "backbone", "norm_backbone", "norm_fpn", "norm_heads",
    "ims_per_gpu", "schedule", "box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75",
    "train_s_iter", "train_mem_gb", "source", "note",
)
NUMERIC_COLUMNS = (
    "ims_per_gpu", "box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75",
    "train_s_iter", "train_mem_gb",
)


class ReferenceFileError(ValueError):
    """A reference numbers file with a missing column, a row without source, or a non-number."""


@dataclass(frozen=True)
class ReferenceRow:
    """One published result: the recipe it matches, its numbers (None when not published) and its source."""

    config: str
    values: Dict[str, Optional[object]]
    source: str


def _number(text: str, path: str, line: int, column: str) -> Optional[float]:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ReferenceFileError(f"{path}:{line}: column {column!r} must be a number or empty, got {text!r}") from None


def load_reference_numbers(path: str = REFERENCE_FILE) -> List[ReferenceRow]:
    """Parse a reference CSV; every row must name its config and its source."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ReferenceFileError(f"{path}: missing column(s) {', '.join(missing)}")
        rows: List[ReferenceRow] = []
        for record in reader:
            line = reader.line_num
            if None in record:
                raise ReferenceFileError(f"{path}:{line}: more fields than columns (quote fields holding commas)")
            config = (record["config"] or "").strip()
            source = (record["source"] or "").strip()
            if not config:
                raise ReferenceFileError(f"{path}:{line}: empty 'config'; name the recipe the row matches")
            if not source:
                raise ReferenceFileError(f"{path}:{line}: row {config!r} has no 'source'; every number needs one")
            values: Dict[str, Optional[object]] = {}
            for column in REQUIRED_COLUMNS:
                text = record[column] or ""
                values[column] = _number(text, path, line, column) if column in NUMERIC_COLUMNS else (text.strip() or None)
            if values["ims_per_gpu"] is not None:
                values["ims_per_gpu"] = int(values["ims_per_gpu"])  # type: ignore[arg-type]
            rows.append(ReferenceRow(config=config, values=values, source=source))
    return rows


def references_for(config_name: str, rows: List[ReferenceRow]) -> List[ReferenceRow]:
    """The reference rows published for the recipe ``config_name`` (a config file stem), in file order."""
    stem = os.path.splitext(os.path.basename(config_name))[0]
    return [row for row in rows if row.config == stem]


def config_lineage(config_file: str, max_depth: int = 8) -> List[str]:
    """Stems of ``config_file`` and of its single ``_BASE_`` ancestors: an alias such as
    configs/gn_mask_rcnn.yaml (``_BASE_: mask_rcnn_R_50_FPN_3x_gn.yaml``) then finds its recipe's numbers.
    A list-valued _BASE_ (a recipe combined with a shrink, as configs/tiny/ does) ends the chain: the
    shrunk cell is not the published recipe. Unreadable files end it too.
    """
    import yaml

    names: List[str] = []
    path: Optional[str] = config_file
    while path and len(names) < max_depth:
        names.append(os.path.splitext(os.path.basename(path))[0])
        if not os.path.isfile(path):
            break
        try:
            with open(path, encoding="utf-8") as f:
                base = (yaml.safe_load(f) or {}).get("_BASE_")
        except (OSError, yaml.YAMLError, AttributeError):
            break
        path = os.path.join(os.path.dirname(path), base) if isinstance(base, str) else None
    return names
