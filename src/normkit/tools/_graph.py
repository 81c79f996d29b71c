"""Which module feeds which: the data-flow edges between a model's submodules.

Found by ``torch.fx`` symbolic tracing (norm layers and normkit modules are kept as leaves),
with a fallback for models that do not trace (data-dependent control flow): the adjacency of
the children of every ``nn.Sequential``. Used by :func:`normkit.tools.fold` (Conv -> BN
pairs) and :func:`normkit.tools.doctor` (bias before BN, Dropout before BN).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import torch.fx
from torch import nn

from normkit.tools._walk import is_norm


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


def _describe(node: torch.fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else f"{node.op}:{node.name}"


def _fx_graph(model: nn.Module) -> ModuleGraph:
    graph = _LeafTracer().trace(model)
    result = ModuleGraph("fx")
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        result.calls[str(node.target)] += 1
        source = node.args[0] if node.args else None
        if isinstance(source, torch.fx.Node) and source.op == "call_module":
            users = tuple(_describe(u) for u in source.users)
            result.edges.append(Edge(str(source.target), str(node.target), users))
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
