"""``normkit tune``: measure, on this machine, where numba's kernels beat torch's, and keep
the result for the automatic backend choice.

The shipped ``crossover.json`` holds the sizes where numba won on every machine it was
measured on; on another machine the best range can differ (channels_last BatchNorm
training: numba from 1 Mi values on an AVX-512 Xeon, never on an AMD EPYC VM). ``tune``
times each op of the backend contract on both backends over a ladder of sizes (training ops
forward + backward, inference ops forward; the two interleaved, medians), takes per cell
the longest run of sizes where numba was faster, and writes those cells to a table of this
machine, which the dispatcher reads over the shipped one::

    normkit tune                           # every op, float32 and float64 (a few minutes)
    normkit tune --ops batch_norm_train --layouts channels_last

The machine's table is ``$XDG_CACHE_HOME/normkit/crossover-<machine>.json`` (``~/.cache``
without the variable), ``<machine>`` naming the CPU model, torch's thread count and torch's
version, so a change of any of them falls back to the shipped table until tuned again.
``NORMKIT_CROSSOVER`` (read once per process) names another file, or ``shipped`` to ignore
tuned tables. ``benchmarks/bench_crossover.py`` runs the same measurement to update the
shipped table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

#: Input sizes of the ladder, in elements (1 Ki .. 4 Mi).
SIZES = tuple(2**k for k in range(10, 24, 2))

#: (op, layouts, training) measured; ``"<op>+act"`` is the op followed by a ReLU (fused into
#: numba's pass; a second, in-place pass after torch's kernel).
CASES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("batch_norm_train", ("contiguous", "short_planes", "channels_last", "2d"), True),
    ("batch_norm_eval", ("contiguous", "short_planes", "channels_last", "2d"), False),
    ("batch_norm_train+act", ("contiguous", "short_planes", "channels_last", "2d"), True),
    ("instance_norm_train", ("contiguous",), True),
    ("group_norm", ("contiguous", "channels_last"), True),
    ("layer_norm", ("contiguous", "2d"), True),
    ("rms_norm", ("contiguous", "2d"), True),
    ("layer_norm_2d", ("contiguous", "channels_last"), True),
)

ENV_VAR = "NORMKIT_CROSSOVER"
Range = dict[str, "int | None"]
Table = dict[str, dict[str, dict[str, Range]]]


def shape_for(op: str, numel: int, layout: str) -> tuple[int, ...]:
    """A representative input of about ``numel`` values for ``op`` in ``layout``: 256 (BatchNorm)
    or 768 features for ``"2d"``, rows of 768 for the row norms, ``(16, C, 7, 7)`` for
    ``"short_planes"``, else ``(16, 64, side, side)``."""
    if layout == "2d":
        channels = 256 if op.startswith("batch_norm") else 768
        return (max(2, numel // channels), channels)
    if op in ("layer_norm", "rms_norm"):
        return (8, max(1, numel // (8 * 768)), 768)
    if layout == "short_planes":
        return (16, max(1, numel // (16 * 49)), 7, 7)
    side = max(2, int((numel / (16 * 64)) ** 0.5))
    return (16, 64, side, side)


def _inputs(op: str, numel: int, dtype: torch.dtype, layout: str):
    shape = shape_for(op, numel, layout)
    x = torch.randn(shape, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    c = shape[-1] if op in ("layer_norm", "rms_norm") else shape[1]
    w = torch.randn(c, dtype=dtype, requires_grad=True)
    b = torch.randn(c, dtype=dtype, requires_grad=True)
    return x.requires_grad_(True), w, b


def _call(op: str, impl: Callable, x, w, b):
    """One call of the op's implementation, with the op contract's arguments."""
    c = x.shape[1]
    act = "relu" if op.endswith("+act") else "identity"
    if op.startswith("batch_norm_train"):
        rm, rv = torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype)
        return impl(x, w, b, rm, rv, torch.tensor(0), 0.1, 1e-5, act, 0.01, "tune")
    if op.startswith("batch_norm_eval"):
        rm, rv = torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype)
        return impl(x, w, b, rm, rv, 1e-5, act, 0.01)
    if op == "instance_norm_train":
        return impl(x, w, b, None, None, 0.1, 1e-5, "tune")
    if op == "group_norm":
        return impl(x, 32, w, b, 1e-5)
    if op == "layer_norm":
        return impl(x, (x.shape[-1],), w, b, 1e-5)
    if op == "rms_norm":
        return impl(x, (x.shape[-1],), w, 1e-5)
    if op == "layer_norm_2d":
        return impl(x, w, b, 1e-6)
    raise ValueError(f"normkit tune: unknown op {op!r}")


def _step(op: str, impl: Callable, inputs, train: bool) -> Callable[[], None]:
    x, w, b = inputs
    if not train:

        def forward():
            with torch.no_grad():
                _call(op, impl, x, w, b)

        return forward
    grad = torch.empty_like(_call(op, impl, x, w, b)).normal_()  # in the output's layout

    def step():
        x.grad = w.grad = b.grad = None
        _call(op, impl, x, w, b).backward(grad)

    return step


def time_ratio(torch_step: Callable, numba_step: Callable, repeats: int, warmup: int = 3) -> float:
    """Median torch time / median numba time over ``repeats`` interleaved rounds (the order
    alternating, warm-up calls excluded)."""
    for _ in range(warmup):
        torch_step()
        numba_step()
    times: tuple[list[float], list[float]] = ([], [])
    for round_index in range(repeats):
        order = (0, 1) if round_index % 2 == 0 else (1, 0)
        for side in order:
            start = time.perf_counter()
            (torch_step, numba_step)[side]()
            times[side].append(time.perf_counter() - start)
    return statistics.median(times[0]) / statistics.median(times[1])


def winning_range(sizes: Sequence[int], ratios: Sequence[float]) -> Range:
    """The longest run of sizes where numba won (ratio > 1), as the dispatcher reads it:
    ``{"min": first, "max": last or None (no limit)}``; ``{"min": 0, "max": 0}`` when numba
    never won."""
    best, start = (0, -1, -1), None
    for i, r in enumerate([*ratios, 0.0]):
        if r > 1.0 and start is None:
            start = i
        if r <= 1.0 and start is not None:
            best = max(best, (i - start, start, i - 1))
            start = None
    _, lo, hi = best
    if lo < 0:
        return {"min": 0, "max": 0}
    return {"min": sizes[lo], "max": None if hi == len(sizes) - 1 else sizes[hi]}


def measure(
    ops: Sequence[str] | None = None,
    layouts: Sequence[str] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    repeats: int = 15,
    sizes: Sequence[int] | None = None,
    report: Callable[[str, str, str, list[float], Range], None] | None = None,
) -> Table:
    """The measured table ``{op: {dtype: {layout: range}}}`` of the cases (:data:`CASES`)
    selected by ``ops`` and ``layouts`` (None: all), over ``sizes`` (None: :data:`SIZES`);
    ``report(op, dtype, layout, ratios, range)`` is called after each cell."""
    from normkit.backends import numba_backend, torch_backend

    sizes = SIZES if sizes is None else tuple(sizes)

    table: Table = {}
    for op, case_layouts, train in CASES:
        if ops and op not in ops:
            continue
        impl = op.removesuffix("+act")
        for dtype in dtypes:
            name = str(dtype).removeprefix("torch.")
            for layout in case_layouts:
                if layouts and layout not in layouts:
                    continue
                ratios = []
                for numel in sizes:
                    inputs = _inputs(op, numel, dtype, layout)
                    ratios.append(
                        time_ratio(
                            _step(op, torch_backend.OPS[impl], inputs, train),
                            _step(op, numba_backend.OPS[impl], inputs, train),
                            repeats,
                        )
                    )
                chosen = winning_range(sizes, ratios)
                table.setdefault(op, {}).setdefault(name, {})[layout] = chosen
                if report is not None:
                    report(op, name, layout, ratios, chosen)
    return table


def machine_key() -> str:
    """``<cpu model>-<threads>t-torch<version>``, file-name safe."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    key = f"{cpu}-{torch.get_num_threads()}t-torch{torch.__version__}"
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", key).strip("_")


def tuned_table_path() -> Path | None:
    """The file of this machine's measured table (module docstring), or None when
    ``NORMKIT_CROSSOVER=shipped``."""
    chosen = os.environ.get(ENV_VAR)
    if chosen == "shipped":
        return None
    if chosen:
        return Path(chosen)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "normkit" / f"crossover-{machine_key()}.json"


def write_tuned(table: Table, path: Path) -> None:
    """Add ``table``'s cells to the table in ``path`` (created if missing)."""
    merged: Table = {}
    if path.exists():
        merged = json.loads(path.read_text())
    for op, by_dtype in table.items():
        for dtype, by_layout in by_dtype.items():
            merged.setdefault(op, {}).setdefault(dtype, {}).update(by_layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")


def _print_cell(op: str, dtype: str, layout: str, ratios: list[float], chosen: Range) -> None:
    cells = " ".join(f"{r:5.2f}" for r in ratios)
    if chosen["max"] == 0:
        verdict = "torch at every size"
    else:
        high = "" if chosen["max"] is None else f" to {chosen['max']:,}"
        verdict = f"numba from {chosen['min']:,}{high}"
    print(f"  {op:22s} {dtype:8s} {layout:14s} {cells}  {verdict}", flush=True)


def _run(args: argparse.Namespace) -> int:
    from normkit.backends import forget_decisions, reload_crossover
    from normkit.errors import CommandError

    path = tuned_table_path()
    if path is None:
        raise CommandError(f"{ENV_VAR}=shipped: no table of this machine to write")
    known = {op for op, _, _ in CASES}
    unknown = sorted(set(args.ops or ()) - known)
    if unknown:
        raise CommandError(f"unknown ops {unknown}; expected some of {sorted(known)}")
    print(f"normkit tune: torch / numba time ratio at {', '.join(f'{s:,}' for s in SIZES)} values")
    table = measure(args.ops, args.layouts, repeats=args.repeats, report=_print_cell)
    write_tuned(table, path)
    reload_crossover()
    forget_decisions()
    print(f"normkit tune: wrote {path}")
    return 0


def register(subparsers) -> None:
    """Add the ``tune`` subcommand to the ``normkit`` command line."""
    parser = subparsers.add_parser(
        "tune",
        help="measure where numba's kernels beat torch's on this machine",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--ops", nargs="+", metavar="OP", help="these ops only")
    parser.add_argument("--layouts", nargs="+", metavar="LAYOUT", help="these layouts only")
    parser.add_argument("--repeats", type=int, default=15, help="rounds per size (default 15)")
    parser.set_defaults(func=_run)
