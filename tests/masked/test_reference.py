"""The masked formulas of normkit.reference: backward vs finite differences of the forward,
padded positions exactly 0, and an all-valid mask giving the unmasked formulas."""

from __future__ import annotations

import numpy as np
import pytest

from normkit import reference as R
from tests.test_reference import numerical_grad

rng = np.random.default_rng(0)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _mask(shape):
    mask = rng.random(shape) < 0.6
    mask.reshape(shape[0], -1)[:, :2] = True
    return mask


@pytest.mark.parametrize("shape", [(4, 3, 5), (3, 2, 2, 3), (5, 3)])
def test_masked_batch_norm_backward(shape):
    x = rng.standard_normal(shape) * 2 + 1
    mask = _mask((shape[0], *shape[2:]))
    gamma, beta, g = (
        rng.standard_normal(shape[1]),
        rng.standard_normal(shape[1]),
        rng.standard_normal(shape),
    )
    dx, dgamma, dbeta = R.masked_batch_norm_train_backward(g, x, mask, gamma)
    _close(dx, numerical_grad(lambda v: R.masked_batch_norm_train(v, mask, gamma, beta)[0], x, g))
    _close(
        dgamma, numerical_grad(lambda v: R.masked_batch_norm_train(x, mask, v, beta)[0], gamma, g)
    )
    _close(
        dbeta, numerical_grad(lambda v: R.masked_batch_norm_train(x, mask, gamma, v)[0], beta, g)
    )
    pads = ~np.broadcast_to(np.expand_dims(mask, 1), x.shape)
    assert (R.masked_batch_norm_train(x, mask, gamma, beta)[0][pads] == 0).all()
    assert (dx[pads] == 0).all()


def test_masked_batch_norm_eval_backward():
    x, mask = rng.standard_normal((3, 2, 6)), _mask((3, 6))
    mean, var = rng.standard_normal(2), rng.random(2) + 0.5
    gamma, beta, g = rng.standard_normal(2), rng.standard_normal(2), rng.standard_normal(x.shape)
    dx, dgamma, _ = R.masked_batch_norm_eval_backward(g, x, mask, mean, var, gamma)
    forward = R.masked_batch_norm_eval
    _close(dx, numerical_grad(lambda v: forward(v, mask, mean, var, gamma, beta), x, g))
    _close(dgamma, numerical_grad(lambda v: forward(x, mask, mean, var, v, beta), gamma, g))


def test_masked_instance_and_group_norm_backward():
    x, mask = rng.standard_normal((3, 4, 6)) * 3, _mask((3, 6))
    mask[1] = False  # an empty sample: zeros, no gradient
    gamma, beta, g = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(x.shape)
    forward = R.masked_group_norm
    for groups in (1, 2, 4):
        dx, dgamma, dbeta = R.masked_group_norm_backward(g, x, mask, groups, gamma)
        _close(dx, numerical_grad(lambda v, k=groups: forward(v, mask, k, gamma, beta), x, g))
        _close(dgamma, numerical_grad(lambda v, k=groups: forward(x, mask, k, v, beta), gamma, g))
        _close(dbeta, numerical_grad(lambda v, k=groups: forward(x, mask, k, gamma, v), beta, g))
        assert (forward(x, mask, groups, gamma, beta)[1] == 0).all()
    dx, dgamma, _ = R.masked_instance_norm_backward(g, x, mask, gamma)
    _close(dx, numerical_grad(lambda v: R.masked_instance_norm(v, mask, gamma, beta), x, g))
    _close(dgamma, numerical_grad(lambda v: R.masked_instance_norm(x, mask, v, beta), gamma, g))
    _close(
        R.masked_instance_norm(x, mask, gamma, beta), R.masked_group_norm(x, mask, 4, gamma, beta)
    )


def test_all_valid_mask_is_the_unmasked_formula():
    x = rng.standard_normal((3, 4, 5)) + 2
    mask = np.ones((3, 5), dtype=bool)
    gamma, beta, g = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(x.shape)
    y, mean, var, n = R.masked_batch_norm_train(x, mask, gamma, beta)
    y0, mean0, var0 = R.batch_norm_train(x, gamma, beta)
    _close(y, y0)
    _close(mean, mean0)
    _close(var, var0)
    assert n == 15
    for got, want in zip(
        R.masked_batch_norm_train_backward(g, x, mask, gamma),
        R.batch_norm_train_backward(g, x, gamma),
        strict=True,
    ):
        _close(got, want)
    _close(R.masked_group_norm(x, mask, 2, gamma, beta), R.group_norm(x, 2, gamma, beta))
    _close(R.masked_instance_norm(x, mask, gamma, beta), R.instance_norm(x, gamma, beta))


def test_lengths_to_mask():
    assert R.lengths_to_mask([3, 1, 0], 4).tolist() == [
        [True, True, True, False],
        [True, False, False, False],
        [False, False, False, False],
    ]
    assert R.lengths_to_mask([2, 3]).shape == (2, 3)
