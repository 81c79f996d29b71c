"""Run a scenario of :mod:`tests.distributed._worker` in ``world`` gloo processes on localhost.

Bounded time: every rank must report within ``timeout`` seconds, else the test fails and
the processes are killed; a rank that dies without reporting fails the test at once.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import time
from pathlib import Path
from typing import Any

from tests.distributed import _worker


class LaunchError(AssertionError):
    """A rank failed, died or did not report in time."""


def launch(
    scenario: str, world: int, config: dict[str, Any], tmp_path: Path, timeout: float = 120.0
) -> list[Any]:
    """Results of ``scenario`` per rank (``[rank 0, rank 1, ...]``); raises on any failure
    unless the scenario's outcome is an expected error (then that rank's result is the
    ``("error", message)`` tuple)."""
    ctx = mp.get_context("spawn")
    results_queue = ctx.Queue()
    store = tmp_path / f"store-{scenario}-{time.monotonic_ns()}"
    procs = [
        ctx.Process(
            target=_worker.main,
            args=(rank, world, str(store), scenario, config, results_queue),
            daemon=True,
        )
        for rank in range(world)
    ]
    for proc in procs:
        proc.start()
    results: dict[int, Any] = {}
    may_die = set(config.get("may_die", ()))  # ranks whose scenario kills them on purpose
    deadline = time.monotonic() + timeout
    try:
        while len(results) + len(may_die - set(results)) < world:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(world)) - set(results))
                raise LaunchError(f"{scenario}: ranks {missing} did not report within {timeout}s")
            try:
                rank, status, payload = results_queue.get(timeout=min(remaining, 1.0))
            except queue_module.Empty:
                dead = [
                    r for r, p in enumerate(procs)
                    if r not in results and r not in may_die and p.exitcode is not None
                ]  # fmt: skip
                if dead:
                    time.sleep(0.5)  # a report may still be in flight
                    if results_queue.empty():
                        codes = {r: procs[r].exitcode for r in dead}
                        raise LaunchError(
                            f"{scenario}: ranks died without reporting: {codes}"
                        ) from None
                continue
            if status == "error" and not config.get("expect_error"):
                raise LaunchError(f"{scenario}: rank {rank} failed:\n{payload}")
            results[rank] = payload if status == "ok" else ("error", payload)
    finally:
        for proc in procs:
            proc.join(timeout=max(0.0, min(10.0, deadline - time.monotonic())))
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        results_queue.close()
    return [results.get(r) for r in range(world)]
