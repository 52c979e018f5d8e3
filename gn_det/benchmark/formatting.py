"""One small table type and its three renderings: aligned text, Markdown and CSV.

A missing value (None) renders as "-" in text and Markdown and as an empty field in CSV, so a
missing number can never be mistaken for a measured zero.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

MISSING = "-"
FORMATS = ("text", "markdown", "csv")


@dataclass(frozen=True)
class Column:
    """A table column: the row key it reads, its header, and how many decimals a float gets."""

    key: str
    header: str
    decimals: Optional[int] = None  # None: show str(value)
    align_right: bool = False


@dataclass
class Table:
    """Rows (dicts keyed by column key) under a list of columns; ``title`` heads the text rendering."""

    columns: Sequence[Column]
    rows: List[Dict[str, Any]] = field(default_factory=list)
    title: str = ""

    def cell(self, row: Dict[str, Any], column: Column) -> Optional[str]:
        """The rendered cell, or None when the row has no value for the column."""
        value = row.get(column.key)
        if value is None or value == "":
            return None
        if column.decimals is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{value:.{column.decimals}f}"
        return str(value)


def to_text(table: Table) -> str:
    """The table as aligned plain text (headers, a rule, one line per row)."""
    headers = [c.header for c in table.columns]
    body = [[table.cell(r, c) or MISSING for c in table.columns] for r in table.rows]
    widths = [max([len(h)] + [len(line[i]) for line in body]) for i, h in enumerate(headers)]

    def line(cells: List[str]) -> str:
        parts = [
            cell.rjust(w) if col.align_right else cell.ljust(w)
            for cell, w, col in zip(cells, widths, table.columns)
        ]
        return "  ".join(parts).rstrip()

    out = [table.title] if table.title else []
    out += [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(cells) for cells in body]
    return "\n".join(out) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    """The table as a GitHub-flavoured Markdown table (numbers right-aligned)."""
    out = ["| " + " | ".join(_md_escape(c.header) for c in table.columns) + " |"]
    out.append("|" + "|".join("---:" if c.align_right else "---" for c in table.columns) + "|")
    for row in table.rows:
        cells = [_md_escape(table.cell(row, c) or MISSING) for c in table.columns]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> str:
    """The table as CSV with the headers as the first record; missing values are empty fields."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.header for c in table.columns])
    for row in table.rows:
        writer.writerow([table.cell(row, c) or "" for c in table.columns])
    return buffer.getvalue()


def render(table: Table, fmt: str) -> str:
    """Render ``table`` in ``fmt`` ("text", "markdown" or "csv")."""
    if fmt == "text":
        return to_text(table)
    if fmt == "markdown":
        return to_markdown(table)
    if fmt == "csv":
        return to_csv(table)
    raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
