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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Environment, print_table

from normkit.backends import lookup, tuning

TABLE = Path(__file__).resolve().parents[1] / "src" / "normkit" / "backends" / "crossover.json"


def in_use(table: dict, op: str, dtype: str, layout: str) -> dict[str, int] | None:
    """The range the dispatcher reads from ``table`` for this cell (``normkit.backends.lookup``:
    a ``+act`` op falls back to the op's own); None: nothing measured."""
    if op.endswith("+act"):
        return lookup(table, op.removesuffix("+act"), dtype, layout, fused_act=True)
    return lookup(table, op, dtype, layout)


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

    def record(op, name, layout, ratios, chosen):
        if args.merge:
            chosen = intersect(in_use(previous, op, name, layout), chosen)
        table.setdefault(op, {}).setdefault(name, {})[layout] = chosen
        rows.append((op, name, layout, *(f"{r:.2f}" for r in ratios), chosen))

    tuning.measure(args.ops, args.layouts, repeats=args.repeats, report=record)
    print_table(["op", "dtype", "layout", *(f"{s:,}" for s in tuning.SIZES), "numba for"], rows)
    if args.write:
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
