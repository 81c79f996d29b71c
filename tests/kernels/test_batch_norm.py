"""BatchNorm kernels (through the numba backend's ops) against the NumPy reference.

Every op runs on float32 and float64 inputs in several memory layouts, serially and with
two threads (two chunks per pass), and is compared with :mod:`normkit.reference` evaluated
in float64 on the same values: float32 within 1e-5 normwise relative, float64 within 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normkit as nk
from normkit import reference
from normkit.backends import torch_ops
from tests.kernels import _torch_reference as torch_ref
from tests.kernels.conftest import (
    LAYOUTS,
    TOL,
    as_layout,
    numba_ops,
    rel_err,
    same_layout,
)

nb = numba_ops
DTYPES = [torch.float32, torch.float64]
SHAPES = [
    pytest.param((4, 3, 50), id="small"),
    pytest.param((1, 3, 9), id="N=1"),
    pytest.param((5, 4, 1), id="L=1"),
    pytest.param((8, 16, 49), id="7x7-planes"),
    pytest.param((3, 2, 40001), id="chunks-cross-planes"),
    pytest.param((700, 130, 1), id="bn1d-many-rows"),
    pytest.param((97, 200, 1), id="bn1d-column-blocks"),  # fused small path, 2 blocks + tail
    pytest.param((2, 600, 70), id="many-channels"),
    pytest.param((700, 3, 40), id="short-planes-many-rows"),
]


def _np(t):
    return None if t is None else t.detach().to(torch.float64).numpy()


def _inputs(shape, dtype, affine=True, offset=0.5, scale=2.0):
    x = torch.randn(shape, dtype=torch.float64) * scale + offset
    w = torch.randn(shape[1], dtype=torch.float64) if affine else None
    b = torch.randn(shape[1], dtype=torch.float64) if affine else None
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(x), cast(w), cast(b)


def _check(actual, expected, dtype, what, floor=0.0):
    err = rel_err(torch.as_tensor(actual), torch.as_tensor(expected), floor)
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_backward_match_reference(shape, layout, dtype, threads):
    x, w, b = _inputs(shape, dtype)
    x = as_layout(x, layout)
    g = as_layout(torch.randn(shape, dtype=dtype), "contiguous")
    y, mean, var = nb.batch_norm_forward(x, w, b, 1e-5)
    y_ref, mean_ref, var_ref = reference.batch_norm_train(_np(x), _np(w), _np(b), 1e-5)
    _check(y, y_ref, dtype, "y")
    _check(mean, mean_ref, dtype, "mean")
    _check(var, var_ref, dtype, "var")
    assert mean.dtype == var.dtype == dtype
    assert y.dtype == dtype
    assert same_layout(y, torch_ref.batch_norm_forward(x, w, b, 1e-5)[0])

    dx, dw, db = nb.batch_norm_backward(g, x, w, mean, var, 1e-5)
    dx_ref, dw_ref, db_ref = reference.batch_norm_train_backward(_np(g), _np(x), _np(w), 1e-5)
    _check(dx, dx_ref, dtype, "dx")
    _check(dw, dw_ref, dtype, "dweight")
    _check(db, db_ref, dtype, "dbias")
    assert same_layout(dx, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("grad_layout", LAYOUTS)
def test_backward_grad_layouts(layout, grad_layout, dtype):
    shape = (3, 4, 20)
    x, w, _ = _inputs(shape, dtype)
    x = as_layout(x, layout)
    g = as_layout(torch.randn(shape, dtype=dtype), grad_layout)
    _, mean, var = nb.batch_norm_forward(x, w, None, 1e-5)
    dx, dw, db = nb.batch_norm_backward(g, x, w, mean, var, 1e-5)
    dx_ref, dw_ref, db_ref = reference.batch_norm_train_backward(_np(g), _np(x), _np(w), 1e-5)
    _check(dx, dx_ref, dtype, "dx")
    _check(dw, dw_ref, dtype, "dweight")
    _check(db, db_ref, dtype, "dbias")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 50), (64, 5, 1), (3, 2, 40001)])
def test_eval_forward_backward_match_reference(shape, affine, layout, dtype, threads):
    x, w, b = _inputs(shape, dtype, affine)
    x = as_layout(x, layout)
    rm = torch.randn(shape[1], dtype=dtype)
    rv = torch.rand(shape[1], dtype=dtype) + 0.5
    g = torch.randn(shape, dtype=dtype)
    y = nb.batch_norm_eval_forward(x, rm, rv, w, b, 1e-5)
    _check(y, reference.batch_norm_eval(_np(x), _np(rm), _np(rv), _np(w), _np(b), 1e-5), dtype, "y")
    dx, dw, db = nb.batch_norm_eval_backward(g, x, rm, rv, w, 1e-5)
    dx_ref, dw_ref, db_ref = reference.batch_norm_eval_backward(
        _np(g), _np(x), _np(rm), _np(rv), _np(w), 1e-5
    )
    _check(dx, dx_ref, dtype, "dx")
    assert (dw is None) == (w is None)
    if w is not None:
        _check(dw, dw_ref, dtype, "dweight")
    _check(db, db_ref, dtype, "dbias")


ACTS = ["identity", "relu", "leaky_relu", "silu", "gelu", "relu6", "hardswish"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("affine", [True, False])
def test_primitives_match_torch_ops(act, affine, layout, dtype, threads):
    """stats -> elemt -> backward_reduce -> backward_elemt, as sync BN and BatchNormAct chain
    them, against the torch backend's definition evaluated in float64."""
    shape = (6, 5, 3001) if threads == 2 else (6, 5, 31)
    x, w, b = _inputs(shape, dtype, affine)
    x = as_layout(x, layout)
    g = torch.randn(shape, dtype=dtype)
    f64 = lambda t: None if t is None else t.to(torch.float64)  # noqa: E731

    mean, var = nb.batch_norm_stats(x)
    mean_ref, var_ref = torch_ops.batch_norm_stats(f64(x))
    _check(mean, mean_ref, dtype, "mean")
    _check(var, var_ref, dtype, "var")
    invstd = torch.rsqrt(var + 1e-5)

    kw = {"act": act, "negative_slope": 0.2}
    y = nb.batch_norm_elemt(x, mean, invstd, w, b, **kw)
    y_ref = torch_ops.batch_norm_elemt(f64(x), f64(mean), f64(invstd), f64(w), f64(b), **kw)
    _check(y, y_ref, dtype, "elemt")
    assert same_layout(y, torch_ops.batch_norm_elemt(x, mean, invstd, w, b, **kw))

    sums = nb.batch_norm_backward_reduce(g, x, mean, invstd, w, b, **kw)
    sums_ref = torch_ops.batch_norm_backward_reduce(
        f64(g), f64(x), f64(mean), f64(invstd), f64(w), f64(b), **kw
    )
    _check(sums[0], sums_ref[0], dtype, "sum_dy")
    _check(sums[1], sums_ref[1], dtype, "sum_dy_xhat")

    count = shape[0] * shape[2]
    for stats in (sums, (None, None)):
        dx = nb.batch_norm_backward_elemt(g, x, mean, invstd, w, b, *stats, count, **kw)
        dx_ref = torch_ops.batch_norm_backward_elemt(
            f64(g), f64(x), f64(mean), f64(invstd), f64(w), f64(b),
            f64(stats[0]), f64(stats[1]), count, **kw,
        )  # fmt: skip
        _check(dx, dx_ref, dtype, "backward_elemt")


def test_unknown_activation_is_a_value_error():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="act must be one of"):
        nk.functional.batch_norm_act(x, None, None, training=True, act="tanh")


# ---------------------------------------------------------------------------------------
# Numerical edge cases (issue 6, item 3).


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(16, 4, 1000), (4096, 8, 1), (300, 256, 1), (64, 32, 49)])
def test_large_mean_keeps_variance_and_output_accurate(shape, layout, threads):
    x64 = 1e4 + torch.randn(shape, dtype=torch.float64)
    x = as_layout(x64.to(torch.float32), layout)
    y, mean, var = nb.batch_norm_forward(x, None, None, 1e-5)
    y_ref, mean_ref, var_ref = reference.batch_norm_train(_np(x), None, None, 1e-5)
    var_err = np.abs(var.double().numpy() - var_ref).max() / var_ref.max()
    assert var_err <= 1e-3, var_err
    _check(mean, mean_ref, torch.float32, "mean")
    _check(y, y_ref, torch.float32, "y")
    stats_var = nb.batch_norm_stats(x)[1]
    assert np.abs(stats_var.double().numpy() - var_ref).max() / var_ref.max() <= 1e-3


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_constant_channel_has_zero_variance(layout, dtype):
    x, w, b = _inputs((4, 3, 25), dtype)
    x[:, 1] = 3.25
    x = as_layout(x, layout)
    g = torch.randn(x.shape, dtype=dtype)
    y, mean, var = nb.batch_norm_forward(x, w, b, 1e-5)
    assert var[1] == 0 and mean[1] == 3.25
    assert torch.equal(y[:, 1], torch.full_like(y[:, 1], float(b[1])))
    dx, dw, db = nb.batch_norm_backward(g, x, w, mean, var, 1e-5)
    dx_ref, dw_ref, db_ref = reference.batch_norm_train_backward(_np(g), _np(x), _np(w), 1e-5)
    _check(dx, dx_ref, dtype, "dx")
    _check(dw, dw_ref, dtype, "dweight")
    _check(db, db_ref, dtype, "dbias")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nan_and_inf_propagate_like_the_torch_backend(layout, dtype):
    x, w, b = _inputs((4, 5, 30), dtype)
    x[1, 1, 3] = float("nan")
    x[2, 2, 7] = float("inf")
    x[0, 3, 0] = float("inf")  # inf among the values that set the shift
    x[3, 4, 5], x[0, 4, 9] = float("inf"), float("-inf")
    x = as_layout(x, layout)
    y, mean, var = nb.batch_norm_forward(x, w, b, 1e-5)
    y_ref, mean_ref, var_ref = torch_ref.batch_norm_forward(x, w, b, 1e-5)
    _check(y, y_ref, dtype, "y")  # NaN exactly where the torch backend has NaN
    # Statistics: non-finite in the same channels (torch's Welford turns a mean with an inf
    # into NaN, ours keeps inf; either way the running statistics are not updated).
    for name, a, e in (("mean", mean, mean_ref), ("var", var, var_ref)):
        assert torch.equal(torch.isfinite(a), torch.isfinite(e)), name
        _check(a[torch.isfinite(e)], e[torch.isfinite(e)], dtype, name)
    assert torch.isfinite(y[:, 0]).all() and not torch.isfinite(y[:, 1:]).any()


def test_nothing_else_is_supported():
    from normkit.backends.numba_backend import supports

    assert supports(torch.float32, "cpu") and supports(torch.float64, "cpu")
    assert not supports(torch.float16, "cpu") and not supports(torch.bfloat16, "cpu")
    assert not supports(torch.float32, "meta") and not supports(torch.float32, "cuda")
