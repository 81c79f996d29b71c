"""torch.compile of zoo models converted to normkit: one graph, no graph break, in training
and in evaluation (``torch._dynamo.explain``).

A graph break inside a normalization layer splits every block of a network in two (and
drops whole-graph optimizations); the torch.nn originals of these two models trace as a
single graph, so any break is normkit's. Two models stand for the zoo: the ResNet-18 stand-in
(BatchNorm2d, BatchNormAct2d from the ReLU fusion of ``convert``) and the ViT stand-in
(LayerNorm in transformer blocks); each at the zoo's test size (Dynamo traces a model in
about ten seconds here, so the whole zoo would cost minutes).
"""

from __future__ import annotations

import pytest
import torch

import normkit as nk
from tests.zoo.fixtures import stand_in_packages  # noqa: F401  (fixture)
from tests.zoo.registry import ZOO

pytestmark = pytest.mark.usefixtures("stand_in_packages", "fresh_compile")

#: Each model and the normkit classes its conversion must contain (what the test exercises).
MODELS = {
    "resnet18": {"BatchNorm2d", "BatchNormAct2d"},
    "vit_base_patch16_224": {"LayerNorm"},
}


@pytest.mark.parametrize("backend", ["auto", "numba"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_converted_model_compiles_to_one_graph(name, training, backend):
    """Automatic choice: torch's ops in the graph (the compiler fuses them), normkit's
    running-statistics guard one op per BatchNorm in training. numba asked for by name: one
    normkit forward op per layer."""
    torch.manual_seed(0)
    model = nk.tools.convert(ZOO[name].build("test"), "normkit", quiet=True).train(training)
    normkit_classes = {
        type(m).__name__ for m in model.modules() if type(m).__module__.startswith("normkit.")
    }
    assert normkit_classes >= MODELS[name]
    x = torch.randn(ZOO[name].input_shape("test"))
    with nk.use_backend(backend):
        explanation = torch._dynamo.explain(model)(x)
    reasons = [f"{r.reason} at {r.user_stack[-1:]}" for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1
    # normkit's ops in the graph (also inside the bodies of traced autograd.Functions): the
    # layers were traced, not skipped.
    calls = [
        str(node.target)
        for graph in explanation.graphs
        for body in graph.modules()
        if isinstance(body, torch.fx.GraphModule)
        for node in body.graph.nodes
        if node.op == "call_function" and str(node.target).startswith("normkit.")
    ]
    layers = [m for m in model.modules() if type(m).__name__ in MODELS[name]]
    if backend == "numba":
        assert len([c for c in calls if "forward" in c]) == len(layers), calls
        return
    assert not [c for c in calls if "forward" in c], calls
    batch_norms = [m for m in layers if isinstance(m, torch.nn.BatchNorm2d)]
    expected = len(batch_norms) if training else 0
    assert len([c for c in calls if "keep_running_stats_finite" in c]) == expected, calls
