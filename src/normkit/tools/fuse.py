"""Fuse an activation into the BatchNorm before it: ``BatchNorm2d -> ReLU`` becomes one
``BatchNormAct2d(act="relu")``, one pass over memory instead of two, forward and backward.

A pair is fused only where that is exact: the BatchNorm's output goes to the activation
module and nowhere else, and each of the two modules is called once (found with torch.fx on
the model's forward; when the model does not trace, from the order of ``nn.Sequential``
children, where a module that appears once is called once). The activation's slot keeps a
:class:`normkit.nn.FusedActivation` (an identity that remembers the module it replaced), so
``convert(model, "torch")`` restores both. State dicts are unchanged (neither activations nor
the marker hold state; BatchNormAct has BatchNorm's keys). An in-place activation
(``ReLU(inplace=True)``) fuses too: the fused layer's output is already activated, fresh.

Not fused here: an activation module shared by several call sites (torchvision's ResNet
blocks call one ``self.relu`` after a BatchNorm and after the residual add), an activation
applied as a function in a block's forward (``F.relu(self.bn(x))``), a residual add between
the two, BatchNorm3d (no BatchNormAct3d). The call sites inside a block's forward, those
included, are :mod:`normkit.tools.fuse_blocks`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from normkit.nn._activations import fused_activation
from normkit.tools._graph import module_graph
from normkit.tools._walk import load_state, normkit_class, replace_modules
from normkit.tools.converters import remember_source

_FUSED_INTO = {"BatchNorm1d": "BatchNormAct1d", "BatchNorm2d": "BatchNormAct2d"}


@dataclass(frozen=True)
class FusedPair:
    """A fused BatchNorm (qualified name), the activation fused with it (a module's name, a
    function's, or ``""`` for none), the activation's name, and whether a residual add was
    fused between the two (:mod:`normkit.tools.fuse_blocks`)."""

    norm: str
    activation: str
    act: str  # the fused activation's name
    residual: bool = False


def _fusable_norm(module: nn.Module) -> bool:
    return (
        type(module).__module__ == "normkit.nn.batchnorm" and type(module).__name__ in _FUSED_INTO
    )


def fuse_activations(root: nn.Module, include=None) -> tuple[nn.Module, list[FusedPair]]:
    """Fuse every exact (BatchNorm -> activation module) pair of ``root``, in place;
    ``include(name, module)``, when given, must accept both modules of a pair."""
    graph = module_graph(root)
    modules = dict(root.named_modules())
    plans: dict[str, nn.Module] = {}
    pairs: list[FusedPair] = []
    for edge in graph.edges:
        norm, act = modules.get(edge.producer), modules.get(edge.consumer)
        if norm is None or act is None or not _fusable_norm(norm):
            continue
        found = fused_activation(act)
        if found is None or found[0] == "identity" or type(act) is nn.Identity:
            continue
        if edge.producer_users != (edge.consumer,):
            continue
        if graph.calls[edge.producer] != 1 or graph.calls[edge.consumer] != 1:
            continue
        if edge.producer in plans or edge.consumer in plans:
            continue
        if include is not None and not (
            include(edge.producer, norm) and include(edge.consumer, act)
        ):
            continue
        if norm.affine and norm.bias is None:  # BatchNormAct has no bias=False form
            continue
        name, slope = found
        fused_cls = normkit_class(_FUSED_INTO[type(norm).__name__])
        fused = fused_cls(
            norm.num_features, act=name, eps=norm.eps, momentum=norm.momentum,
            affine=norm.affine, negative_slope=slope,
            track_running_stats=norm.track_running_stats,
        )  # fmt: skip
        state = norm.running_mean if norm.running_mean is not None else norm.weight
        if state is not None:
            fused = fused.to(device=state.device, dtype=state.dtype)
        plans[edge.producer] = remember_source(load_state(fused, norm), norm)
        marker = normkit_class("FusedActivation")(act, into=edge.producer)
        plans[edge.consumer] = marker.train(act.training)
        pairs.append(FusedPair(edge.producer, edge.consumer, name))
    root = replace_modules(root, lambda name, m: name in plans, lambda name, m: plans[name])
    return root, pairs


def unfuse_markers(root: nn.Module) -> nn.Module:
    """Put back the activation modules that :func:`fuse_activations` replaced."""
    marker = normkit_class("FusedActivation")
    return replace_modules(root, lambda name, m: isinstance(m, marker), lambda name, m: m.source)
