"""LayerNorm / RMSNorm row kernels (through the numba backend) against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normkit import reference
from tests.kernels import _torch_reference as torch_ref
from tests.kernels.conftest import TOL, numba_ops, rel_err, same_layout

nb = numba_ops
DTYPES = [torch.float32, torch.float64]
SHAPES = [
    pytest.param((6, 10), id="small"),
    pytest.param((1, 768), id="one-row"),
    pytest.param((3000, 33), id="many-rows"),
    pytest.param((5, 1), id="D=1"),
    pytest.param((2, 70000), id="long-rows"),
]


def _np(t):
    return None if t is None else t.detach().to(torch.float64).numpy()


def _check(actual, expected, dtype, what, floor=0.0):
    err = rel_err(torch.as_tensor(actual), torch.as_tensor(expected), floor)
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e}"


def _reference(x, g, w, b, eps, center):
    d = x.shape[1]
    if center:
        y = reference.layer_norm(_np(x), d, _np(w), _np(b), eps)
        dx, dw, db = reference.layer_norm_backward(_np(g), _np(x), d, _np(w), eps)
    else:
        y = reference.rms_norm(_np(x), d, _np(w), eps)
        dx, dw = reference.rms_norm_backward(_np(g), _np(x), d, _np(w), eps)
        db = _np(g).sum(0)
    return y, dx, dw, db


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("center", [True, False], ids=["layer", "rms"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_backward_match_reference(shape, layout, affine, center, dtype, threads):
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 0.5).to(dtype)
    if layout == "transposed":
        x = x.t().contiguous().t()
    elif layout == "strided":
        x = torch.cat([x, x], 1)[:, : shape[1]]
    g = torch.randn(shape, dtype=dtype)
    w = torch.randn(shape[1], dtype=dtype) if affine else None
    b = torch.randn(shape[1], dtype=dtype) if affine and center else None
    eps = 1e-5
    y, mean, var = nb.row_norm_forward(x, w, b, eps, center)
    y_ref, dx_ref, dw_ref, db_ref = _reference(x, g, w, b, eps, center)
    _check(y, y_ref, dtype, "y")
    torch_y, torch_mean, torch_var = torch_ref.row_norm_forward(x, w, b, eps, center)
    assert same_layout(y, torch_y) and y.dtype == dtype
    _check(mean, torch_ref.row_norm_forward(x.double(), None, None, eps, center)[1], dtype, "mean")
    _check(var, torch_ref.row_norm_forward(x.double(), None, None, eps, center)[2], dtype, "var")
    assert mean.dtype == var.dtype == dtype == torch_mean.dtype == torch_var.dtype

    dx, dw, db = nb.row_norm_backward(g, x, w, mean, var, eps, center)
    # Scale of the terms of dx (they cancel exactly when D = 1).
    floor = float((g if w is None else g * w).abs().max() * torch.rsqrt(var.double() + eps).max())
    _check(dx, dx_ref, dtype, "dx", floor)
    assert same_layout(dx, y)
    assert (dw is None) == (w is None)
    if w is not None:
        _check(dw, dw_ref, dtype, "dweight")
    _check(db, db_ref, dtype, "dbias")


@pytest.mark.parametrize("center", [True, False], ids=["layer", "rms"])
def test_large_mean_rows(center, threads):
    x64 = 1e4 + torch.randn(64, 512, dtype=torch.float64)
    x = x64.float()
    y, mean, var = nb.row_norm_forward(x, None, None, 1e-5, center)
    _, ref_mean, ref_var = torch_ref.row_norm_forward(x.double(), None, None, 1e-5, center)
    assert float(((var.double() - ref_var).abs() / ref_var).max()) <= 1e-3
    _check(mean, ref_mean, torch.float32, "mean")
    expected = reference.layer_norm(_np(x), 512) if center else reference.rms_norm(_np(x), 512)
    _check(y, expected, torch.float32, "y")


def test_constant_row_and_non_finite_rows():
    x = torch.randn(4, 16)
    x[0] = 2.5  # constant row: variance 0, output 0 (LayerNorm) / 1/sqrt(1 + eps/6.25) (RMS)
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    for center in (True, False):
        y, _, var = nb.row_norm_forward(x, None, None, 1e-5, center)
        y_ref, _, var_ref = torch_ref.row_norm_forward(x, None, None, 1e-5, center)
        _check(y, y_ref, torch.float32, "y")
        assert torch.equal(torch.isfinite(var), torch.isfinite(var_ref))
        if center:
            assert var[0] == 0 and torch.equal(y[0], torch.zeros(16))
        assert torch.isfinite(y[3]).all()


def test_mean_square_is_exact_for_rms():
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    _, mean, var = nb.row_norm_forward(x, None, None, 0.0, False)
    assert mean.item() == 0 and var.item() == 12.5
    assert np.isclose(nb.row_norm_forward(x, None, None, 0.0, True)[2].item(), 0.25)
