"""A progress bar over an iterable: rich's when installed and writing to a terminal,
otherwise silent (or a plain line every few items when forced on)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(
    iterable: Iterable[T], total: int | None, description: str, enabled: bool | None
) -> Iterator[T]:
    """Yield from ``iterable`` with a progress display.

    ``enabled=None`` shows a bar only when stderr is a terminal; ``True`` always reports
    (rich bar on a terminal, else one plain line per 10% or per item when the total is
    unknown); ``False`` never.
    """
    tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if enabled is False or (enabled is None and not tty):
        yield from iterable
        return
    if tty:
        try:
            from rich.progress import track
        except ImportError:
            pass
        else:
            yield from track(iterable, total=total, description=description, transient=True)
            return
    step = max(1, total // 10) if total else 1
    count = 0
    for item in iterable:
        yield item
        count += 1
        if count % step == 0 or count == total:
            of = f"/{total}" if total else ""
            print(f"{description}: {count}{of}", file=sys.stderr, flush=True)
