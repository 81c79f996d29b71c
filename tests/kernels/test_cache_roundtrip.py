"""Kernels loaded from the on-disk cache in a fresh process behave like freshly compiled ones.

(Numba cannot cache every construct; e.g. a recursive call compiles and runs in the process
that compiled it but crashes when loaded from the cache.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tests.kernels._exercise import exercise
from tests.kernels.conftest import torch_threads


def test_a_fresh_process_loading_from_the_cache_gets_the_same_results(tmp_path):
    with torch_threads(1):
        here = exercise()  # compiles what is missing, which writes the cache
    out = tmp_path / "fresh.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run(
        [sys.executable, "-m", "tests.kernels._exercise", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    fresh = np.load(out)
    assert sorted(fresh.files) == sorted(here)
    for key, value in here.items():
        np.testing.assert_array_equal(fresh[key], value, err_msg=key)
