"""The one progress display of normkit's tools and lab: rich's bar on a terminal, plain lines
when forced on elsewhere, nothing otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _tty() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool | None = None
) -> Iterator[Callable[[int], None]]:
    """A progress display for ``total`` units of work; yields ``update(completed)``.

    ``enabled=None`` shows a bar only when stderr is a terminal; ``True`` always reports
    (rich's bar on a terminal, else a plain line at every tenth of ``total``); ``False``
    never. Updates are drawn at most ten times a second.
    """
    if enabled is False or (enabled is None and not _tty()):
        yield lambda completed: None
        return
    rich = None
    if _tty():
        try:
            from rich import progress as rich
        except ImportError:  # pragma: no cover - rich is in the lab extra
            rich = None
    if rich is None:
        step = max(1, (total or 0) // 10)
        shown = [0]

        def plain(completed: int) -> None:
            if completed - shown[0] >= step or completed == total:
                of = f"/{total}" if total else ""
                print(f"{description}: {completed}{of}", file=sys.stderr, flush=True)
                shown[0] = completed

        yield plain
        return
    columns = (
        rich.TextColumn("{task.description:<34}"),
        rich.BarColumn(),
        rich.MofNCompleteColumn(),
        rich.TimeElapsedColumn(),
        rich.TimeRemainingColumn(),
    )
    with rich.Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        last = [0.0]

        def update(completed: int) -> None:
            now = time.perf_counter()
            if completed == total or now - last[0] > 0.1:
                bar.update(task, completed=completed)
                last[0] = now

        yield update
        if total is not None:
            bar.update(task, completed=total)


def track(
    iterable: Iterable[T], total: int | None, description: str, enabled: bool | None = None
) -> Iterator[T]:
    """Yield from ``iterable`` while :func:`progress_bar` shows how far it got."""
    with progress_bar(description, total, enabled) as update:
        for count, item in enumerate(iterable, 1):
            yield item
            update(count)
