"""Which module feeds which: the data-flow edges between a model's submodules.

Found by ``torch.fx`` symbolic tracing (norm layers and normkit modules are kept as leaves),
with a fallback for models that do not trace (data-dependent control flow): the adjacency of
the children of every ``nn.Sequential``. Used by :func:`normkit.tools.fold` (Conv -> BN
pairs) and :func:`normkit.tools.doctor` (bias before BN, Dropout before BN). In a fused block
(:mod:`normkit.tools.fuse_blocks`) a fused call counts as a call of its BatchNorm with the
call's input, so those tools see the same pairs as in the unfused model.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import torch.fx
from torch import nn

from normkit.nn.fused_calls import norm_act, norm_add_act
from normkit.tools._walk import is_norm

_FUSED_CALLS = (norm_act, norm_add_act)


@dataclass(frozen=True)
class Edge:
    """``consumer``'s first input is ``producer``'s output (qualified module names)."""

    producer: str
    consumer: str
    producer_users: tuple[str, ...]  # every use of the producer's output (module name or op)


@dataclass
class ModuleGraph:
    method: str  # "fx" or "sequential"
    edges: list[Edge] = field(default_factory=list)
    calls: Counter = field(default_factory=Counter)  # call sites per module name
    trace_error: str | None = None

    def producer_of(self, consumer: str) -> Edge | None:
        for edge in self.edges:
            if edge.consumer == consumer:
                return edge
        return None


class _LeafTracer(torch.fx.Tracer):
    """fx tracer that does not trace into normalization layers or normkit modules."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            super().is_leaf_module(m, module_qualified_name)
            or is_norm(m)
            or type(m).__module__.startswith("normkit.")
        )


def _fused_norm(node: torch.fx.Node) -> str | None:
    """The BatchNorm a fused call (``norm_act(bn, x, ...)``) computes: its module's name."""
    if node.op == "call_function" and node.target in _FUSED_CALLS:
        norm = node.args[0]
        if isinstance(norm, torch.fx.Node) and norm.op == "get_attr":
            return str(norm.target)
    return None


def _called_module(node: torch.fx.Node) -> str | None:
    """The module ``node`` calls (a fused call: its BatchNorm), or None."""
    return str(node.target) if node.op == "call_module" else _fused_norm(node)


def _describe(node: torch.fx.Node, source: torch.fx.Node) -> str:
    """How a user ``node`` of ``source`` is named: the module it calls with ``source``."""
    if node.op == "call_module":
        return str(node.target)
    norm = _fused_norm(node)
    if norm is not None and node.args[1] is source:
        return norm
    return f"{node.op}:{node.name}"


def _flattens_leading_dims(node: torch.fx.Node) -> bool:
    """``t.flatten(0, 1)`` / ``torch.flatten(t, 0, 1)`` (also ``end_dim=-2``): tokens
    ``(B, N, C)`` to ``(B * N, C)``, the feature dim staying last."""
    is_flatten = (node.op == "call_method" and node.target == "flatten") or (
        node.op == "call_function" and node.target is torch.flatten
    )
    if not is_flatten:
        return False
    args = list(node.args[1:]) + [node.kwargs.get(k) for k in ("start_dim", "end_dim")]
    dims = [a for a in args if a is not None]
    return len(dims) == 2 and dims[0] == 0 and dims[1] in (1, -2)


_SHAPE_TEMPLATE_METHODS = ("reshape_as", "view_as", "expand_as")


def _reads_shape_only(user: torch.fx.Node, node: torch.fx.Node) -> bool:
    """``user`` reads only ``node``'s shape: ``y.reshape_as(node)``, ``node.size()``,
    ``node.shape``, ``node.dim()``."""
    if user.op == "call_method" and user.target in _SHAPE_TEMPLATE_METHODS:
        return user.args[0] is not node
    if user.op == "call_method" and user.target in ("size", "dim"):
        return True
    return user.op == "call_function" and user.target is getattr and user.args[1] == "shape"


def _fx_graph(model: nn.Module) -> ModuleGraph:
    graph = _LeafTracer().trace(model)
    result = ModuleGraph("fx")
    for node in graph.nodes:
        consumer = _called_module(node)
        if consumer is None:
            continue
        result.calls[consumer] += 1
        first = 0 if node.op == "call_module" else 1  # a fused call: (bn, input, ...)
        source = node.args[first] if len(node.args) > first else None
        via = None
        # Through a flatten of the leading dims, whose only user is this module.
        if (
            isinstance(source, torch.fx.Node)
            and _flattens_leading_dims(source)
            and len(source.users) == 1
        ):
            via, source = source, source.args[0]
        if isinstance(source, torch.fx.Node) and source.op == "call_module":
            producer = str(source.target)
            users = tuple(
                consumer if u is via else _describe(u, source)
                for u in source.users
                if not _reads_shape_only(u, source)
            )
            result.edges.append(Edge(producer, consumer, users))
    return result


def _edge_leaf(name: str, module: nn.Module, last: bool) -> tuple[str, nn.Module] | None:
    """The first (or last) non-container module of a (nested) Sequential."""
    while isinstance(module, nn.Sequential):
        items = list(module._modules.items())
        if not items:
            return None
        child_name, module = items[-1] if last else items[0]
        name = f"{name}.{child_name}" if name else child_name
    return name, module


def _sequential_graph(model: nn.Module, error: str) -> ModuleGraph:
    result = ModuleGraph("sequential", trace_error=error)
    first_name: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        first_name.setdefault(id(module), name)
        result.calls[first_name[id(module)]] += 1
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items() if m]
        for (a_name, a), (b_name, b) in itertools.pairwise(children):
            producer = _edge_leaf(a_name, a, last=True)
            consumer = _edge_leaf(b_name, b, last=False)
            if producer is None or consumer is None:
                continue
            p_name, c_name = first_name[id(producer[1])], first_name[id(consumer[1])]
            result.edges.append(Edge(p_name, c_name, (c_name,)))
    return result


def module_graph(model: nn.Module) -> ModuleGraph:
    """Trace ``model`` with torch.fx; on failure, fall back to Sequential adjacency."""
    try:
        return _fx_graph(model)
    except Exception as exc:  # any tracing failure means: use the fallback
        return _sequential_graph(model, f"{type(exc).__name__}: {exc}")
