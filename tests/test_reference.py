"""The oracle itself: reference backward formulas agree with finite differences of the
reference forward (NumPy only, independent of torch)."""

from __future__ import annotations

import numpy as np
import pytest

from normkit import reference


def numerical_grad(f, x, g, h=1e-6):
    """d/dx of sum(f(x) * g) by central differences."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = (f(x) * g).sum()
        x[i] = old - h
        minus = (f(x) * g).sum()
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


rng = np.random.default_rng(0)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5)])
def test_batch_norm_backward(shape):
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    g = rng.standard_normal(shape)
    dx, dgamma, dbeta = reference.batch_norm_train_backward(g, x, gamma, 1e-5)
    _close(dx, numerical_grad(lambda v: reference.batch_norm_train(v, gamma, beta)[0], x, g))
    _close(dgamma, numerical_grad(lambda v: reference.batch_norm_train(x, v, beta)[0], gamma, g))
    _close(dbeta, numerical_grad(lambda v: reference.batch_norm_train(x, gamma, v)[0], beta, g))


def test_batch_norm_eval_backward():
    x = rng.standard_normal((3, 2, 4))
    mean, var = rng.standard_normal(2), rng.random(2) + 0.5
    gamma, beta = rng.standard_normal(2), rng.standard_normal(2)
    g = rng.standard_normal(x.shape)
    dx, dgamma, _ = reference.batch_norm_eval_backward(g, x, mean, var, gamma)
    _close(dx, numerical_grad(lambda v: reference.batch_norm_eval(v, mean, var, gamma, beta), x, g))
    _close(
        dgamma, numerical_grad(lambda v: reference.batch_norm_eval(x, mean, var, v, beta), gamma, g)
    )


def test_layer_and_rms_norm_backward():
    x = rng.standard_normal((3, 2, 4)) + 0.5
    gamma, beta = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    g = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = reference.layer_norm_backward(g, x, (2, 4), gamma)
    _close(dx, numerical_grad(lambda v: reference.layer_norm(v, (2, 4), gamma, beta), x, g))
    _close(dgamma, numerical_grad(lambda v: reference.layer_norm(x, (2, 4), v, beta), gamma, g))
    _close(dbeta, g.sum(axis=0))
    dx, dgamma = reference.rms_norm_backward(g, x, (2, 4), gamma)
    _close(dx, numerical_grad(lambda v: reference.rms_norm(v, (2, 4), gamma), x, g))
    _close(dgamma, numerical_grad(lambda v: reference.rms_norm(x, (2, 4), v), gamma, g))


def test_group_and_instance_norm_backward():
    x = rng.standard_normal((2, 4, 3)) * 3
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    g = rng.standard_normal(x.shape)
    dx, dgamma, _ = reference.group_norm_backward(g, x, 2, gamma)
    _close(dx, numerical_grad(lambda v: reference.group_norm(v, 2, gamma, beta), x, g))
    _close(dgamma, numerical_grad(lambda v: reference.group_norm(x, 2, v, beta), gamma, g))
    dx, dgamma, _ = reference.instance_norm_backward(g, x, gamma)
    _close(dx, numerical_grad(lambda v: reference.instance_norm(v, gamma, beta), x, g))


def test_running_stats_rule():
    mean, var = np.array([1.0, 2.0]), np.array([4.0, 9.0])
    rm, rv, count = reference.update_running_stats(np.zeros(2), np.ones(2), mean, var, 5, 0.1)
    np.testing.assert_allclose(rm, 0.1 * mean)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * var * 5 / 4)
    assert count == 1
    previous = rm
    rm, rv, count = reference.update_running_stats(rm, rv, mean, var, 5, None, 1)
    np.testing.assert_allclose(rm, (previous + mean) / 2)  # cumulative: factor 1 / 2
    assert count == 2
