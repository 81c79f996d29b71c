"""torch.compile of zoo models converted to normkit: one graph, no graph break, in training
and in evaluation (``torch._dynamo.explain``), on every model of the zoo.

A graph break inside a normalization layer splits every block of a network in two (and
drops whole-graph optimizations); the torch.nn originals of these models trace as a single
graph, so any break is normkit's. Each model at the zoo's test size, with the automatic
backend choice (torch's ops in the graph) and with numba asked for by name (normkit's ops in
the graph); Dynamo traces one of these models in one to five seconds here. Two models, the
ResNet-18 stand-in (BatchNorm2d, BatchNormAct2d from the ReLU fusion of ``convert``) and the
ViT stand-in (LayerNorm in transformer blocks), also have the ops in their graphs counted.
"""

from __future__ import annotations

import pytest
import torch

import normkit as nk
from tests.zoo.fixtures import stand_in_packages  # noqa: F401  (fixture)
from tests.zoo.registry import ZOO

pytestmark = pytest.mark.usefixtures("stand_in_packages", "fresh_compile")

#: The models whose graphs are counted op by op, and the normkit classes their conversion
#: must contain (what the count exercises).
COUNTED = {
    "resnet18": {"BatchNorm2d", "BatchNormAct2d"},
    "vit_base_patch16_224": {"LayerNorm"},
}


def _explain(name: str, training: bool, backend: str):
    """The converted model, Dynamo's explanation of tracing it, and the normkit ops in its
    graphs (also inside the bodies of traced autograd.Functions)."""
    torch.manual_seed(0)
    model = nk.tools.convert(ZOO[name].build("test"), "normkit", quiet=True).train(training)
    x = torch.randn(ZOO[name].input_shape("test"))
    with nk.use_backend(backend):
        explanation = torch._dynamo.explain(model)(x)
    reasons = [f"{r.reason} at {r.user_stack[-1:]}" for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1
    calls = [
        str(node.target)
        for graph in explanation.graphs
        for body in graph.modules()
        if isinstance(body, torch.fx.GraphModule)
        for node in body.graph.nodes
        if node.op == "call_function" and str(node.target).startswith("normkit.")
    ]
    return model, calls


def _normkit_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if type(m).__module__.startswith("normkit.")]


@pytest.mark.parametrize("backend", ["auto", "numba"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_converted_zoo_model_compiles_to_one_graph(name, training, backend):
    """One graph, no break; with numba asked for, normkit's ops are in it (the layers were
    traced into the graph, not skipped or run outside it)."""
    model, calls = _explain(name, training, backend)
    assert _normkit_layers(model), f"{name}: convert replaced no layer"
    if backend == "numba":
        assert calls, f"{name}: no normkit op in the graph"


@pytest.mark.parametrize("backend", ["auto", "numba"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(COUNTED))
def test_graph_holds_one_op_per_layer(name, training, backend):
    """Automatic choice: torch's ops in the graph (the compiler fuses them), normkit's
    running-statistics guard one op per BatchNorm in training. numba asked for by name: one
    normkit forward op per layer."""
    model, calls = _explain(name, training, backend)
    normkit_classes = {type(m).__name__ for m in _normkit_layers(model)}
    assert normkit_classes >= COUNTED[name]
    layers = [m for m in model.modules() if type(m).__name__ in COUNTED[name]]
    if backend == "numba":
        assert len([c for c in calls if "forward" in c]) == len(layers), calls
        return
    assert not [c for c in calls if "forward" in c], calls
    batch_norms = [m for m in layers if isinstance(m, torch.nn.BatchNorm2d)]
    expected = len(batch_norms) if training else 0
    assert len([c for c in calls if "keep_running_stats_finite" in c]) == expected, calls
