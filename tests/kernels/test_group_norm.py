"""GroupNorm / InstanceNorm kernels (through the numba backend) against the NumPy reference."""

from __future__ import annotations

import pytest
import torch

from normkit import reference
from tests.kernels import _torch_reference as torch_ref
from tests.kernels.conftest import TOL, as_layout, numba_ops, rel_err, same_layout

nb = numba_ops
DTYPES = [torch.float32, torch.float64]
CASES = [
    pytest.param((4, 6, 15), 3, id="small"),
    pytest.param((2, 4, 49), 4, id="instance-7x7"),
    pytest.param((1, 8, 40000), 1, id="one-group-one-sample"),  # fewer groups than threads
    pytest.param((1, 6, 30000), 2, id="two-groups-one-sample"),
    pytest.param((3, 8, 1), 2, id="L=1"),
    pytest.param((8, 32, 100), 8, id="many-groups"),
]


def _np(t):
    return None if t is None else t.detach().to(torch.float64).numpy()


def _check(actual, expected, dtype, what):
    err = rel_err(torch.as_tensor(actual), torch.as_tensor(expected))
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize(("shape", "groups"), CASES)
def test_forward_backward_match_reference(shape, groups, layout, affine, dtype, threads):
    x = as_layout((torch.randn(shape, dtype=torch.float64) * 2 + 0.5).to(dtype), layout)
    g = as_layout(torch.randn(shape, dtype=dtype), "contiguous")
    w = torch.randn(shape[1], dtype=dtype) if affine else None
    b = torch.randn(shape[1], dtype=dtype) if affine else None
    y, mean, var = nb.group_norm_forward(x, groups, w, b, 1e-5)
    _check(y, reference.group_norm(_np(x), groups, _np(w), _np(b), 1e-5), dtype, "y")
    _, mean_t, var_t = torch_ref.group_norm_forward(x.double(), groups, None, None, 1e-5)
    assert mean.shape == var.shape == (shape[0], groups) and mean.dtype == dtype
    _check(mean, mean_t, dtype, "mean")
    _check(var, var_t, dtype, "var")
    assert same_layout(y, torch_ref.group_norm_forward(x, groups, w, b, 1e-5)[0])

    dx, dw, db = nb.group_norm_backward(g, x, groups, w, mean, var, 1e-5)
    dx_ref, dw_ref, db_ref = reference.group_norm_backward(_np(g), _np(x), groups, _np(w), 1e-5)
    _check(dx, dx_ref, dtype, "dx")
    assert same_layout(dx, y)
    assert (dw is None) == (w is None)
    if w is not None:
        _check(dw, dw_ref, dtype, "dweight")
    _check(db, db_ref, dtype, "dbias")


@pytest.mark.parametrize(("shape", "groups"), [((4, 8, 500), 2), ((1, 2, 80000), 1)])
def test_large_mean_groups(shape, groups, threads):
    x = (1e4 + torch.randn(shape, dtype=torch.float64)).float()
    y, _, var = nb.group_norm_forward(x, groups, None, None, 1e-5)
    _, _, var_ref = torch_ref.group_norm_forward(x.double(), groups, None, None, 1e-5)
    assert float(((var.double() - var_ref).abs() / var_ref).max()) <= 1e-3
    _check(y, reference.group_norm(_np(x), groups), torch.float32, "y")


def test_constant_and_non_finite_groups():
    x = torch.randn(3, 4, 10)
    x[0, :2] = 1.5  # group (0, 0) constant
    x[1, 2, 4] = float("nan")
    x[2, 0, 0] = float("-inf")
    y, _, var = nb.group_norm_forward(x, 2, None, None, 1e-5)
    y_ref, _, var_ref = torch_ref.group_norm_forward(x, 2, None, None, 1e-5)
    _check(y, y_ref, torch.float32, "y")
    assert var[0, 0] == 0
    assert torch.equal(torch.isfinite(var), torch.isfinite(var_ref))
