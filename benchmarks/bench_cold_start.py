"""Cold start of the compiled kernels: import time, first call, full compilation.

    python benchmarks/bench_cold_start.py [--runs 3] [--compile]

Each measurement runs in a fresh Python process. With a warm kernel cache it reports the
time to ``import torch``, then ``import normkit``, then the first training-mode
``BatchNorm2d`` call on a size torch's kernel serves (Numba is not imported for it), the
first call of a second layer type, and the first call on a size that needs a numba kernel
(it imports Numba and loads the kernel from the cache). ``--compile`` also times
``normkit warmup`` with an empty
cache (``NUMBA_CACHE_DIR`` pointed at a temporary directory): the one-off compilation of
every kernel variant that CI and a fresh install pay once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROBE = r"""
import json, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import normkit as nk
t2 = time.perf_counter()
bn, ln = nk.nn.BatchNorm2d(16), nk.nn.LayerNorm(64)
x, rows = torch.randn(8, 16, 32, 32), torch.randn(128, 64)
big = torch.randn(16, 16, 64, 64)  # above the crossover: numba's kernel
t3 = time.perf_counter()
bn(x)
t4 = time.perf_counter()
ln(rows)
t5 = time.perf_counter()
bn(x)
t6 = time.perf_counter()
bn(big)
t7 = time.perf_counter()
bn(big)
t8 = time.perf_counter()
print(json.dumps({"import torch": t1 - t0, "import normkit": t2 - t1,
                  "first BatchNorm2d call": t4 - t3, "first LayerNorm call": t5 - t4,
                  "second BatchNorm2d call": t6 - t5,
                  "first call needing a numba kernel": t7 - t6,
                  "second call of that size": t8 - t7}))
"""


def probe(env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time a cold compile")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    subprocess.run(
        [sys.executable, "-m", "normkit", "warmup", "--quiet"], env=env, check=True,
        capture_output=True,
    )  # fmt: skip
    runs = [probe(env) for _ in range(args.runs)]
    print(f"# fresh processes, warm kernel cache, median of {args.runs}")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"{key:34s} {statistics.median(values):7.3f} s   (min {min(values):.3f})")
    if args.compile:
        with tempfile.TemporaryDirectory() as cache:
            cold = dict(env, NUMBA_CACHE_DIR=cache)
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "normkit", "warmup", "--quiet"], env=cold, check=True
            )
            print(f"cold compile of every kernel variant: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
