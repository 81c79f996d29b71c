"""Plain-text tables and the rich fallback shared by the tools' printable results."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """An aligned plain-text table; ``align`` has one ``l``/``r`` per column (default: l)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align = align or "l" * len(headers)

    def fmt(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if a == "r" else cell.ljust(w)
            for cell, w, a in zip(row, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(list(headers)), rule, *(fmt(r) for r in cells)])


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def use_rich(file=None) -> bool:
    """rich is installed and the output is a terminal (and NO_COLOR/NORMKIT_PLAIN are unset)."""
    file = file or sys.stdout
    if os.environ.get("NORMKIT_PLAIN") or not rich_available():
        return False
    return bool(getattr(file, "isatty", lambda: False)())


def rich_table(title: str | None, headers: Sequence[str], rows, align: str = ""):
    from rich.table import Table

    table = Table(title=title)
    align = align or "l" * len(headers)
    for header, a in zip(headers, align, strict=True):
        table.add_column(header, justify="right" if a == "r" else "left")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    return table


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"  # pragma: no cover
