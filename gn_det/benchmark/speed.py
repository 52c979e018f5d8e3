"""The speed/memory table of ``benchmarks/bench_step.py`` output, in the same formats as the AP table.

bench_step.py prints one measurement per run: a JSON object with ``--json`` (several runs appended
to one file make JSON lines) or one plain line. We read JSON (a record, a list of records,
``{"results": [...]}`` or JSON lines), bench_step.py's plain lines, or ``key=value`` lines, and show
every field reported, config first.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List

from .formatting import Column, Table

# Headers and decimals of the fields bench_step.py reports (its --json record); other fields keep
# their own name, floats get 3 decimals. "config" leads the table.
KNOWN_FIELDS = {
    "config": ("config", None),
    "norm": ("norm", None),
    "s_per_step": ("s/step", 3),
    "s_per_step_stdev": ("+- (stdev)", 3),
    "forward_s": ("forward (s)", 3),
    "backward_s": ("backward (s)", 3),
    "cpu_s_per_step": ("CPU s/step", 3),
    "peak_rss_mb": ("peak RSS (MB)", 0),
    "peak_mem_mb": ("peak mem (MB)", 0),
    "params_m": ("params (M)", 1),
    "trainable_params_m": ("trainable (M)", 1),
    "iters": ("steps", None),
    # bench_step.py --device cuda (full iterations)
    "precision": ("precision", None),
    "images": ("images", None),
    "size": ("size", None),
    "s_per_iter": ("s/iter", 4),
    "s_per_iter_stdev": ("+- (stdev)", 4),
    "gpu_busy": ("GPU busy", 2),
}
# bench_step.py's plain line: "<config>: 3.44 +- 0.05 s/step (forward 1.20 s, backward 2.24 s), peak RSS
# 1800 MB, params 44.2 M (44.0 M trainable), 5 steps, 2 threads"
_PLAIN_LINE = re.compile(
    r"^(?P<config>\S+): (?P<s_per_step>[\d.]+) \+- (?P<s_per_step_stdev>[\d.]+) s/step "
    r"\(forward (?P<forward_s>[\d.]+) s, backward (?P<backward_s>[\d.]+) s\), "
    r"peak RSS (?P<peak_rss_mb>[\d.]+) MB, params (?P<params_m>[\d.]+) M "
    r"\((?P<trainable_params_m>[\d.]+) M trainable\), (?P<iters>\d+) steps"
    r"(?:, \d+ threads, (?P<cpu_s_per_step>[\d.]+) CPU s/step)?"
)


class SpeedParseError(ValueError):
    """bench_step.py output this module cannot read."""


def _records_from_json(data: Any) -> List[Dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        data = data["results"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise SpeedParseError("bench_step.py JSON must be a record, a list of records or {'results': [...]}")
    return data


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_bench_step_output(text: str) -> List[Dict[str, Any]]:
    """The records of bench_step.py output: JSON, JSON lines, or lines of ``key=value`` fields."""
    stripped = text.strip()
    if not stripped:
        raise SpeedParseError("bench_step.py output is empty; run `python benchmarks/bench_step.py --json` first")
    try:
        return _records_from_json(json.loads(stripped))
    except json.JSONDecodeError:
        pass
    records: List[Dict[str, Any]] = []
    for line in stripped.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                records.extend(_records_from_json(json.loads(line)))
                continue
            except json.JSONDecodeError:
                pass
        plain = _PLAIN_LINE.match(line)
        if plain:
            records.append({k: _value(v) for k, v in plain.groupdict().items() if v is not None})
            continue
        fields = [tok for tok in line.replace(",", " ").split() if "=" in tok]
        if fields:
            records.append({k: _value(v) for k, _, v in (tok.partition("=") for tok in fields)})
    if not records:
        raise SpeedParseError("found no measurements in bench_step.py output (neither JSON nor key=value lines)")
    return records


def build_speed_table(records: List[Dict[str, Any]], title: str = "") -> Table:
    """A table with one column per reported field (floats to 3 decimals, memory to whole MB)."""
    keys: List[str] = ["config"] if any("config" in r for r in records) else []
    for record in records:
        keys.extend(k for k in record if k not in keys)
    columns = []
    for key in keys:
        numeric = any(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in records)
        is_float = any(isinstance(r.get(key), float) for r in records)
        header, decimals = KNOWN_FIELDS.get(key, (key, 3 if is_float else None))
        columns.append(Column(key, header, decimals, numeric))
    return Table(columns=columns, rows=[dict(r) for r in records], title=title)
