"""LayerNorm2d against timm's and torchvision's computation (permute -> layer_norm -> permute):
values, gradients, and the strides of the output and of the input gradient, on every
backend, input layout and rank. The strides matter: the layers after a LayerNorm2d in a
ConvNeXt pick their kernels (and their own output layout) by them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import normkit as nk
from tests.conftest import assert_close


def _permuted_layer_norm(x, weight, bias, eps):
    y = F.layer_norm(x.movedim(1, -1), (x.shape[1],), weight, bias, eps)
    return y.movedim(-1, 1)


def _strides(t):
    return [stride for size, stride in zip(t.shape, t.stride(), strict=True) if size > 1]


def _input(shape, layout, dtype):
    x = torch.randn(shape, dtype=dtype) * 3 + 1
    if layout == "channels_last":
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    elif layout == "noncontiguous":
        x = torch.randn(*shape[:-1], 2 * shape[-1], dtype=dtype)[..., ::2] * 3 + 1
    return x.requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontiguous"])
@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 8, 6, 5), (3, 16, 40, 40), (2, 3, 2, 3, 4)])
def test_layer_norm_2d_matches_the_permuted_layer_norm(backend, shape, layout, dtype):
    layer = nk.nn.LayerNorm2d(shape[1]).to(dtype)
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    x = _input(shape, layout, dtype)
    grad = torch.randn(shape, dtype=dtype).movedim(1, -1).contiguous().movedim(-1, 1)
    with nk.use_backend(backend):
        ours = layer(x)
        dx, dw, db = torch.autograd.grad(ours, (x, layer.weight, layer.bias), grad)
    theirs = _permuted_layer_norm(x, layer.weight, layer.bias, layer.eps)
    want = torch.autograd.grad(theirs, (x, layer.weight, layer.bias), grad)
    assert_close(ours, theirs, dtype, what="output")
    for got, expected, what in zip((dx, dw, db), want, ("input", "weight", "bias"), strict=True):
        assert_close(got, expected, dtype, what=f"{what} gradient", floor=grad.abs().max())
    assert _strides(ours) == _strides(theirs), "output layout differs from timm's"
    assert _strides(dx) == _strides(want[0]), "input-gradient layout differs from timm's"
