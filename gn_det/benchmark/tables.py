"""The AP table across runs (one row per run and evaluated dataset), optionally with published numbers.

Columns follow the GN paper / detectron2 model zoo tables: model, backbone, the norm of each part
(backbone / FPN / heads), images per GPU (SOLVER.IMS_PER_BATCH / processes), schedule, box and mask
AP/AP50/AP75, training seconds per iteration (median of metrics.json "time") and peak memory.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from .formatting import Column, Table
from .reference import ReferenceRow, config_lineage, references_for
from .runs import RunRecord, as_float

# detectron2's 1x schedule: 90k iterations at 16 images (MODEL_ZOO.md "Common Settings").
ONE_X_IMAGES = 90000 * 16

AP_COLUMNS = [
    Column("name", "run"),
    Column("model", "model"),
    Column("backbone", "backbone"),
    Column("norm_backbone", "norm: backbone"),
    Column("norm_fpn", "FPN"),
    Column("norm_heads", "heads"),
    Column("ims_per_gpu", "im/GPU", None, True),
    Column("schedule", "sched"),
    Column("box_AP", "box AP", 1, True),
    Column("box_AP50", "box AP50", 1, True),
    Column("box_AP75", "box AP75", 1, True),
    Column("mask_AP", "mask AP", 1, True),
    Column("mask_AP50", "mask AP50", 1, True),
    Column("mask_AP75", "mask AP75", 1, True),
    Column("train_s_iter", "s/iter", 3, True),
    Column("peak_mem_mb", "peak mem (MB)", 0, True),
]
SOURCE_COLUMN = Column("source", "source")


def _norm_name(record: RunRecord, name: Optional[str]) -> str:
    """A norm key's value as shown in the table; "" is "none", SN without its BN branch is marked."""
    if not name:
        return "none"
    if name in ("SN", "SyncSN") and record.cfg("MODEL.SN.USE_BN", True) is False:
        return f"{name} (no BN)"
    return str(name)


def _with_conv(record: RunRecord, shown: str, conv_key: str) -> str:
    """``shown`` with the part's conv kind appended when it is not a plain conv: "GN+WS"."""
    conv = record.cfg(conv_key, "")
    return f"{shown}+{conv}" if conv and shown != "none" else shown


def describe_norms(record: RunRecord) -> Dict[str, str]:
    """The norm of the backbone, the FPN and the RoI heads, as the resolved config sets them (with the
    conv kind where it is not plain: GN with weight-standardised convs is "GN+WS")."""
    backbone = _norm_name(record, record.cfg("MODEL.RESNETS.NORM", ""))
    norm_3x3 = record.cfg("MODEL.RESNETS.NORM_3X3", "")
    if norm_3x3 and norm_3x3 != record.cfg("MODEL.RESNETS.NORM", ""):
        backbone = f"{backbone} + {_norm_name(record, norm_3x3)}@3x3"  # XBN block (Huang et al. 2022)
    backbone = _with_conv(record, backbone, "MODEL.RESNETS.CONV")
    heads = []
    if (record.cfg("MODEL.ROI_BOX_HEAD.NUM_CONV", 0) or 0) > 0:
        heads.append(_with_conv(record, _norm_name(record, record.cfg("MODEL.ROI_BOX_HEAD.NORM", "")),
                                "MODEL.ROI_BOX_HEAD.CONV"))
    else:
        heads.append("none")  # an fc-only box head has no norm whatever NORM says
    if record.cfg("MODEL.MASK_ON", False):
        if (record.cfg("MODEL.ROI_MASK_HEAD.NUM_CONV", 0) or 0) > 0:
            heads.append(_with_conv(record, _norm_name(record, record.cfg("MODEL.ROI_MASK_HEAD.NORM", "")),
                                    "MODEL.ROI_MASK_HEAD.CONV"))
        else:
            heads.append("none")
    return {
        "norm_backbone": backbone,
        "norm_fpn": _with_conv(record, _norm_name(record, record.cfg("MODEL.FPN.NORM", "")), "MODEL.FPN.CONV"),
        "norm_heads": heads[0] if len(set(heads)) == 1 else "/".join(heads),
    }


def describe_backbone(record: RunRecord) -> Optional[str]:
    """"R-50-FPN", "X-101-32x8d-FPN", ... from MODEL.RESNETS / MODEL.BACKBONE.NAME."""
    depth = record.cfg("MODEL.RESNETS.DEPTH")
    if depth is None:
        return None
    groups = record.cfg("MODEL.RESNETS.NUM_GROUPS", 1) or 1
    width = record.cfg("MODEL.RESNETS.WIDTH_PER_GROUP", 64)
    name = f"X-{depth}-{groups}x{width}d" if groups > 1 else f"R-{depth}"
    if "fpn" in str(record.cfg("MODEL.BACKBONE.NAME", "")).lower():
        name += "-FPN"
    return name


def describe_schedule(record: RunRecord) -> Optional[str]:
    """"1x"/"3x"/... when the run sees a multiple of half detectron2's 1x images, else "<N> it"."""
    max_iter = record.cfg("SOLVER.MAX_ITER")
    batch = record.cfg("SOLVER.IMS_PER_BATCH")
    if not isinstance(max_iter, int) or not isinstance(batch, int):
        return None
    ratio = max_iter * batch / ONE_X_IMAGES
    if ratio >= 0.5 and abs(ratio * 2 - round(ratio * 2)) < 1e-6:
        return f"{ratio:g}x"
    return f"{max_iter} it"


def images_per_gpu(record: RunRecord) -> Optional[float]:
    """SOLVER.IMS_PER_BATCH / processes; None when the run does not record its number of processes."""
    batch = record.cfg("SOLVER.IMS_PER_BATCH")
    if not isinstance(batch, int) or not record.world_size:
        return None
    per = batch / record.world_size
    return int(per) if per == int(per) else per


def run_rows(record: RunRecord) -> List[Dict[str, Any]]:
    """Table rows of one run: one per evaluated dataset, or one with AP missing if it has none."""
    base: Dict[str, Any] = {
        "name": record.name,
        "model": "Mask R-CNN" if record.cfg("MODEL.MASK_ON", False) else "Faster R-CNN",
        "backbone": describe_backbone(record),
        "ims_per_gpu": images_per_gpu(record),
        "schedule": describe_schedule(record),
        "train_s_iter": record.median_iter_time(),
        "peak_mem_mb": record.peak_memory_mb(),
        "source": "ours",
        **describe_norms(record),
    }
    if not record.results:
        return [base]
    rows = []
    for dataset, result in record.results.items():
        row = dict(base)
        if len(record.results) > 1:
            row["name"] = f"{record.name} [{dataset}]"
        for task, prefix in (("bbox", "box"), ("segm", "mask")):
            for metric in ("AP", "AP50", "AP75"):
                value = result.get(task, {}).get(metric)
                row[f"{prefix}_{metric}"] = as_float(value)
        rows.append(row)
    return rows


def reference_row(ref: ReferenceRow) -> Dict[str, Any]:
    """A table row holding one published result (memory converted from GB to MB)."""
    row = dict(ref.values)
    row["name"] = f"{ref.config} (published)"
    gb = ref.values.get("train_mem_gb")
    row["peak_mem_mb"] = gb * 1024 if isinstance(gb, float) else None
    row["source"] = ref.source
    return row


def _resolve_config_file(path: str) -> str:
    """The run's config file as logged, or its path under the repo's configs/ (bare names, as the tools)."""
    if os.path.isfile(path):
        return path
    try:
        from gn_det.config import resolve_config_path

        return resolve_config_path(path)
    except Exception:  # unknown file: the stem alone still matches
        return path


def matching_references(record: RunRecord, references: Sequence[ReferenceRow]) -> List[ReferenceRow]:
    """Published rows for the run's config: its own name first, else the nearest single-_BASE_ ancestor."""
    names = [record.config_name or record.name]
    if record.config_file:
        names += config_lineage(_resolve_config_file(record.config_file))[1:]
    for name in names:
        found = references_for(name, list(references))
        if found:
            return found
    return []


def build_ap_table(
    records: Sequence[RunRecord], references: Optional[Sequence[ReferenceRow]] = None, title: str = ""
) -> Table:
    """The AP table; with ``references``, each run is followed by the published rows of its config name."""
    rows: List[Dict[str, Any]] = []
    for record in records:
        rows.extend(run_rows(record))
        if references is not None:
            rows.extend(reference_row(ref) for ref in matching_references(record, references))
    columns = AP_COLUMNS + ([SOURCE_COLUMN] if references is not None else [])
    return Table(columns=columns, rows=rows, title=title)
