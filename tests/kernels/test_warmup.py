"""Cold start: nothing compiles at import, `normkit warmup`, the cache location."""

from __future__ import annotations

import os
import subprocess
import sys

import numba

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


def test_cache_falls_back_to_a_user_directory_when_the_package_is_read_only(monkeypatch, tmp_path):
    in_tree = os.path.join(os.path.dirname(os.path.abspath(_jit.__file__)), "__pycache__")
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    real = _jit._writable
    monkeypatch.setattr(_jit, "_writable", lambda path: path != in_tree and real(path))
    chosen = _jit.configure_cache()
    assert chosen == str(tmp_path / "normkit" / "numba")
    assert numba.config.CACHE_DIR == chosen and os.path.isdir(chosen)


def test_numba_cache_dir_wins(monkeypatch, tmp_path):
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    assert _jit.configure_cache() == str(tmp_path)


def test_an_entry_refuses_arrays_it_was_not_compiled_for():
    """No silent re-specialisation on strided ('A') arrays: a TypeError instead."""
    import numpy as np
    import pytest

    stats = KERNELS["bn_stats"].get("ncl", np.float32)
    x = np.zeros((2, 3, 8), np.float32)[:, :, ::2]
    out = np.empty(3, np.float32)
    with pytest.raises(TypeError):
        stats(x, out, out, 1)
