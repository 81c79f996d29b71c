"""The fused BatchNorm + residual add + activation kernels (through the numba backend's ops)
against :mod:`normkit.reference`, in float32 and float64, in several memory layouts of the
input, the residual and the gradient, serially and with two threads (two chunks per pass):
float32 within 1e-5 normwise relative, float64 within 1e-10."""

from __future__ import annotations

import pytest
import torch

from normkit import reference
from tests.kernels.conftest import TOL, as_layout, rel_err

ops = pytest.importorskip("normkit.backends.numba_batch_norm_add")  # the registered ops
DTYPES = [torch.float32, torch.float64]
SHAPES = [
    pytest.param((4, 3, 50), id="small"),
    pytest.param((1, 3, 9), id="N=1"),
    pytest.param((5, 4, 1), id="L=1"),
    pytest.param((8, 16, 49), id="7x7-planes"),
    pytest.param((3, 2, 40001), id="chunks-cross-planes"),
    pytest.param((700, 130, 1), id="bn1d-many-rows"),
    pytest.param((701, 3, 1), id="bn1d-tiles-and-tail"),  # (R, C) rows: 2 tiles + 19 rows
    pytest.param((2, 600, 70), id="many-channels"),
    pytest.param((700, 3, 40), id="short-planes-many-rows"),
]
LAYOUTS = ["contiguous", "channels_last", "strided"]


def _np(t):
    return None if t is None else t.detach().to(torch.float64).numpy()


def _check(actual, expected, dtype, what, floor=0.0):
    err = rel_err(torch.as_tensor(actual), torch.as_tensor(expected), floor)
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e}"


def _inputs(shape, dtype, layout, residual_layout):
    x = torch.randn(shape, dtype=torch.float64) * 2 + 0.5
    r = torch.randn(shape, dtype=torch.float64)
    w, b = torch.randn(shape[1], dtype=torch.float64), torch.randn(shape[1], dtype=torch.float64)
    x, r = as_layout(x.to(dtype), layout), as_layout(r.to(dtype), residual_layout)
    return x, r, w.to(dtype), b.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_train_forward_backward_match_reference(shape, layout, dtype, threads):
    residual_layout = "contiguous" if layout != "contiguous" else "channels_last"
    x, r, w, b = _inputs(shape, dtype, layout, residual_layout)
    y, mean, var = ops.batch_norm_add_forward(x, r, w, b, None, None, None, 0.1, 1e-5, "relu", "t")
    want, want_mean, want_var = reference.batch_norm_add_act_train(
        _np(x), _np(r), _np(w), _np(b), 1e-5, "relu"
    )
    _check(y, want, dtype, "y")
    _check(mean, want_mean, dtype, "mean", floor=1.0)
    _check(var, want_var, dtype, "var", floor=1.0)
    g = as_layout(torch.randn(shape, dtype=torch.float64).to(dtype), layout)
    dx, dr, dw, db = ops.batch_norm_add_relu_backward(g, y, x, w, mean, var, 1e-5, True)
    # the mask from the kernel's own output: a value within rounding of 0 may fall either way
    e_dx, e_dr, e_dw, e_db = reference.batch_norm_add_act_backward(
        _np(g), _np(y), _np(x), _np(w), 1e-5, "relu"
    )
    scale = float(g.abs().max())
    _check(dr, e_dr, dtype, "d residual", floor=scale)
    _check(dx, e_dx, dtype, "dx", floor=scale)
    _check(dw, e_dw, dtype, "dweight", floor=scale)
    _check(db, e_db, dtype, "dbias", floor=scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES[:4] + SHAPES[6:])
def test_eval_forward_backward_match_reference(shape, layout, dtype, threads):
    x, r, w, b = _inputs(shape, dtype, layout, layout)
    rm = torch.randn(shape[1], dtype=dtype)
    rv = torch.rand(shape[1], dtype=dtype) + 0.5
    y = ops.batch_norm_add_eval_forward(x, r, w, b, rm, rv, 1e-5, "relu")
    want = reference.batch_norm_add_act_eval(
        _np(x), _np(r), _np(rm), _np(rv), _np(w), _np(b), 1e-5, "relu"
    )
    _check(y, want, dtype, "y")
    g = torch.randn(shape, dtype=dtype)
    dx, dr, dw, db = ops.batch_norm_add_relu_backward(g, y, x, w, rm, rv, 1e-5, False)
    e_dx, e_dr, e_dw, e_db = reference.batch_norm_add_act_backward(
        _np(g), _np(y), _np(x), _np(w), 1e-5, "relu", _np(rm), _np(rv)
    )
    scale = float(g.abs().max())
    for name, a, e in (("dx", dx, e_dx), ("d residual", dr, e_dr), ("dweight", dw, e_dw),
                       ("dbias", db, e_db)):  # fmt: skip
        _check(a, e, dtype, name, floor=scale)


@pytest.mark.parametrize("training", [True, False])
def test_channels_last_4d_matches_reference(training, threads):
    """4-D channels_last is the (rows, C) layout: 1000 rows of 3 channels, tiles and a tail."""
    cl = torch.channels_last
    x = (torch.randn(4, 3, 10, 25, dtype=torch.float64) * 2 + 0.5).to(memory_format=cl)
    r = torch.randn(4, 3, 10, 25, dtype=torch.float64).to(memory_format=cl)
    g = torch.randn(4, 3, 10, 25, dtype=torch.float64).to(memory_format=cl)
    w, b = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    if training:
        y, mean, var = ops.batch_norm_add_forward(
            x, r, w, b, None, None, None, 0.1, 1e-5, "relu", "t"
        )
        want, _, _ = reference.batch_norm_add_act_train(_np(x), _np(r), _np(w), _np(b))
        stats = {}
    else:
        y = ops.batch_norm_add_eval_forward(x, r, w, b, rm, rv, 1e-5, "relu")
        mean, var = rm, rv
        want = reference.batch_norm_add_act_eval(_np(x), _np(r), _np(rm), _np(rv), _np(w), _np(b))
        stats = {"running_mean": _np(rm), "running_var": _np(rv)}
    assert y.is_contiguous(memory_format=cl)
    _check(y, want, torch.float64, "y")
    grads = ops.batch_norm_add_relu_backward(g, y, x, w, mean, var, 1e-5, training)
    expected = reference.batch_norm_add_act_backward(
        _np(g), _np(y), _np(x), _np(w), 1e-5, "relu", **stats
    )
    for name, a, e in zip(("dx", "d residual", "dweight", "dbias"), grads, expected, strict=True):
        _check(a, e, torch.float64, name, floor=float(g.abs().max()))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_identity_forward_is_batch_norm_plus_residual(layout, threads):
    x, r, w, b = _inputs((6, 5, 300), torch.float64, layout, layout)
    y, _, _ = ops.batch_norm_add_forward(x, r, w, b, None, None, None, 0.1, 1e-5, "identity", "t")
    want, _, _ = reference.batch_norm_add_act_train(
        _np(x), _np(r), _np(w), _np(b), 1e-5, "identity"
    )
    _check(y, want, torch.float64, "y")
    assert (y < 0).any()  # no ReLU applied


def test_forward_updates_the_running_statistics_like_the_reference():
    x, r, w, b = _inputs((4, 3, 50), torch.float64, "contiguous", "contiguous")
    rm, rv, nbt = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64), None
    rm0, rv0 = rm.clone(), rv.clone()
    nbt = torch.tensor(0)
    _, mean, var = ops.batch_norm_add_forward(x, r, w, b, rm, rv, nbt, 0.3, 1e-5, "relu", "t")
    want_rm, want_rv, want_nbt = reference.update_running_stats(
        _np(rm0), _np(rv0), _np(mean), _np(var), 200, 0.3, 0
    )
    _check(rm, want_rm, torch.float64, "running_mean")
    _check(rv, want_rv, torch.float64, "running_var")
    assert int(nbt) == want_nbt
