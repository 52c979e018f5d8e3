"""The speed/memory table of ``benchmarks/bench_step.py`` output, in the same formats as the AP table.

bench_step.py (the modeling engineer's) prints its measurements; we read either its JSON (a list of
records, ``{"results": [...]}``, or one JSON object per line) or its plain lines of ``key=value``
fields, and show every field it reports, in the order it reports them.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

from .formatting import Column, Table

# Headers for the fields bench_step.py is known to report; other fields keep their own name.
KNOWN_HEADERS = {
    "norm": "norm",
    "config": "config",
    "ims_per_gpu": "im/GPU",
    "batch": "im/GPU",
    "device": "device",
    "s_per_iter": "s/iter",
    "time": "s/iter",
    "median_s_per_iter": "s/iter (median)",
    "peak_mem_mb": "peak mem (MB)",
    "peak_memory_mb": "peak mem (MB)",
}


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
        fields = [tok for tok in line.replace(",", " ").split() if "=" in tok]
        if fields:
            records.append({k: _value(v) for k, _, v in (tok.partition("=") for tok in fields)})
    if not records:
        raise SpeedParseError("found no measurements in bench_step.py output (neither JSON nor key=value lines)")
    return records


def build_speed_table(records: List[Dict[str, Any]], title: str = "") -> Table:
    """A table with one column per reported field (floats to 3 decimals, memory to whole MB)."""
    keys: List[str] = []
    for record in records:
        keys.extend(k for k in record if k not in keys)
    columns = []
    for key in keys:
        numeric = any(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in records)
        is_float = any(isinstance(r.get(key), float) for r in records)
        decimals = (0 if "mem" in key else 3) if is_float else None
        columns.append(Column(key, KNOWN_HEADERS.get(key, key), decimals, numeric))
    return Table(columns=columns, rows=[dict(r) for r in records], title=title)
