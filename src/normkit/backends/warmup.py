"""``normkit warmup``: compile every CPU kernel ahead of time into Numba's on-disk cache.

Kernels otherwise compile lazily, once per (op, layout, dtype), on the first call that needs
them, and come from the cache in every later process. Running this once after installing
(or in a Docker build step) moves all of that out of the first training step::

    normkit warmup                 # every kernel, float32 and float64
    normkit warmup --dtype float32
    python -c "import normkit.backends.warmup as w; w.warmup()"

Numba chooses where the cache lives: ``NUMBA_CACHE_DIR`` when set, else next to the
installed sources when that directory is writable, else a per-user cache directory. Set the
same variable in the process that trains.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from dataclasses import dataclass


@dataclass
class Compiled:
    """One warmed kernel variant and how it got ready."""

    kernel: str
    layout: str
    dtype: str
    seconds: float
    from_cache: bool


def warmup(dtypes: tuple[str, ...] = ("float32", "float64"), verbose: bool = False):
    """Compile (or load from the cache) every kernel variant; returns a list of Compiled.

    Args:
        dtypes: element types to prepare (``"float32"``, ``"float64"``).
        verbose: print one line per variant as it becomes ready.
    """
    import numpy as np

    from normkit.kernels import KERNELS

    done: list[Compiled] = []
    for name, entry in KERNELS.items():
        for layout, dtype in entry.variants():
            if dtype.name not in dtypes:
                continue
            start = time.perf_counter()
            dispatcher = entry.get(layout, np.dtype(dtype))
            seconds = time.perf_counter() - start
            hits = sum(dispatcher.stats.cache_hits.values())
            item = Compiled(name, layout, dtype.name, seconds, hits > 0)
            done.append(item)
            if verbose:
                source = "cache" if item.from_cache else "compiled"
                print(f"  {name:20s} {layout:5s} {dtype.name:8s} {seconds:7.2f} s  {source}")
    return done


_STALE = re.compile(
    r"^(batch_free|batch_norm|batch_norm_add|group_norm|masked|row_norm|running)\.\w+__(ncl|nlc|rows|vec)_float(32|64)_(\w+)-"
)


def stale_cache_files(cache_dir: str) -> list[str]:
    """Cache files of normkit kernels compiled from other versions of the sources.

    Every variant's cache name ends with a digest of the kernel sources, so files whose
    digest is not the current one can never be loaded again.
    """
    from normkit.kernels._jit import sources_digest

    current = sources_digest()
    stale = []
    for folder, _, files in os.walk(cache_dir):
        for name in files:
            match = _STALE.match(name)
            if match and match.group(4) != current:
                stale.append(os.path.join(folder, name))
    return stale


def _run(args: argparse.Namespace) -> int:
    from normkit.kernels import KERNELS, cache_dir

    dtypes = ("float32", "float64") if args.dtype == "all" else (args.dtype,)
    start = time.perf_counter()
    done = warmup(dtypes, verbose=not args.quiet)
    total = time.perf_counter() - start
    compiled = sum(not item.from_cache for item in done)
    some = next(iter(KERNELS.values()))
    folder = cache_dir(some.get(*some.variants()[0])) if done else ""
    print(f"normkit warmup: kernel cache in {folder or 'the Numba default location'}")
    if folder:
        stale = stale_cache_files(folder)
        for path in stale:
            os.remove(path)
        if stale:
            print(f"removed {len(stale)} cache files of older kernel sources")
    print(
        f"{len(done)} kernel variants ready in {total:.1f} s "
        f"({compiled} compiled, {len(done) - compiled} from the cache)"
    )
    return 0


def register(subparsers) -> None:
    """Add the ``warmup`` subcommand to the ``normkit`` command line."""
    parser = subparsers.add_parser(
        "warmup",
        help="compile the CPU kernels ahead of time (cached on disk)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--dtype", choices=["float32", "float64", "all"], default="all", help="default: all"
    )
    parser.add_argument("--quiet", action="store_true", help="only the summary line")
    parser.set_defaults(func=_run)
