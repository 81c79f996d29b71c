"""The numba backend's registered ops (``torch.ops.normkit.*``), called with the argument
lists of :mod:`normkit.reference` so the kernel tests read like the formulas they check.

Each function is one op call: nothing here computes anything itself.
"""

from __future__ import annotations

import torch

import normkit.backends.numba_backend  # noqa: F401  (registers the ops)

ops = torch.ops.normkit


def _param_grad(grad, param):
    return None if param is None else grad


def batch_norm_forward(x, w, b, eps, act="identity", slope=0.01):
    return ops.batch_norm_forward(x, w, b, None, None, None, None, eps, act, slope, "test")


def batch_norm_backward(g, x, w, mean, var, eps, b=None, act="identity", slope=0.01):
    dx, dw, db = ops.batch_norm_backward(g, x, w, b, mean, var, eps, act, slope, True)
    return dx, _param_grad(dw, w), db


def batch_norm_eval_forward(x, running_mean, running_var, w, b, eps, act="identity", slope=0.01):
    return ops.batch_norm_eval_forward(x, w, b, running_mean, running_var, eps, act, slope)


def batch_norm_eval_backward(
    g, x, running_mean, running_var, w, eps, b=None, act="identity", slope=0.01
):
    dx, dw, db = ops.batch_norm_backward(
        g, x, w, b, running_mean, running_var, eps, act, slope, False
    )
    return dx, _param_grad(dw, w), db


def batch_norm_stats(x):
    return ops.bn_stats(x)


def batch_norm_elemt(x, mean, invstd, w, b, act="identity", negative_slope=0.01):
    return ops.bn_elemt(x, mean, invstd, w, b, act, negative_slope)


def batch_norm_backward_reduce(g, x, mean, invstd, w, b, act="identity", negative_slope=0.01):
    return ops.bn_backward_reduce(g, x, mean, invstd, w, b, act, negative_slope)


def batch_norm_backward_elemt(
    g, x, mean, invstd, w, b, sum_dy, sum_dy_xhat, count, act="identity", negative_slope=0.01
):
    return ops.bn_backward_elemt(
        g, x, mean, invstd, w, b, sum_dy, sum_dy_xhat, count, act, negative_slope
    )


def group_norm_forward(x, groups, w, b, eps):
    return ops.group_norm_forward(x, groups, w, b, eps)


def group_norm_backward(g, x, groups, w, mean, var, eps):
    dx, dw, db = ops.group_norm_backward(g, x, groups, w, mean, var, eps)
    return dx, _param_grad(dw, w), db


def row_norm_forward(x, w, b, eps, center):
    return ops.row_norm_forward(x, x.shape[-1], w, b, eps, center)


def row_norm_backward(g, x, w, mean, var, eps, center):
    dx, dw, db = ops.row_norm_backward(g, x, x.shape[-1], w, mean, var, eps, center)
    return dx, _param_grad(dw, w), db
