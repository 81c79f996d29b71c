"""The fused BatchNorm + residual add + activation op against torch's three ops in a row
(``F.batch_norm``, ``+``, ``relu``) and against the NumPy reference, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import normkit.functional as nkf
from normkit import reference
from normkit.functional import NormInputError
from tests.conftest import assert_close

SHAPES = [(4, 3), (2, 3, 5), (3, 3, 4, 5), (2, 3, 2, 3, 4)]


def _composite(x, r, rm, rv, w, b, training, momentum, eps, act):
    z = F.batch_norm(x, rm, rv, w, b, training, momentum, eps) + r
    return torch.relu(z) if act == "relu" else z


def _inputs(shape, dtype, affine, channels_last=False):
    x = torch.randn(shape, dtype=dtype) * 3 + 2
    r = torch.randn(shape, dtype=dtype)
    if channels_last:
        x, r = x.to(memory_format=torch.channels_last), r.to(memory_format=torch.channels_last)
    x, r = x.requires_grad_(), r.requires_grad_()
    c = shape[1]
    w = torch.randn(c, dtype=dtype, requires_grad=True) if affine else None
    b = torch.randn(c, dtype=dtype, requires_grad=True) if affine else None
    return x, r, w, b


def _run(fn, leaves, grad_out):
    out = fn()
    return out, torch.autograd.grad(out, leaves, grad_out)


def _check_against_composite(x, r, w, b, training, act, dtype, momentum=0.3, eps=1e-3):
    c = x.shape[1]
    rm_ref, rv_ref = torch.randn(c, dtype=dtype), torch.rand(c, dtype=dtype) + 0.5
    rm, rv = rm_ref.clone(), rv_ref.clone()
    leaves = [t for t in (x, r, w, b) if t is not None]
    grad_out = torch.randn_like(x)
    y_ref, g_ref = _run(
        lambda: _composite(x, r, rm_ref, rv_ref, w, b, training, momentum, eps, act),
        leaves,
        grad_out,
    )
    y, g = _run(
        lambda: nkf.batch_norm_add_act(x, r, rm, rv, w, b, training, momentum, eps, act),
        leaves,
        grad_out,
    )
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, y_ref, dtype, what="output", rtol=tol)
    for name, a, e in zip(("x", "residual", "weight", "bias"), g, g_ref, strict=False):
        assert_close(a, e, dtype, what=f"grad {name}", floor=grad_out.abs().max(), rtol=tol)
    assert_close(rm, rm_ref, dtype, what="running_mean", rtol=tol)
    assert_close(rv, rv_ref, dtype, what="running_var", rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("act", ["relu", "identity"])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_composite(backend, dtype, training, affine, act, shape):
    x, r, w, b = _inputs(shape, dtype, affine)
    _check_against_composite(x, r, w, b, training, act, dtype)


@pytest.mark.parametrize("training", [True, False])
def test_channels_last_matches_torch_composite(backend, training):
    x, r, w, b = _inputs((3, 5, 4, 6), torch.float32, True, channels_last=True)
    _check_against_composite(x, r, w, b, training, "relu", torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False])
def test_half_precision_falls_back_to_torch_with_its_values(dtype, training):
    x, r, w, b = _inputs((4, 3, 5, 5), dtype, True)
    _check_against_composite(x, r, w, b, training, "relu", dtype)


@pytest.mark.parametrize("training", [True, False])
def test_relu_gradient_is_zero_where_the_sum_is_exactly_zero(backend, training):
    """Channel 0 has weight = bias = 0 (BN's output is exactly 0) and a residual that is 0 at
    half of the positions: there the sum is 0 and torch's ReLU passes no gradient."""
    x = torch.randn(4, 2, 6, dtype=torch.float64, requires_grad=True)
    r = torch.randn(4, 2, 6, dtype=torch.float64)
    r[:, 0, ::2] = 0.0
    r.requires_grad_()
    w = torch.tensor([0.0, 1.5], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.0, -0.2], dtype=torch.float64, requires_grad=True)
    _check_against_composite(x, r, w, b, training, "relu", torch.float64)


def _np(t):
    return None if t is None else t.detach().numpy()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_reference(backend, training, affine):
    x, r, w, b = _inputs((3, 4, 5, 2), torch.float64, affine)
    rm, rv = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.5
    rm0, rv0 = rm.clone(), rv.clone()
    nbt = torch.tensor(2)
    out = nkf.batch_norm_add_act(
        x, r, rm, rv, w, b, training, None, 1e-3, "relu", num_batches_tracked=nbt
    )
    g = torch.randn_like(out)
    leaves = [t for t in (x, r, w, b) if t is not None]
    grads = torch.autograd.grad(out, leaves, g)
    if training:
        want, mean, var = reference.batch_norm_add_act_train(
            _np(x), _np(r), _np(w), _np(b), 1e-3, "relu"
        )
        want_rm, want_rv, want_nbt = reference.update_running_stats(
            _np(rm0), _np(rv0), mean, var, 3 * 5 * 2, None, 2
        )
        assert_close(rm, want_rm, torch.float64, what="running_mean")
        assert_close(rv, want_rv, torch.float64, what="running_var")
        assert int(nbt) == want_nbt
        stats = {}
    else:
        want = reference.batch_norm_add_act_eval(
            _np(x), _np(r), _np(rm0), _np(rv0), _np(w), _np(b), 1e-3, "relu"
        )
        stats = {"running_mean": _np(rm0), "running_var": _np(rv0)}
    assert_close(out, want, torch.float64, what="output")
    dx, dr, dw, db = reference.batch_norm_add_act_backward(
        _np(g), want, _np(x), _np(w), 1e-3, "relu", has_beta=affine, **stats
    )
    expected = [dx, dr] + ([dw, db] if affine else [])
    assert len(grads) == len(expected)
    for name, a, e in zip(("x", "residual", "weight", "bias"), grads, expected, strict=False):
        assert_close(a, e, torch.float64, what=f"grad {name}", floor=float(np.abs(_np(g)).max()))


def _leaf(*shape, scale=1.0, offset=0.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale + offset).requires_grad_()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("act", ["relu", "identity"])
def test_gradcheck_float64(backend, training, act):
    rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5

    def fn(x, r, w, b):
        return nkf.batch_norm_add_act(x, r, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5, act)

    inputs = (_leaf(3, 3, 4, scale=2, offset=1), _leaf(3, 3, 4), _leaf(3), _leaf(3))
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


@pytest.mark.parametrize("training", [True, False])
def test_double_backward_matches_torch_composite(backend, training):
    """Gradients built as a graph (``create_graph=True``), and their own gradients, equal
    torch's; gradgradcheck alone would accept a wrong but self-consistent graph."""
    x, r, w, b = _inputs((3, 4, 5), torch.float64, True)
    rm, rv = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.5
    g = torch.randn(3, 4, 5, dtype=torch.float64)
    results = []
    for fn in (_composite, nkf.batch_norm_add_act):
        y = fn(x, r, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5, "relu")
        first = torch.autograd.grad(y, (x, r, w, b), g, create_graph=True)
        # the residual enters the first gradients only through the ReLU's mask (constant
        # almost everywhere): torch's graph reaches it with a zero, ours does not reach it
        second = torch.autograd.grad(
            sum((t * t).sum() for t in first), (x, r, w, b), materialize_grads=True
        )
        results.append((first, second))
    (first_ref, second_ref), (first, second) = results
    for name, a, e in zip(("x", "residual", "weight", "bias"), first, first_ref, strict=True):
        assert_close(a, e, torch.float64, what=f"grad {name}", floor=g.abs().max())
    for name, a, e in zip(("x", "residual", "weight", "bias"), second, second_ref, strict=True):
        assert_close(a, e, torch.float64, what=f"grad of grad {name}", floor=1.0)


def test_bad_arguments_are_refused_with_the_name():
    x, r = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    rm, rv = torch.zeros(3), torch.ones(3)
    with pytest.raises(NormInputError, match=r"blk.*residual of the input's size"):
        nkf.batch_norm_add_act(x, r[:, :, :2], rm, rv, training=True, name="blk")
    with pytest.raises(NormInputError, match=r"blk.*dtype and device"):
        nkf.batch_norm_add_act(x, r.double(), rm, rv, training=True, name="blk")
    with pytest.raises(NormInputError, match=r"blk.*residual tensor, got float"):
        nkf.batch_norm_add_act(x, 1.0, rm, rv, training=True, name="blk")
    with pytest.raises(NormInputError, match=r"blk.*act must be one of.*'silu'"):
        nkf.batch_norm_add_act(x, r, rm, rv, training=True, act="silu", name="blk")


def test_output_is_fresh_and_inputs_are_untouched(backend):
    x, r, w, b = _inputs((4, 3, 5, 5), torch.float32, True)
    x0, r0 = x.detach().clone(), r.detach().clone()
    y = nkf.batch_norm_add_act(x, r, torch.zeros(3), torch.ones(3), w, b, True)
    assert y._base is None and y.grad_fn is not None  # not a view: no copy-on-write penalty
    y.sum().backward()
    assert torch.equal(x.detach(), x0) and torch.equal(r.detach(), r0)


def test_compiles_without_graph_breaks_and_matches_eager(backend, fresh_compile):
    x, r, w, b = _inputs((4, 3, 5, 5), torch.float32, True)
    rm, rv = torch.zeros(3), torch.ones(3)
    rm_c, rv_c = rm.clone(), rv.clone()

    def step(x, r, w, b, rm, rv, training):
        return nkf.batch_norm_add_act(x, r, rm, rv, w, b, training, 0.1, 1e-5, "relu")

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    for training in (True, False):
        g = torch.randn_like(x)
        y = step(x, r, w, b, rm, rv, training)
        grads = torch.autograd.grad(y, (x, r, w, b), g)
        y_c = compiled(x, r, w, b, rm_c, rv_c, training)
        grads_c = torch.autograd.grad(y_c, (x, r, w, b), g)
        assert_close(y_c, y, torch.float32, what=f"output (training={training})")
        for name, a, e in zip(("x", "residual", "weight", "bias"), grads_c, grads, strict=True):
            assert_close(a, e, torch.float32, what=f"grad {name}", rtol=1e-4)
        assert_close(rm_c, rm, torch.float32, what="running_mean")
        assert_close(rv_c, rv, torch.float32, what="running_var")
