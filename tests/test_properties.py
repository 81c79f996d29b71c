"""Property and metamorphic tests (Hypothesis) against normkit.reference, plus equivalences."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import normkit.functional as nkf
from normkit import reference
from tests.conftest import assert_close

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
F64 = torch.float64


@st.composite
def tensors(draw, min_rank=2, max_rank=5, min_size=1, max_size=5):
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(st.integers(min_size, max_size)) for _ in range(rank))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-2, 1.0, 30.0]))
    offset = draw(st.sampled_from([0.0, 3.0, -100.0]))
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * scale + offset, rng


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_()


def _check(ours_y, ours_inputs, ref_y, ref_grads, g):
    assert_close(ours_y, torch.from_numpy(ref_y), F64, what="output")
    grads = torch.autograd.grad(ours_y, ours_inputs, torch.from_numpy(g))
    for i, (a, e) in enumerate(zip(grads, ref_grads, strict=True)):
        assert_close(a, torch.from_numpy(e), F64, what=f"grad {i}", floor=np.abs(g).max())


@SETTINGS
@given(tensors(), st.floats(1e-5, 1e-1))
def test_batch_norm_train_matches_reference(data, eps):
    x, rng = data
    if x.size // x.shape[1] < 2:
        return  # one value per channel: refused in training (tested elsewhere)
    gamma, beta = rng.standard_normal(x.shape[1]), rng.standard_normal(x.shape[1])
    xt, wt, bt = _t(x), _t(gamma), _t(beta)
    y = nkf.batch_norm(xt, None, None, wt, bt, training=True, eps=eps)
    y_ref, _, _ = reference.batch_norm_train(x, gamma, beta, eps)
    g = rng.standard_normal(x.shape)
    _check(y, (xt, wt, bt), y_ref, reference.batch_norm_train_backward(g, x, gamma, eps), g)


@SETTINGS
@given(tensors(min_rank=2, max_rank=4), st.integers(1, 3))
def test_layer_norm_matches_reference(data, k):
    x, rng = data
    k = min(k, x.ndim)
    shape = x.shape[-k:]
    gamma, beta = rng.standard_normal(shape), rng.standard_normal(shape)
    xt, wt, bt = _t(x), _t(gamma), _t(beta)
    y = nkf.layer_norm(xt, shape, wt, bt, 1e-5)
    g = rng.standard_normal(x.shape)
    ref = reference.layer_norm_backward(g, x, shape, gamma, 1e-5)
    _check(y, (xt, wt, bt), reference.layer_norm(x, shape, gamma, beta, 1e-5), ref, g)


@SETTINGS
@given(tensors(min_rank=2, max_rank=4))
def test_rms_norm_matches_reference(data):
    x, rng = data
    shape = x.shape[-1:]
    gamma = rng.standard_normal(shape)
    xt, wt = _t(x), _t(gamma)
    y = nkf.rms_norm(xt, shape, wt, 1e-6)
    g = rng.standard_normal(x.shape)
    ref = reference.rms_norm_backward(g, x, shape, gamma, 1e-6)
    _check(y, (xt, wt), reference.rms_norm(x, shape, gamma, 1e-6), ref, g)


@SETTINGS
@given(tensors(min_rank=2, max_rank=4), st.sampled_from([1, 2, 3]))
def test_group_norm_matches_reference(data, groups_per):
    x, rng = data
    channels = x.shape[1] * groups_per  # make the channel count divisible
    x = np.concatenate([x] * groups_per, axis=1) + rng.standard_normal((1, channels, *x.shape[2:]))
    groups = groups_per
    if x.shape[0] * channels // groups * int(np.prod(x.shape[2:])) == 1:
        return
    gamma, beta = rng.standard_normal(channels), rng.standard_normal(channels)
    xt, wt, bt = _t(x), _t(gamma), _t(beta)
    y = nkf.group_norm(xt, groups, wt, bt, 1e-5)
    g = rng.standard_normal(x.shape)
    ref = reference.group_norm_backward(g, x, groups, gamma, 1e-5)
    _check(y, (xt, wt, bt), reference.group_norm(x, groups, gamma, beta, 1e-5), ref, g)


@SETTINGS
@given(tensors(min_rank=3, max_rank=5, min_size=2))
def test_instance_norm_matches_reference(data):
    x, rng = data
    gamma, beta = rng.standard_normal(x.shape[1]), rng.standard_normal(x.shape[1])
    xt, wt, bt = _t(x), _t(gamma), _t(beta)
    y = nkf.instance_norm(xt, weight=wt, bias=bt)
    g = rng.standard_normal(x.shape)
    ref = reference.instance_norm_backward(g, x, gamma, 1e-5)
    _check(y, (xt, wt, bt), reference.instance_norm(x, gamma, beta, 1e-5), ref, g)


@SETTINGS
@given(tensors(min_size=2))
def test_batch_norm_output_moments_are_zero_and_one(data):
    x, _ = data
    y = nkf.batch_norm(torch.from_numpy(x), None, None, training=True, eps=0.0 + 1e-12)
    axes = (0, *range(2, x.ndim))
    var = x.var(axis=axes)
    y = y.numpy()
    assert np.abs(y.mean(axis=axes)).max() < 1e-8
    nonconstant = var > 1e-12 * np.maximum(np.abs(x).max(), 1) ** 2
    assert np.abs(y.var(axis=axes)[nonconstant] - 1).max(initial=0) < 1e-6


@SETTINGS
@given(tensors(min_rank=3, max_rank=4, min_size=2))
def test_group_norm_equivalences(data):
    """GN(1) == LN over (C, *) ; GN(C) == IN ; RMS == LN on zero-mean rows."""
    x, _ = data
    t = torch.from_numpy(x)
    assert_close(nkf.group_norm(t, 1), nkf.layer_norm(t, t.shape[1:]), F64)
    assert_close(nkf.group_norm(t, t.shape[1]), nkf.instance_norm(t), F64)
    centered = t - t.mean(-1, keepdim=True)
    assert_close(
        nkf.rms_norm(centered, t.shape[-1:], eps=1e-5), nkf.layer_norm(centered, t.shape[-1:]), F64
    )


@SETTINGS
@given(st.lists(st.integers(2, 9), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_running_stats_follow_the_reference_rule(batch_sizes, seed):
    rng = np.random.default_rng(seed)
    rm, rv = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
    count = torch.tensor(0)
    ref = (np.zeros(3), np.ones(3), 0)
    for i, n in enumerate(batch_sizes):
        momentum = None if i % 2 else 0.3
        x = rng.standard_normal((n, 3)) * (i + 1) + i
        nkf.batch_norm(
            torch.from_numpy(x), rm, rv, training=True, momentum=momentum, num_batches_tracked=count
        )
        _, mean, var = reference.batch_norm_train(x)
        ref = reference.update_running_stats(ref[0], ref[1], mean, var, n, momentum, ref[2])
    assert_close(rm, torch.from_numpy(ref[0]), F64)
    assert_close(rv, torch.from_numpy(ref[1]), F64)
    assert int(count) == ref[2]
