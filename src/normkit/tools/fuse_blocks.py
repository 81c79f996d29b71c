"""Fusion inside a block's forward, found with torch.fx: ``act(bn(x) + residual)`` at the end
of a ResNet block, and ``act(bn(x))`` where the module-level fusion (:mod:`normkit.tools.fuse`)
cannot replace modules: an activation module called at several places (torchvision's
blocks call one ``self.relu`` after ``bn1``, ``bn2`` and the residual add) or an activation
applied as a function (``F.relu(self.bn(x))``).

How a block is rewritten. Its own forward is traced with every submodule as a leaf; each
fusable call site is replaced by one call of :func:`normkit.nn.fused_calls.norm_add_act` /
:func:`~normkit.nn.fused_calls.norm_act` (which take the BN and activation modules as
arguments and compute the fused op, or the original steps when a hook or a later
replacement of the BN asks for them); the instance's class becomes a subclass of its own
class whose ``forward`` is the rewritten graph's code. Nothing else changes: the same
modules, parameters, buffers and state-dict keys, ``isinstance``, the class's name and
repr. :func:`unfuse_blocks` (``convert(model, "torch")``) sets the class back. Pickling
(``torch.save(model)``, ``copy.deepcopy``) stores the original class, the instance's state
and the fused sites; loading rebuilds the original block and fuses it again (the same
sites, or a :class:`FusionWarning` and the unfused block if they are not found).

A site is fused only where the graph proves it exact: the BN (one of normkit's plain
BatchNorm1d/2d/3d, called once in the block, with one tensor argument) has one user; for a
residual site that user is an add (``+``, ``+=``, ``torch.add``, ``.add``, ``.add_`` on the
BN's output) of another tensor, and an activation is fused when it is the add's only user
and a ReLU (module, ``torch.relu``, ``F.relu``, ``.relu()``; else the site fuses BN + add
alone); for a BN -> activation site the BN's one user is a torch activation module
(ReLU, ReLU6, LeakyReLU, SiLU, exact GELU, Hardswish) or function (``relu``, ``relu6``,
``silu``, ``gelu``, ``hardswish``). The fused call runs where the add was, so the BN's
input must have no other user when the residual is computed after the BN.

Blocks left as they are: not traceable by torch.fx, a forward whose graph depends on
``self.training``, a forward that writes attributes while traced, ``*args``/``**kwargs``
parameters, and forwards with augmented assignments (``a += b``, which FX records as
``a + b``) whose left side is not a fresh module output used only there: the rewritten
forward is the traced graph, so everything else in it keeps FX's semantics (Python-level
branches on attributes are taken once, at conversion).
"""

from __future__ import annotations

import dis
import inspect
import itertools
import linecache
import operator
import types
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx import Node

from normkit.functional.batch_norm_add import RESIDUAL_ACTIVATIONS
from normkit.nn import fused_calls
from normkit.nn._activations import ACTIVATION_CLASSES, fused_activation
from normkit.nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from normkit.tools.fuse import FusedPair

FUSED_FROM = "_normkit_fused_from"  # on a fused class: the class it was made from
FUSED_SITES = "_normkit_fused_sites"  # on a fused class: its BlockSite tuple
_BATCH_NORMS = (BatchNorm1d, BatchNorm2d, BatchNorm3d)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ACTIVATION_FUNCTIONS = {
    torch.relu: "relu",
    torch.relu_: "relu",
    F.relu: "relu",
    F.relu6: "relu6",
    F.silu: "silu",
    F.gelu: "gelu",
    F.hardswish: "hardswish",
}
_ACTIVATION_KWARGS = {"inplace": (True, False), "approximate": ("none",)}
_ARITHMETIC = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
    operator.mod, operator.pow, operator.matmul, operator.and_, operator.or_, operator.xor,
    operator.lshift, operator.rshift,
}  # fmt: skip


class FusionWarning(UserWarning):
    """A block with a BatchNorm -> add/activation site could not be fused (``fuse_model``), or
    a fused block could not be fused again after loading (it computes unfused)."""


@dataclass(frozen=True)
class BlockSite:
    """One fused call site of a block: the BN (its name in the block), the activation (a
    submodule's name, a function's name, or ``""``), the fused activation, and whether a
    residual is added between the two."""

    norm: str
    activation: str
    act: str
    residual: bool


@dataclass
class _Match:
    site: BlockSite
    norm: Node
    add: Node | None
    activation: Node | None
    residual: Node | None
    anchor: Node  # the fused call is inserted before this node


# --------------------------------------------------------------------------------- tracing


class _BlockTracer(torch.fx.Tracer):
    """Traces one block's own forward: every submodule it calls is a leaf."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _snapshot(block: nn.Module) -> dict:
    return {k: (v, dict(v) if isinstance(v, dict) else None) for k, v in vars(block).items()}


def _unchanged(block: nn.Module, snapshot: dict) -> bool:
    now = vars(block)
    if now.keys() != snapshot.keys():
        return False
    for key, (value, items) in snapshot.items():
        if now[key] is not value:
            return False
        if items is not None and (
            value.keys() != items.keys() or any(value[k] is not v for k, v in items.items())
        ):
            return False
    return True


def _restore(block: nn.Module, snapshot: dict) -> None:
    vars(block).clear()
    for key, (value, items) in snapshot.items():
        if items is not None:
            value.clear()
            value.update(items)
        vars(block)[key] = value


def _simple_signature(block: nn.Module) -> bool:
    """Only plain parameters (FX's placeholders), no ``*args``/``**kwargs``."""
    try:
        params = inspect.signature(block.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)


def _trace(block: nn.Module) -> tuple[torch.fx.Graph | None, str]:
    """The block's forward as a graph, or None and why it cannot be rewritten faithfully
    (see the module docstring); the block is left exactly as it was."""
    if not _simple_signature(block):
        return None, "forward takes *args or **kwargs"
    snapshot = _snapshot(block)
    training = block.training
    codes = []
    graph, why = None, ""
    try:
        for mode in (True, False):
            block.training = mode
            graph = _BlockTracer().trace(block)
            codes.append(graph.python_code(root_module="self").src)
    except Exception as error:  # anything FX cannot trace: leave the block alone
        graph, why = None, f"torch.fx cannot trace its forward ({type(error).__name__}: {error})"
    finally:
        block.training = training
    if not _unchanged(block, snapshot):
        _restore(block, snapshot)
        return None, "its forward sets attributes of the block"
    if graph is not None and codes[0] != codes[1]:
        return None, "its forward branches on self.training"
    return graph, why


def _augmented_assignments(code: types.CodeType) -> bool:
    """``code`` (or a function defined in it) has an augmented assignment (``a += b``)."""
    for ins in dis.get_instructions(code):
        if ins.opname.startswith("INPLACE_") or (
            ins.opname == "BINARY_OP" and ins.argrepr.endswith("=")
        ):
            return True
    return any(_augmented_assignments(c) for c in code.co_consts if isinstance(c, types.CodeType))


def _fresh(node: Node, modules: dict[str, nn.Module]) -> bool:
    """``node`` is the output of a layer that always returns a fresh tensor."""
    if node.op != "call_module":
        return False
    module = modules[node.target]
    return type(module).__module__.startswith("normkit.nn.") or isinstance(
        module, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)
    )


def _inplace_safe(graph: torch.fx.Graph, block: nn.Module, modules: dict) -> bool:
    """FX records ``a += b`` as ``a + b``: the rewritten forward does not mutate ``a``. That is
    invisible when ``a`` is a fresh module output used only there; with augmented assignments
    in the forward, every arithmetic node must have such a left operand."""
    forward = getattr(type(block).forward, "__code__", None)
    if forward is None or not _augmented_assignments(forward):
        return True
    for node in graph.nodes:
        if node.op == "call_function" and node.target in _ARITHMETIC:
            lhs = node.args[0] if node.args else None
            if isinstance(lhs, Node) and not (len(lhs.users) == 1 and _fresh(lhs, modules)):
                return False
    return True


# ---------------------------------------------------------------------------------- sites


def _plain_norm(node: Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    if node.op != "call_module" or node.kwargs or len(node.args) != 1:
        return None
    module = modules.get(node.target)
    if type(module) not in _BATCH_NORMS or not isinstance(node.args[0], Node):
        return None
    return module


def _residual_of(add: Node, norm: Node) -> Node | None:
    """The other operand when ``add`` adds a tensor to ``norm``'s output, else None."""
    if add.kwargs or len(add.args) != 2:
        return None
    if add.op == "call_function" and add.target in _ADD_FUNCTIONS:
        a, b = add.args
    elif add.op == "call_method" and add.target in ("add", "add_"):
        a, b = add.args
        if add.target == "add_" and a is not norm:  # residual.add_(bn(x)) mutates the residual
            return None
    else:
        return None
    other = b if a is norm else a if b is norm else None
    return other if isinstance(other, Node) and other is not norm else None


def _activation(node: Node, source: Node, modules: dict) -> tuple[str, str, bool] | None:
    """``(description, act, is_module)`` when ``node`` applies a fusable activation to
    ``source`` alone, else None."""
    if node.args != (source,):
        return None
    if node.op == "call_module" and not node.kwargs:
        module = modules[node.target]
        found = fused_activation(module)
        if found and found[0] != "identity" and type(module) is ACTIVATION_CLASSES[found[0]]:
            return str(node.target), found[0], True
        return None
    if node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS:
        if all(v in _ACTIVATION_KWARGS.get(k, ()) for k, v in node.kwargs.items()):
            name = f"{node.target.__module__}.{node.target.__name__}"
            return name, _ACTIVATION_FUNCTIONS[node.target], False
        return None
    if node.op == "call_method" and node.target in ("relu", "relu_") and not node.kwargs:
        return f"Tensor.{node.target}", "relu", False
    return None


def _users(node: Node) -> str:
    return ", ".join("return" if u.op == "output" else u.name for u in node.users)


def _find(graph: torch.fx.Graph, block: nn.Module, rejected: dict[str, str]) -> list[_Match]:
    """The fusable sites; ``rejected`` gets why a BN followed by an add or an activation
    is not one."""
    modules = dict(block.named_modules())
    occurrences = Counter(id(m) for _, m in block.named_modules(remove_duplicate=False))
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    order = {n: i for i, n in enumerate(graph.nodes)}
    matches = []
    for node in graph.nodes:
        norm = _plain_norm(node, modules)
        if norm is None:
            continue
        name = str(node.target)
        if calls[node.target] != 1 or occurrences[id(norm)] != 1:
            rejected[name] = "called or registered at several places"
            continue
        if len(node.users) != 1:
            if any(_residual_of(u, node) or _activation(u, node, modules) for u in node.users):
                rejected[name] = f"its output has {len(node.users)} users ({_users(node)})"
            continue
        (user,) = node.users
        residual = _residual_of(user, node)
        if residual is not None:
            anchor = node if order[residual] < order[node] else user
            if anchor is user and len(node.args[0].users) != 1:
                # the BN would read its input after nodes that could change it
                rejected[name] = "its input is used again before the residual is computed"
                continue
            found = (
                _activation(next(iter(user.users)), user, modules) if len(user.users) == 1 else None
            )
            if found is not None and found[1] not in RESIDUAL_ACTIVATIONS:
                found = None
            act_node = next(iter(user.users)) if found is not None else None
            description, act, _ = found if found is not None else ("", "identity", False)
            site = BlockSite(str(node.target), description, act, True)
            matches.append(_Match(site, node, user, act_node, residual, anchor))
            continue
        found = _activation(user, node, modules)
        if found is not None:
            site = BlockSite(str(node.target), found[0], found[1], False)
            matches.append(_Match(site, node, None, user, None, node))
    return matches


def _rewrite(graph: torch.fx.Graph, matches: list[_Match], block: nn.Module) -> None:
    modules = dict(block.named_modules())
    for m in matches:
        with graph.inserting_before(m.anchor):
            norm = graph.get_attr(m.site.norm)
            act = graph.get_attr(m.site.activation) if m.site.activation in modules else None
            if m.add is None:
                call = graph.call_function(
                    fused_calls.norm_act, (norm, m.norm.args[0], act, m.site.act)
                )
            else:
                call = graph.call_function(
                    fused_calls.norm_add_act, (norm, m.norm.args[0], m.residual, act, m.site.act)
                )
        call.meta["is_wrapped"] = True  # the generated code registers it with torch.fx.wrap
        last = m.activation if m.activation is not None else m.add
        last.replace_all_uses_with(call)
        for node in (m.activation, m.add, m.norm):
            if node is not None:
                graph.erase_node(node)
    graph.lint()


# ---------------------------------------------------------------------- the fused classes

_CLASSES: dict[tuple, type] = {}
_SOURCE_IDS = itertools.count()


def _compile_forward(code: torch.fx.graph.PythonCode) -> Callable:
    """The forward function of FX's generated source (its ``wrap(...)`` lines run here, so
    tracing the fused block records each fused call as one node)."""
    filename = f"<normkit fused forward {next(_SOURCE_IDS)}>"
    linecache.cache[filename] = (len(code.src), None, code.src.splitlines(True), filename)
    namespace = dict(code.globals)
    exec(compile(code.src, filename, "exec", dont_inherit=True), namespace)
    return namespace["forward"]


def _fused_class(cls: type, code: torch.fx.graph.PythonCode, sites: tuple) -> type:
    key = (cls, code.src, tuple(sorted((k, id(v)) for k, v in code.globals.items())), sites)
    fused = _CLASSES.get(key)
    if fused is None:
        namespace = {
            "forward": _compile_forward(code),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "__reduce_ex__": _reduce_fused,
            FUSED_FROM: cls,
            FUSED_SITES: sites,
        }
        fused = _CLASSES[key] = type(cls)(cls.__name__, (cls,), namespace)
    return fused


def _reduce_fused(self: nn.Module, protocol: int):
    """Pickle (and deepcopy) a fused block as its original class, its state and its sites."""
    cls = type(self)
    return (_rebuild, (cls.__dict__[FUSED_FROM], cls.__dict__[FUSED_SITES]), self.__getstate__())


_RESTORING: dict[tuple, type] = {}
_RESTORE = "_normkit_restore"


def _rebuild(cls: type, sites: tuple) -> nn.Module:
    """An empty instance whose ``__setstate__`` restores the state, then fuses ``sites``."""
    restoring = _RESTORING.get((cls, sites))
    if restoring is None:
        namespace = {
            "__setstate__": _setstate_and_fuse,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            _RESTORE: (cls, sites),
        }
        restoring = _RESTORING[(cls, sites)] = type(cls)(cls.__name__, (cls,), namespace)
    return cls.__new__(restoring)


def _setstate_and_fuse(self: nn.Module, state: dict) -> None:
    cls, sites = type(self).__dict__[_RESTORE]
    self.__class__ = cls
    setstate = getattr(cls, "__setstate__", None)
    if setstate is not None:
        setstate(self, state)
    else:  # pragma: no cover - every nn.Module has torch's __setstate__
        vars(self).update(state)
    found = fuse_block(self, lambda site: site in sites)
    if found != sites:
        warnings.warn(
            f"{cls.__qualname__}: the fused sites {[s.norm for s in sites]} were saved, "
            f"{[s.norm for s in found]} were found again on loading; the other sites compute "
            "unfused (same values)",
            FusionWarning,
            stacklevel=2,
        )


# ------------------------------------------------------------------------------ public API


def is_fused_block(module: nn.Module) -> bool:
    return FUSED_FROM in type(module).__dict__


def _candidate(module: nn.Module) -> bool:
    cls = type(module)
    if is_fused_block(module) or cls.__module__.startswith(("torch.", "normkit.")):
        return False
    if getattr(cls.forward, "__module__", "").startswith("torch."):  # Sequential & co.
        return False
    return any(type(m) in _BATCH_NORMS for m in module.modules())


@dataclass(frozen=True)
class NotFused:
    """A block whose forward calls a plain BatchNorm that was not fused, and why."""

    block: str  # qualified name ("" for the root)
    cls: str
    reason: str


def fuse_block(
    block: nn.Module, accept: Callable[[BlockSite], bool] | None = None
) -> tuple[BlockSite, ...]:
    """Fuse the exact sites of ``block``'s own forward (those ``accept`` takes), in place;
    returns them (empty: the block is unchanged)."""
    return _fuse_block(block, accept)[0]


def _fuse_block(block: nn.Module, accept) -> tuple[tuple[BlockSite, ...], str]:
    """The fused sites and why the block's other direct BatchNorms were not fused ("")."""
    direct = [n for n, m in block.named_children() if type(m) in _BATCH_NORMS]
    graph, why = _trace(block)
    if graph is None:
        return (), why if direct else ""
    modules = dict(block.named_modules())
    if not _inplace_safe(graph, block, modules):
        return (), "an augmented assignment (a += b) whose left side is not a fresh layer output"
    rejected: dict[str, str] = {}
    found = _find(graph, block, rejected)
    matches = [m for m in found if accept is None or accept(m.site)]
    why = "; ".join(f"{n}: {reason}" for n, reason in rejected.items() if n in direct)
    if matches:
        _rewrite(graph, matches, block)
        code = graph.python_code(root_module="self")
        block.__class__ = _fused_class(type(block), code, tuple(m.site for m in matches))
    return tuple(m.site for m in matches), why


def fuse_blocks(root: nn.Module, include=None) -> tuple[list[FusedPair], list[NotFused]]:
    """Fuse the sites of every block of ``root`` (in place); ``include(name, module)``, when
    given, must accept the BN and the activation module of a site. Returns the fused pairs
    and the blocks that call a plain BatchNorm of their own that could not be fused (a site
    ``include`` refused is not listed)."""
    pairs, not_fused = [], []
    for name, module in list(root.named_modules()):
        if not _candidate(module):
            continue
        prefix = f"{name}." if name else ""
        modules = dict(module.named_modules())

        def accept(site: BlockSite, prefix=prefix, modules=modules) -> bool:
            if include is None:
                return True
            names = [site.norm] + ([site.activation] if site.activation in modules else [])
            return all(include(prefix + n, modules[n]) for n in names)

        sites, why = _fuse_block(module, accept)
        for site in sites:
            activation = prefix + site.activation if site.activation in modules else site.activation
            pairs.append(FusedPair(prefix + site.norm, activation, site.act, site.residual))
        if why:
            not_fused.append(NotFused(name, type(module).__qualname__, why))
    return pairs, not_fused


def unfuse_blocks(root: nn.Module) -> nn.Module:
    """Give every fused block of ``root`` its original class back (in place)."""
    for module in root.modules():
        if is_fused_block(module):
            module.__class__ = type(module).__dict__[FUSED_FROM]
    return root
