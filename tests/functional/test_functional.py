"""normkit.functional against torch.nn.functional and against the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import normkit.functional as nkf
from normkit import reference
from tests.conftest import assert_close

DTYPES = [torch.float32, torch.float64]


def _params(channels, dtype, affine=True):
    if not affine:
        return None, None
    return (
        torch.randn(channels, dtype=dtype, requires_grad=True),
        torch.randn(channels, dtype=dtype, requires_grad=True),
    )


def _grads(fn, inputs, grad_out):
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    out = fn()
    return out, torch.autograd.grad(out, wanted, grad_out)


def _compare(ours_fn, torch_fn, inputs, dtype):
    """Each function is called once (they may update running statistics)."""
    grad_out = torch.randn_like(inputs[0])
    y_ref, g_ref = _grads(torch_fn, inputs, grad_out)
    y_ours, g_ours = _grads(ours_fn, inputs, grad_out)
    assert_close(y_ours, y_ref, dtype, what="output")
    for i, (a, b) in enumerate(zip(g_ours, g_ref, strict=True)):
        assert_close(a, b, dtype, what=f"grad {i}", floor=grad_out.abs().max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (3, 3, 4, 5), (2, 3, 2, 3, 4)])
def test_batch_norm_matches_torch(backend, dtype, training, affine, shape):
    x = (torch.randn(shape, dtype=dtype) * 3 + 2).requires_grad_()
    weight, bias = _params(shape[1], dtype, affine)
    rm_ref, rv_ref = torch.randn(shape[1], dtype=dtype), torch.rand(shape[1], dtype=dtype) + 0.5
    rm_ours, rv_ours = rm_ref.clone(), rv_ref.clone()

    def ours():
        return nkf.batch_norm(x, rm_ours, rv_ours, weight, bias, training, 0.3, 1e-3)

    def theirs():
        return F.batch_norm(x, rm_ref, rv_ref, weight, bias, training, 0.3, 1e-3)

    _compare(ours, theirs, (x, weight, bias), dtype)
    assert_close(rm_ours, rm_ref, dtype, what="running_mean")
    assert_close(rv_ours, rv_ref, dtype, what="running_var")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5), (3, 3, 4, 5)])
def test_instance_norm_matches_torch(backend, dtype, use_input_stats, shape):
    x = (torch.randn(shape, dtype=dtype) * 3 + 2).requires_grad_()
    weight, bias = _params(shape[1], dtype)
    rm_ref, rv_ref = torch.randn(shape[1], dtype=dtype), torch.rand(shape[1], dtype=dtype) + 0.5
    rm_ours, rv_ours = rm_ref.clone(), rv_ref.clone()

    def ours():
        return nkf.instance_norm(x, rm_ours, rv_ours, weight, bias, use_input_stats, 0.3, 1e-5)

    def theirs():
        return F.instance_norm(x, rm_ref, rv_ref, weight, bias, use_input_stats, 0.3, 1e-5)

    _compare(ours, theirs, (x, weight, bias), dtype)
    assert_close(rm_ours, rm_ref, dtype, what="running_mean")
    assert_close(rv_ours, rv_ref, dtype, what="running_var")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalized_shape", [(7,), (3, 7)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(backend, dtype, normalized_shape, affine):
    x = (torch.randn(4, 3, 7, dtype=dtype) * 2 - 1).requires_grad_()
    weight = torch.randn(normalized_shape, dtype=dtype, requires_grad=True) if affine else None
    bias = torch.randn(normalized_shape, dtype=dtype, requires_grad=True) if affine else None
    _compare(
        lambda: nkf.layer_norm(x, normalized_shape, weight, bias, 1e-5),
        lambda: F.layer_norm(x, normalized_shape, weight, bias, 1e-5),
        (x, weight, bias),
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("affine", [True, False])
def test_rms_norm_matches_torch(backend, dtype, eps, affine):
    x = (torch.randn(5, 2, 8, dtype=dtype) * 2 + 1).requires_grad_()
    weight = torch.randn(8, dtype=dtype, requires_grad=True) if affine else None
    _compare(
        lambda: nkf.rms_norm(x, (8,), weight, eps),
        lambda: F.rms_norm(x, (8,), weight, eps),
        (x, weight),
        dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("groups", "shape"), [(1, (2, 6, 5)), (3, (3, 6, 4, 5)), (6, (2, 6, 7))])
def test_group_norm_matches_torch(backend, dtype, groups, shape):
    x = (torch.randn(shape, dtype=dtype) * 3 + 2).requires_grad_()
    weight, bias = _params(shape[1], dtype)
    _compare(
        lambda: nkf.group_norm(x, groups, weight, bias, 1e-5),
        lambda: F.group_norm(x, groups, weight, bias, 1e-5),
        (x, weight, bias),
        dtype,
    )


# ---------------------------------------------------------------------------------------
# Against the NumPy reference (float64).


def _np(t):
    return None if t is None else t.detach().numpy()


def test_batch_norm_train_matches_reference(backend):
    x = torch.randn(4, 3, 5, 2, dtype=torch.float64, requires_grad=True)
    weight, bias = _params(3, torch.float64)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    y = nkf.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.2, eps=1e-5)
    g = torch.randn_like(y)
    dx, dw, db = torch.autograd.grad(y, (x, weight, bias), g)
    y_ref, mean, var = reference.batch_norm_train(_np(x), _np(weight), _np(bias), 1e-5)
    dx_ref, dw_ref, db_ref = reference.batch_norm_train_backward(_np(g), _np(x), _np(weight), 1e-5)
    rm_ref, rv_ref, _ = reference.update_running_stats(
        np.zeros(3), np.ones(3), mean, var, n=4 * 5 * 2, momentum=0.2
    )
    for ours, ref in (
        (y, y_ref),
        (dx, dx_ref),
        (dw, dw_ref),
        (db, db_ref),
        (rm, rm_ref),
        (rv, rv_ref),
    ):
        assert_close(ours, torch.from_numpy(ref), torch.float64)


def test_batch_norm_eval_matches_reference(backend):
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    weight, bias = _params(3, torch.float64)
    rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.1
    y = nkf.batch_norm(x, rm, rv, weight, bias, training=False, eps=1e-5)
    g = torch.randn_like(y)
    dx, dw, db = torch.autograd.grad(y, (x, weight, bias), g)
    y_ref = reference.batch_norm_eval(_np(x), _np(rm), _np(rv), _np(weight), _np(bias), 1e-5)
    grads_ref = reference.batch_norm_eval_backward(
        _np(g), _np(x), _np(rm), _np(rv), _np(weight), 1e-5
    )
    assert_close(y, torch.from_numpy(y_ref), torch.float64)
    for ours, ref in zip((dx, dw, db), grads_ref, strict=True):
        assert_close(ours, torch.from_numpy(ref), torch.float64)


def test_momentum_none_is_cumulative_average():
    rm, rv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    count = torch.tensor(0)
    batches = [torch.randn(6, 2, dtype=torch.float64) * (i + 1) + i for i in range(4)]
    for batch in batches:
        nkf.batch_norm(batch, rm, rv, training=True, momentum=None, num_batches_tracked=count)
    assert int(count) == 4
    means = torch.stack([b.mean(0) for b in batches])
    variances = torch.stack([b.var(0, unbiased=True) for b in batches])
    assert_close(rm, means.mean(0), torch.float64)
    assert_close(rv, variances.mean(0), torch.float64)
