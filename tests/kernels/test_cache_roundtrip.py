"""Kernels loaded from the on-disk cache in a fresh process behave like freshly compiled ones.

(Numba cannot cache every construct; e.g. a recursive call compiles and runs in the process
that compiled it but crashes when loaded from the cache.)

Processes that load the kernels from the cache compute bit-identical results. The process
that compiled them may differ in the last bits of float32 sums: there, a driver's calls to a
helper run the helper's own standalone compilation (Numba links helpers as weak symbols,
and the first definition loaded wins), while a process loading the driver from the cache
runs the copy compiled inside the driver, whose reassociated block sums can be ordered
differently (docs/kernels.md, "First use, the kernel cache").
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tests.kernels._exercise import exercise
from tests.kernels.conftest import torch_threads


def _exercise_in_a_fresh_process(out) -> dict[str, np.ndarray]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run(
        [sys.executable, "-m", "tests.kernels._exercise", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    with np.load(out) as saved:
        return dict(saved)


def test_a_fresh_process_loading_from_the_cache_gets_the_same_results(tmp_path):
    with torch_threads(1):
        here = exercise()  # compiles what is missing, which writes the cache
    first = _exercise_in_a_fresh_process(tmp_path / "first.npz")
    second = _exercise_in_a_fresh_process(tmp_path / "second.npz")
    assert sorted(first) == sorted(here) == sorted(second)
    for key, value in here.items():
        np.testing.assert_array_equal(second[key], first[key], err_msg=key)
        # Within a few rounding steps of the largest value (see the module docstring).
        scale = float(np.max(np.abs(value), initial=0.0))
        tolerance = 8 * np.finfo(value.dtype).eps * scale
        np.testing.assert_allclose(first[key], value, rtol=0, atol=tolerance, err_msg=key)
