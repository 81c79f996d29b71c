"""Cold start: nothing compiles at import, `normkit warmup`, the cache location."""

from __future__ import annotations

import os
import subprocess
import sys

from normkit.cli import main
from normkit.kernels import KERNELS, _jit


def test_import_normkit_loads_no_numba():
    code = "import normkit, sys; print('numba' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_importing_the_kernels_compiles_nothing():
    code = (
        "from normkit.kernels import KERNELS; "
        "print(sum(len(e._compiled) for e in KERNELS.values()))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_warmup_command_readies_every_variant(capsys):
    assert main(["warmup", "--quiet", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    expected = sum(len(entry.signatures) for entry in KERNELS.values())
    assert f"{expected} kernel variants ready" in out
    assert "kernel cache in" in out
    for entry in KERNELS.values():
        for layout in entry.signatures:
            assert (layout, _jit.np.dtype("float64")) in entry._compiled


def test_warmup_removes_cache_files_of_older_kernel_sources(tmp_path):
    from normkit.backends.warmup import stale_cache_files
    from normkit.kernels._jit import sources_digest

    old = tmp_path / "batch_norm.bn_forward__ncl_float32_0123456789ab-412.py311.nbi"
    new = tmp_path / f"batch_norm.bn_forward__ncl_float32_{sources_digest()}-412.py311.nbi"
    other = tmp_path / "somebody_else.function-10.py311.nbi"
    for path in (old, new, other):
        path.write_text("")
    assert stale_cache_files(str(tmp_path)) == [str(old)]


def test_importing_and_running_changes_no_numba_or_torch_setting():
    """Numba's cache directory and threading-layer priority, and torch's thread count, are
    the user's: normkit reads them and leaves them as they were."""
    code = (
        "import numba, torch; torch.set_num_threads(1); "
        "before = (numba.config.CACHE_DIR, list(numba.config.THREADING_LAYER_PRIORITY)); "
        "import normkit as nk; "
        "nk.nn.BatchNorm2d(3)(torch.randn(4, 3, 8, 8)); "
        "after = (numba.config.CACHE_DIR, list(numba.config.THREADING_LAYER_PRIORITY)); "
        "print(before == after, torch.get_num_threads())"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "1"]


def test_cache_dir_is_where_numba_writes_the_index():
    import numpy as np

    dispatcher = KERNELS["bn_stats"].get("ncl", np.float32)
    folder = _jit.cache_dir(dispatcher)
    assert os.path.isdir(folder)
    assert any(name.endswith(".nbi") and "bn_stats" in name for name in os.listdir(folder))


def test_an_entry_refuses_arrays_it_was_not_compiled_for():
    """No silent re-specialisation on strided ('A') arrays: a TypeError instead."""
    import numpy as np
    import pytest

    stats = KERNELS["bn_stats"].get("ncl", np.float32)
    x = np.zeros((2, 3, 8), np.float32)[:, :, ::2]
    out = np.empty(3, np.float32)
    with pytest.raises(TypeError):
        stats(x, out, out, 1)
