"""The tools package: lazy import, layering (nn + functional only), runnable docstrings."""

from __future__ import annotations

import ast
import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import normkit

TOOLS = Path(normkit.__file__).parent / "tools"
ALLOWED = (
    "normkit.nn",
    "normkit.functional",
    "normkit.tools",
    "normkit.cli",
    "normkit.errors",
    "normkit._progress",
    "normkit._shared",
)


def _normkit_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                found.append(node.args[0].value)
    return [m for m in found if m == "normkit" or m.startswith("normkit.")]


def test_tools_depend_only_on_nn_and_functional():
    bad = {
        f"{p.name}: {m}"
        for p in TOOLS.glob("*.py")
        for m in _normkit_imports(p)
        if not m.startswith(ALLOWED)
    }
    assert not bad, sorted(bad)


def test_lazy_attribute():
    code = (
        "import sys, normkit as nk; assert 'normkit.tools' not in sys.modules; "
        "print(nk.tools.convert.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "convert"


@pytest.mark.parametrize(
    "module",
    sorted(
        p.stem for p in TOOLS.glob("*.py") if not p.stem.startswith("_") or p.stem == "__init__"
    ),
)
def test_docstring_examples_run(module):
    name = "normkit.tools" if module == "__init__" else f"normkit.tools.{module}"
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_readme_example_runs(tmp_path, monkeypatch):
    """The first Python block of docs/tools.md is copyable: it runs as written."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "tools.md"
    text = doc.read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(doc), "exec"), {"__name__": "__docs__"})
    assert (tmp_path / "norm_stats.csv").exists() and (tmp_path / "norm_stats.png").exists()
