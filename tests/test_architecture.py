"""The layering arrows: kernels never import torch, functional never imports nn, nn never
imports tools or lab (but for the Keras methods' import on call), tools never import kernels,
and `import normkit` stays light (no numba, no tools, no lab)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "normkit"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _package_imports(package: str) -> dict[Path, set[str]]:
    root = SRC / package
    files = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    return {f: _imports(f) for f in files if f.exists()}


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(SRC)} imports {name}"
        for path, names in _package_imports(package).items()
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def _scoped_imports(path: Path) -> set[tuple[str, str]]:
    """``(scope, imported module)`` for every import in ``path``; the scope is the dotted
    name of the enclosing class/function (``"_BatchNorm.from_keras"``), ``""`` at module level."""
    found = set()

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.update((".".join(scope), alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.add((".".join(scope), child.module))
            named = isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, (*scope, child.name) if named else scope)

    visit(ast.parse(path.read_text()), ())
    return found


# nn's only imports from above it: the Keras methods of BatchNorm1d/2d/3d
# (``BatchNorm2d.from_keras``, ``bn.to_keras``) import normkit.tools.keras when called, so the
# conversion is reachable from the class while ``import normkit`` loads no tools.
NN_LAZY_TOOLS_IMPORTS = {
    ("batchnorm.py", "_BatchNorm.from_keras", "normkit.tools.keras"),
    ("batchnorm.py", "_BatchNorm.to_keras", "normkit.tools.keras"),
}


def test_nn_never_imports_tools_or_lab_but_the_keras_methods():
    upward = {
        (str(path.relative_to(SRC / "nn")), scope, name)
        for path in sorted((SRC / "nn").rglob("*.py"))
        for scope, name in _scoped_imports(path)
        if any(name == f or name.startswith(f + ".") for f in ("normkit.tools", "normkit.lab"))
    }
    assert upward <= NN_LAZY_TOOLS_IMPORTS


def test_kernels_never_import_torch():
    assert _violations("kernels", ("torch", "normkit.autograd", "normkit.nn")) == []


def test_functional_never_imports_nn_tools_or_lab():
    assert _violations("functional", ("normkit.nn", "normkit.tools", "normkit.lab")) == []


def test_tools_never_import_kernels():
    assert _violations("tools", ("normkit.kernels",)) == []


def test_reference_is_numpy_only():
    assert _violations("reference.py", ("torch", "normkit")) == []


def test_import_is_light():
    code = (
        "import sys, normkit; "
        "heavy = [m for m in ('numba', 'normkit.tools', 'normkit.lab', 'matplotlib') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
