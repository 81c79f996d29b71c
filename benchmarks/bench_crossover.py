"""Where normkit's kernels beat torch's: the measurements behind the automatic backend choice.

For each op of the backend contract, dtype and memory layout, over a ladder of sizes, the
numba and the torch implementation of the op (``normkit.backends``) are timed interleaved
(medians; training ops forward + backward, inference ops forward). The numba kernels are
chosen, automatically, for the sizes where they were faster: the smallest and largest input
size (in elements) of the longest run of winning sizes, written to
``src/normkit/backends/crossover.json`` (``--write``), which the dispatcher reads. A key
missing from the file means numba at every size; ``{"min": 0, "max": 0}`` means torch at
every size. ``"<op>+act"`` is the same op followed by a ReLU (fused into numba's pass; a
second, in-place pass after torch's kernel), the cheapest activation for torch to add, so
the range holds for the others too.

    python benchmarks/bench_crossover.py            # print the table
    python benchmarks/bench_crossover.py --write    # and update crossover.json
    python benchmarks/bench_crossover.py --ops layer_norm_2d --write   # one op's entries
    python benchmarks/bench_crossover.py --layouts short_planes --write  # one layout's
    python benchmarks/bench_crossover.py --write --merge  # keep what both machines agree on

The best range differs between machines (layer_norm_2d on channels_last float32: numba from
1 Mi values on the Xeon of docs/kernels.md, never on an AMD EPYC VM). ``--merge`` writes,
for each cell measured, the intersection of the new range and the one the dispatcher used
from the file (``in_use``): numba only where it was faster on every machine measured,
torch's kernel elsewhere.

Layouts are those of ``normkit.backends.layout_of``; ``"short_planes"`` inputs are
``(16, C, 7, 7)``, the late-stage planes of the zoo's CNNs, which the kernels sweep as rows
of ``C * 49`` values (an op without that entry uses its ``"contiguous"`` one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Environment, print_table, time_interleaved

from normkit.backends import numba_backend, torch_backend

TABLE = Path(__file__).resolve().parents[1] / "src" / "normkit" / "backends" / "crossover.json"
SIZES = [2**k for k in range(10, 24, 2)]  # 1 Ki .. 8 Mi values


def _shape(op: str, numel: int, layout: str) -> tuple[int, ...]:
    """A representative input of about ``numel`` values for ``op``."""
    if layout == "2d":
        channels = 256 if op.startswith("batch_norm") else 768
        return (max(2, numel // channels), channels)
    if op in ("layer_norm", "rms_norm"):
        return (8, max(1, numel // (8 * 768)), 768)
    if layout == "short_planes":
        return (16, max(1, numel // (16 * 49)), 7, 7)
    channels = 64
    side = max(2, int((numel / (16 * channels)) ** 0.5))
    return (16, channels, side, side)


def _inputs(op, numel, dtype, layout):
    shape = _shape(op, numel, layout)
    x = torch.randn(shape, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    c = shape[-1] if op in ("layer_norm", "rms_norm") else shape[1]
    w = torch.randn(c, dtype=dtype, requires_grad=True)
    b = torch.randn(c, dtype=dtype, requires_grad=True)
    return x.requires_grad_(True), w, b


def _call(op: str, impl, x, w, b):
    """One call of the op's implementation (the op contract's arguments)."""
    c = x.shape[1]
    act = "relu" if op.endswith("+act") else "identity"
    if op.startswith("batch_norm_train"):
        rm, rv = torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype)
        return impl(x, w, b, rm, rv, torch.tensor(0), 0.1, 1e-5, act, 0.01, "bench")
    if op.startswith("batch_norm_eval"):
        rm, rv = torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype)
        return impl(x, w, b, rm, rv, 1e-5, act, 0.01)
    if op == "instance_norm_train":
        return impl(x, w, b, None, None, 0.1, 1e-5, "bench")
    if op == "group_norm":
        return impl(x, 32, w, b, 1e-5)
    if op == "layer_norm":
        return impl(x, (x.shape[-1],), w, b, 1e-5)
    if op == "rms_norm":
        return impl(x, (x.shape[-1],), w, 1e-5)
    if op == "layer_norm_2d":
        return impl(x, w, b, 1e-6)
    raise ValueError(op)


def _step(op, impl, inputs, train):
    x, w, b = inputs
    if not train:

        def forward():
            with torch.no_grad():
                _call(op, impl, x, w, b)

        return forward
    # The gradient in the layout of the output (the one the next layer's backward returns).
    grad = torch.empty_like(_call(op, impl, x, w, b)).normal_()

    def step():
        x.grad = w.grad = b.grad = None
        _call(op, impl, x, w, b).backward(grad)

    return step


CASES = [
    ("batch_norm_train", ("contiguous", "short_planes", "channels_last", "2d"), True),
    ("batch_norm_eval", ("contiguous", "short_planes", "channels_last", "2d"), False),
    ("batch_norm_train+act", ("contiguous", "short_planes", "channels_last", "2d"), True),
    ("instance_norm_train", ("contiguous",), True),
    ("group_norm", ("contiguous", "channels_last"), True),
    ("layer_norm", ("contiguous", "2d"), True),
    ("rms_norm", ("contiguous", "2d"), True),
    ("layer_norm_2d", ("contiguous", "channels_last"), True),
]


def _winning_range(sizes, ratios) -> dict[str, int]:
    """The longest run of sizes where numba won (ratio > 1), as the dispatcher reads it."""
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


def in_use(table: dict, op: str, dtype: str, layout: str) -> dict[str, int] | None:
    """The range the dispatcher reads from ``table`` for this cell, by the lookup order of
    ``normkit.backends.crossover`` (the layout's own, then contiguous for short planes;
    within each, ``op`` before the op without ``+act``); None: nothing measured."""
    layouts = (layout, "contiguous") if layout == "short_planes" else (layout,)
    names = (op, op.removesuffix("+act")) if op.endswith("+act") else (op,)
    for candidate in layouts:
        for name in names:
            found = table.get(name, {}).get(dtype, {}).get(candidate)
            if found is not None:
                return found
    return None


def intersect(old: dict[str, int] | None, new: dict[str, int]) -> dict[str, int]:
    """The sizes in both ranges (``{"min": 0, "max": 0}``: torch at every size)."""
    if old is None:
        return new
    if new["max"] == 0 or old["max"] == 0:
        return {"min": 0, "max": 0}
    low = max(old["min"], new["min"])
    highs = [h for h in (old["max"], new["max"]) if h is not None]
    high = min(highs) if highs else None
    if high is not None and high < low:
        return {"min": 0, "max": 0}
    return {"min": low, "max": high}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update crossover.json")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--ops", nargs="+", metavar="OP", help="measure these ops only (--write keeps the others)"
    )
    parser.add_argument(
        "--layouts", nargs="+", metavar="LAYOUT",
        help="measure these layouts only (--write keeps the others)",
    )  # fmt: skip
    parser.add_argument(
        "--merge", action="store_true",
        help="with --write: intersect each measured range with the file's (module docstring)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    cases = [
        (op, tuple(lay for lay in layouts if not args.layouts or lay in args.layouts), train)
        for op, layouts, train in CASES
        if not args.ops or op in args.ops
    ]
    env = Environment()
    print(f"# bench_crossover: {env.cpu}, {env.threads} threads, torch {env.torch}, "
          f"numba {env.numba}, {env.timestamp}, git {env.git_sha}")  # fmt: skip
    table: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
    previous = json.loads(TABLE.read_text()) if TABLE.exists() else {}
    if args.merge or args.ops or args.layouts:
        table = json.loads(json.dumps(previous))  # the cells measured now are replaced
        if args.ops and not args.layouts and not args.merge:
            table = {op: v for op, v in table.items() if op not in args.ops}
    rows = []
    for op, layouts, train in cases:
        for dtype in (torch.float32, torch.float64):
            for layout in layouts:
                ratios = []
                for numel in SIZES:
                    inputs = _inputs(op, numel, dtype, layout)
                    impl = op.removesuffix("+act")
                    steps = {
                        "torch": _step(op, torch_backend.OPS[impl], inputs, train),
                        "numba": _step(op, numba_backend.OPS[impl], inputs, train),
                    }
                    t = time_interleaved(steps, repeats=args.repeats, warmup=3)
                    ratios.append(t["torch"].q50 / t["numba"].q50)
                chosen = _winning_range(SIZES, ratios)
                name = str(dtype).removeprefix("torch.")
                if args.merge:
                    chosen = intersect(in_use(previous, op, name, layout), chosen)
                table.setdefault(op, {}).setdefault(name, {})[layout] = chosen
                rows.append((op, name, layout, *(f"{r:.2f}" for r in ratios), chosen))
    print_table(["op", "dtype", "layout", *(f"{s:,}" for s in SIZES), "numba for"], rows)
    if args.write:
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
