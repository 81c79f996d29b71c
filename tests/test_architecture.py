"""The layering of README.md ("Layout"): kernels <- backends <- autograd <- functional <- nn <-
tools / lab / cli, each arrow pointing down only.

Checked on every import statement of every module (module level and inside functions,
absolute and relative): a module imports only its own layer, the layers below it and the
shared leaf modules; kernels import no torch and nothing of normkit outside kernels;
normkit.reference is NumPy only; tools, lab and the command line reach the kernels only
through nn, functional and ``use_backend`` (never backends, autograd or kernels); nn's
one upward import is the Keras methods' lazy import of normkit.tools.keras; and
``import normkit`` stays light (no numba, no tools, no lab, no Dynamo: a second to import).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "normkit"

#: Each top-level unit of the package and its layer (higher may import lower).
LAYER = {
    "kernels": 0,
    "backends": 1,
    "config": 1,  # backend selection: backends read it, it lists backends (on call)
    "autograd": 2,
    "functional": 3,
    "nn": 4,
    "normkit": 4,  # the package itself: importing it loads functional and nn
    "tools": 5,
    "lab": 5,
    "cli": 5,
    "demo": 5,
    "__main__": 5,
}
#: Leaf modules any layer above the kernels may import (they import no layer themselves).
SHARED = {
    "_shared",
    "_version",
    "_progress",
    "errors",
    "reference",
    "reference_variants",
    "reference_batch_free",
}

# nn's only imports from above it: the Keras methods of BatchNorm1d/2d/3d
# (``BatchNorm2d.from_keras``, ``bn.to_keras``) import normkit.tools.keras when called, so the
# conversion is reachable from the class while ``import normkit`` loads no tools.
NN_LAZY_TOOLS_IMPORTS = {
    ("nn.batchnorm", "_BatchNorm.from_keras", "normkit.tools.keras"),
    ("nn.batchnorm", "_BatchNorm.to_keras", "normkit.tools.keras"),
}


def module_name(path: Path) -> str:
    """``src/normkit/nn/batchnorm.py`` -> ``"nn.batchnorm"``; a package's ``__init__.py`` ->
    the package (``"nn"``; the root: ``""``)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def scoped_imports(source: str, module: str, is_package: bool = False) -> set[tuple[str, str]]:
    """``(scope, absolute module)`` for every import in ``source`` (the text of
    ``normkit.<module>``): relative imports resolved, ``from pkg import name`` recorded as
    ``pkg.name`` (a submodule or an attribute: :func:`unit_of` treats both); the scope is the
    dotted name of the enclosing class/function (``"_BatchNorm.from_keras"``), ``""`` at
    module level."""
    package = ["normkit", *filter(None, module.split("."))]
    if not is_package:
        package = package[:-1]
    found = set()

    def absolute(node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        base = package[: len(package) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            where = ".".join(scope)
            if isinstance(child, ast.Import):
                found.update((where, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = absolute(child)
                found.add((where, base))
                found.update((where, f"{base}.{alias.name}") for alias in child.names)
            named = isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, (*scope, child.name) if named else scope)

    visit(ast.parse(source), ())
    return found


def unit_of(imported: str) -> str | None:
    """The top-level unit of normkit an import reaches (``"normkit"`` for the package root
    and its attributes, e.g. ``from normkit import __version__``), None outside normkit."""
    parts = imported.split(".")
    if parts[0] != "normkit":
        return None
    if len(parts) == 1:
        return "normkit"
    head = parts[1]
    if (SRC / head).is_dir() or (SRC / f"{head}.py").exists():
        return head
    return "normkit"


def all_imports() -> list[tuple[str, str, str]]:
    """``(module, scope, imported)`` over the whole package."""
    rows = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        source = path.read_text()
        for scope, imported in scoped_imports(source, module, path.name == "__init__.py"):
            rows.append((module, scope, imported))
    return rows


def _unit(module: str) -> str:
    return module.split(".")[0] if module else "normkit"


def layering_violations(rows) -> list[str]:
    bad = []
    for module, scope, imported in rows:
        source_unit, target = _unit(module), unit_of(imported)
        if target is None or target == source_unit:
            continue
        if any(
            (module, scope) == (m, sc) and (imported == lazy or imported.startswith(lazy + "."))
            for m, sc, lazy in NN_LAZY_TOOLS_IMPORTS
        ):
            continue
        if source_unit == "kernels":
            bad.append(f"{module} imports {imported} (kernels import only kernels)")
        elif source_unit in SHARED:
            if target not in SHARED:
                bad.append(f"{module} (a shared leaf) imports {imported}")
        elif target in SHARED:
            continue
        elif LAYER[target] > LAYER[source_unit]:
            bad.append(f"{module} imports {imported}: {source_unit} is below {target}")
    return bad


def test_every_unit_has_a_layer():
    units = {_unit(module_name(p)) for p in SRC.rglob("*.py")}
    assert units <= set(LAYER) | SHARED, f"place in LAYER or SHARED: {units - set(LAYER) - SHARED}"


def test_every_import_points_down():
    assert layering_violations(all_imports()) == []


def test_the_checker_sees_relative_and_function_level_imports():
    """The checks above are only as good as the import scan: an upward import written
    relatively, or inside a function, is found and refused."""
    sneaky = "def f():\n    from ..nn import BatchNorm2d\nfrom . import _validate\n"
    rows = [
        ("functional.batch_norm", scope, imported)
        for scope, imported in scoped_imports(sneaky, "functional.batch_norm")
    ]
    assert ("functional.batch_norm", "f", "normkit.nn.BatchNorm2d") in rows
    assert ("functional.batch_norm", "", "normkit.functional._validate") in rows
    assert set(layering_violations(rows)) == {
        "functional.batch_norm imports normkit.nn: functional is below nn",
        "functional.batch_norm imports normkit.nn.BatchNorm2d: functional is below nn",
    }
    assert scoped_imports("from . import x", "nn", is_package=True) >= {("", "normkit.nn.x")}
    from_kernels = [("kernels.row_norm", "", "normkit._shared")]
    assert len(layering_violations(from_kernels)) == 1


def test_kernels_never_import_torch():
    bad = [
        (module, imported)
        for module, _, imported in all_imports()
        if _unit(module) == "kernels" and imported.split(".")[0] == "torch"
    ]
    assert bad == []


def test_reference_is_numpy_only():
    allowed = {"numpy", "math", "__future__", "collections", "typing"}
    bad = [
        (module, imported)
        for module, _, imported in all_imports()
        if module.startswith("reference")
        and imported.split(".")[0] not in allowed
        and unit_of(imported) not in SHARED
    ]
    assert bad == []


def test_tools_lab_and_cli_never_reach_below_functional():
    """They use the layers (nn, functional) and ``use_backend``: no backend op, autograd
    Function or kernel of their own choosing."""
    below = {"backends", "autograd", "kernels"}
    bad = [
        f"{module} imports {imported}"
        for module, _, imported in all_imports()
        if LAYER.get(_unit(module), -1) == 5 and unit_of(imported) in below
    ]
    assert bad == []


def _printed_by_a_fresh_process(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_is_light():
    code = (
        "import sys, normkit; "
        "heavy = [m for m in ('numba', 'normkit.tools', 'normkit.lab', 'matplotlib', "
        "'torch._dynamo') if m in sys.modules]; "
        "print(heavy)"
    )
    assert _printed_by_a_fresh_process(code) == "[]"


def test_numba_is_imported_when_an_input_first_needs_it():
    """Calls on sizes torch's kernel serves (the automatic choice) do not import Numba (about
    half a second); the first input in numba's range does, and then runs numba's kernel."""
    code = (
        "import sys, torch, normkit as nk; from normkit import backends; "
        "bn = nk.nn.BatchNorm2d(16); bn(torch.randn(8, 16, 4, 4)); bn.eval()(torch.randn(8, 16, 4, 4)); "
        "nk.nn.LayerNorm(8)(torch.randn(4, 8)); "
        "before = 'numba' in sys.modules; big = torch.randn(16, 16, 64, 64); "
        "low, high = backends.crossover('batch_norm_train', torch.float32, 'contiguous'); "
        "assert low <= big.numel() and (high is None or big.numel() <= high), (low, high); "
        "impl = backends.select('batch_norm_train', big); bn.train()(big); "
        "print(before, backends.backend_name(impl), 'numba' in sys.modules)"
    )
    assert _printed_by_a_fresh_process(code) == "False numba True"
