"""Per-part summary of a detector's norms and parameters (tools/describe_model.py prints it)."""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Tuple

from torch import nn

from gn_det.layers import is_norm


def model_parts(model: nn.Module) -> List[Tuple[str, List[nn.Module]]]:
    """(part name, modules) for stem, res2..res5, FPN, RPN, box head, mask head (parts that exist)."""
    parts: List[Tuple[str, List[nn.Module]]] = []
    backbone = model.backbone
    bottom_up = getattr(backbone, "bottom_up", backbone)
    if hasattr(bottom_up, "stem"):
        parts.append(("stem", [bottom_up.stem]))
    for name in getattr(bottom_up, "stage_names", []):
        parts.append((name, [getattr(bottom_up, name)]))
    if bottom_up is not backbone:
        parts.append(("FPN", [m for n, m in backbone.named_children() if n != "bottom_up"]))
    parts.append(("RPN", [model.rpn]))
    heads = model.roi_heads
    parts.append(("box head", [heads.box_head, heads.box_predictor]))
    if getattr(heads, "mask_head", None) is not None:
        parts.append(("mask head", [heads.mask_head, heads.mask_predictor]))
    return parts


def _norms(modules: List[nn.Module]) -> List[nn.Module]:
    """Norm layers inside ``modules``, each once (recognised by their declared traits: gn_det.layers.is_norm).

    Per-level copies of one norm (gn_det.layers.per_level_norms: the RPN head's norm with statistics per
    FPN level) hold the same parameter tensors: they are one norm, counted at its first copy.
    """
    seen, shared, norms = set(), set(), []
    for module in modules:
        for m in module.modules():
            if id(m) in seen or not is_norm(m):
                continue
            seen.add(id(m))
            params = {id(p) for p in m.parameters()}
            if params and params <= shared:  # another level of a norm already counted
                continue
            shared |= params
            norms.append(m)
    return norms


def describe_model_parts(model: nn.Module) -> List[Dict[str, object]]:
    """One row per part: norm types (class: count), number of norms, frozen/trainable, parameter counts."""
    rows = []
    for part, modules in model_parts(model):
        params = [p for m in modules for p in m.parameters()]
        trainable = sum(p.numel() for p in params if p.requires_grad)
        total = sum(p.numel() for p in params)
        norms = _norms(modules)
        types = Counter(type(n).__name__ for n in norms)
        state = "trainable" if trainable == total else ("frozen" if trainable == 0 else "partly frozen")
        rows.append({
            "part": part,
            "norm": ", ".join(f"{name} x{count}" for name, count in sorted(types.items())) or "-",
            "num_norms": len(norms),
            "state": state if total else "-",
            "params": total,
            "trainable_params": trainable,
        })
    return rows


def format_parts_table(rows: List[Dict[str, object]]) -> str:
    """The rows as an aligned text table with a total line."""
    header = ["part", "norm", "num_norms", "state", "params", "trainable_params"]
    total = {"part": "total", "norm": "", "num_norms": sum(r["num_norms"] for r in rows), "state": "",
             "params": sum(r["params"] for r in rows), "trainable_params": sum(r["trainable_params"] for r in rows)}
    table = [header] + [[f"{r[h]:,}" if isinstance(r[h], int) else str(r[h]) for h in header] for r in rows + [total]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 2 or i == 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in table]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)
