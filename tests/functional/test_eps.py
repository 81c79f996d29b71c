"""Where eps goes: ``(x - mean) / sqrt(var + eps)`` (``x / sqrt(mean(x^2) + eps)`` for RMSNorm),
forward and backward, on both backends, against normkit.reference in float64.

The contract tests run with the default eps (1e-5), where ``sqrt(var) + eps``,
``sqrt(var + eps^2)`` or a dropped eps change the result by less than their tolerance. Here
eps is of the order of the variance (0.7 against variances 0.25 and 4), so each of those
mistakes moves the output and the gradients by tens of percent. Each shape below takes a
different kernel path (long NCHW planes, short planes as rows, channels_last, rows), and
one shape per op is large enough to run on two kernel threads (the kernels take other
branches when a call has fewer groups or rows than threads).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normkit.functional as nkf
from normkit import reference
from tests.conftest import assert_close
from tests.kernels.conftest import torch_threads

EPS = 0.7
F64 = torch.float64
BACKENDS = ["numba", "torch"]
SCALES = [0.5, 2.0]  # variance 0.25 (eps dominates) and 4 (the variance dominates)


@pytest.fixture(autouse=True)
def two_threads():
    """Two torch (hence kernel) threads: a call over at least 2 * 32768 values splits."""
    with torch_threads(2):
        yield


def _data(shape, scale, param_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale + 0.3
    return x, rng.standard_normal(param_shape), rng.standard_normal(param_shape), rng


def _leaf(a, channels_last=False):
    t = torch.from_numpy(np.ascontiguousarray(a))
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_()


def _check(y, inputs, y_ref, grads_ref, g):
    assert_close(y, torch.from_numpy(y_ref), F64, what="output")
    grads = torch.autograd.grad(y, inputs, torch.from_numpy(g))
    for name, got, want in zip(("input", "weight", "bias"), grads, grads_ref, strict=False):
        assert_close(got, torch.from_numpy(want), F64, what=f"grad {name}", floor=abs(g).max())


BN_SHAPES = [
    pytest.param((2, 3, 12000), False, id="two-threads"),
    pytest.param((4, 3, 50), False, id="ncl-long-planes"),
    pytest.param((5, 3, 2, 3), False, id="short-planes"),
    pytest.param((3, 3, 4, 5), True, id="channels_last"),
    pytest.param((6, 3), False, id="no-length"),
    pytest.param((24000, 3), False, id="no-length-two-threads"),
    pytest.param((1024, 96), False, id="wide-rows-two-threads"),  # column blocks per thread
]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("shape", "channels_last"), BN_SHAPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_train_eps(backend, shape, channels_last, scale):
    x, w, b, rng = _data(shape, scale, shape[1])
    xt, wt, bt = _leaf(x, channels_last), _leaf(w), _leaf(b)
    c = shape[1]
    running_mean, running_var = torch.zeros(c, dtype=F64), torch.ones(c, dtype=F64)
    y = nkf.batch_norm(
        xt, running_mean, running_var, wt, bt, training=True, eps=EPS, backend=backend
    )
    y_ref, mean, var = reference.batch_norm_train(x, w, b, EPS)
    g = rng.standard_normal(shape)
    _check(y, (xt, wt, bt), y_ref, reference.batch_norm_train_backward(g, x, w, EPS), g)
    # eps is not part of the running statistics (torch: unbiased batch variance).
    count = x.size // shape[1]
    assert_close(running_mean, torch.from_numpy(0.1 * mean), F64)
    assert_close(running_var, torch.from_numpy(0.9 + 0.1 * var * count / (count - 1)), F64)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("shape", "channels_last"), BN_SHAPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_eval_eps(backend, shape, channels_last, scale):
    x, w, b, rng = _data(shape, scale, shape[1])
    running_mean = rng.standard_normal(shape[1])
    running_var = rng.uniform(0.1, 3.0, shape[1])
    xt, wt, bt = _leaf(x, channels_last), _leaf(w), _leaf(b)
    rm, rv = torch.from_numpy(running_mean), torch.from_numpy(running_var)
    y = nkf.batch_norm(xt, rm, rv, wt, bt, training=False, eps=EPS, backend=backend)
    y_ref = reference.batch_norm_eval(x, running_mean, running_var, w, b, EPS)
    g = rng.standard_normal(shape)
    grads_ref = reference.batch_norm_eval_backward(g, x, running_mean, running_var, w, EPS)
    _check(y, (xt, wt, bt), y_ref, grads_ref, g)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", [(2, 3, 50), (3, 3, 2, 3), (1, 2, 40000)], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_instance_norm_eps(backend, shape, scale):
    x, w, b, rng = _data(shape, scale, shape[1])
    xt, wt, bt = _leaf(x), _leaf(w), _leaf(b)
    y = nkf.instance_norm(xt, weight=wt, bias=bt, eps=EPS, backend=backend)
    g = rng.standard_normal(shape)
    grads_ref = reference.instance_norm_backward(g, x, w, EPS)
    _check(y, (xt, wt, bt), reference.instance_norm(x, w, b, EPS), grads_ref, g)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(
    ("shape", "groups"), [((2, 6, 40), 2), ((3, 4, 2, 3), 4), ((2, 6), 3), ((1, 4, 20000), 1)]
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_group_norm_eps(backend, shape, groups, scale):
    x, w, b, rng = _data(shape, scale, shape[1])
    xt, wt, bt = _leaf(x), _leaf(w), _leaf(b)
    y = nkf.group_norm(xt, groups, wt, bt, EPS, backend=backend)
    g = rng.standard_normal(shape)
    grads_ref = reference.group_norm_backward(g, x, groups, w, EPS)
    _check(y, (xt, wt, bt), reference.group_norm(x, groups, w, b, EPS), grads_ref, g)


ROW_SHAPES = [
    pytest.param((5, 8), id="short-rows"),
    pytest.param((3, 2, 300), id="long-rows"),
    pytest.param((2, 40000), id="two-threads"),
]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_norm_eps(backend, shape, scale):
    x, w, b, rng = _data(shape, scale, shape[-1:])
    xt, wt, bt = _leaf(x), _leaf(w), _leaf(b)
    y = nkf.layer_norm(xt, shape[-1:], wt, bt, EPS, backend=backend)
    g = rng.standard_normal(shape)
    grads_ref = reference.layer_norm_backward(g, x, shape[-1:], w, EPS)
    _check(y, (xt, wt, bt), reference.layer_norm(x, shape[-1:], w, b, EPS), grads_ref, g)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_rms_norm_eps(backend, shape, scale):
    x, w, _, rng = _data(shape, scale, shape[-1:])
    xt, wt = _leaf(x), _leaf(w)
    y = nkf.rms_norm(xt, shape[-1:], wt, EPS, backend=backend)
    g = rng.standard_normal(shape)
    grads_ref = reference.rms_norm_backward(g, x, shape[-1:], w, EPS)
    _check(y, (xt, wt), reference.rms_norm(x, shape[-1:], w, EPS), grads_ref, g)
