"""The activation of a norm+activation layer runs in place on the layer's own fresh output
wherever torch's ``ReLU(inplace=True)`` after torch's layer would: out of place it allocates
(and page-faults) a second tensor of the output's size, a cost the torch model does not pay
(measured: timm's GroupNormAct at 16x256x28x28 in eval, 1.3 ms against 1.9 ms with an
out-of-place ReLU). The op names torch's profiler records say which form ran."""

from __future__ import annotations

import pytest
import torch

import normkit as nk

# activation -> its in-place op as the profiler names it (the out-of-place forms call
# others: relu6_ runs hardtanh_, which runs clamp, so only the in-place name is telling)
OPS = {
    "relu": "aten::relu_",
    "leaky_relu": "aten::leaky_relu_",
    "relu6": "aten::hardtanh_",
    "silu": "aten::silu_",
    "hardswish": "aten::hardswish_",
}

LAYERS = {
    "GroupNormAct": lambda act: nk.nn.GroupNormAct(2, 8, act=act),
    "LayerNormAct": lambda act: nk.nn.LayerNormAct((8, 5, 5), act=act),
    "LayerNormAct2d": lambda act: nk.nn.LayerNormAct2d(8, act=act),
    "BatchNormAct2d": lambda act: nk.nn.BatchNormAct2d(8, act=act),
}


def _ops(layer, x, grad: bool, backend: str = "torch") -> set[str]:
    with torch.profiler.profile() as prof, torch.set_grad_enabled(grad), nk.use_backend(backend):
        layer(x)
    return {event.key for event in prof.key_averages()}


# numba's BatchNorm computes the activation inside its kernel: no activation op to see
PATHS = [(kind, "torch") for kind in sorted(LAYERS)] + [
    (kind, "numba") for kind in sorted(LAYERS) if kind != "BatchNormAct2d"
]


@pytest.mark.parametrize("act", sorted(OPS))
@pytest.mark.parametrize(("kind", "backend"), PATHS)
def test_without_autograd_the_activation_runs_in_place(kind, backend, act):
    if backend == "numba":
        pytest.importorskip("numba")
    layer = LAYERS[kind](act).eval()
    ops = _ops(layer, torch.randn(4, 8, 5, 5), grad=False, backend=backend)
    assert OPS[act] in ops, (kind, act, sorted(ops))


@pytest.mark.parametrize("kind", ["GroupNormAct", "LayerNormAct", "BatchNormAct2d"])
def test_in_training_relu_runs_in_place_on_a_fresh_output(kind):
    layer = LAYERS[kind]("relu").train()
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    ops = _ops(layer, x, grad=True)
    assert "aten::relu_" in ops and "aten::relu" not in ops, sorted(ops)
    reference = LAYERS[kind]("relu").train()
    with nk.use_backend("torch"):
        y = layer(x)
    expected = torch.relu(reference(x))
    torch.testing.assert_close(y, expected)
    (grad,) = torch.autograd.grad(y.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad)


def test_layer_norm_2d_keeps_relu_out_of_place_while_autograd_records():
    # its output is a permuted view: in place, autograd would rebase (copy) the view's base
    layer = LAYERS["LayerNormAct2d"]("relu").train()
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    ops = _ops(layer, x, grad=True)
    assert "aten::relu" in ops and "aten::relu_" not in ops, sorted(ops)


@pytest.mark.parametrize("act", ["silu", "hardswish", "leaky_relu"])
def test_in_training_activations_that_read_their_input_stay_out_of_place(act):
    layer = LAYERS["GroupNormAct"](act).train()
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    ops = _ops(layer, x, grad=True)
    assert OPS[act] not in ops, sorted(ops)
