"""Statistics and outputs computed with plain torch ops, for the kernel tests to compare with
(the layouts are torch's own: ``torch.nn.functional``'s outputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_norm_forward(x, w, b, eps):
    """``(y, mean, var)`` of training BatchNorm over ``x (N, C, *)`` (biased variance)."""
    dims = (0, *range(2, x.dim()))
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    y = F.batch_norm(x, None, None, w, b, training=True, eps=eps)
    return y, mean, var


def group_norm_forward(x, groups, w, b, eps):
    """``(y, mean (N, G), var (N, G))``."""
    n = x.shape[0]
    var, mean = torch.var_mean(x.reshape(n, groups, -1), dim=2, correction=0)
    return F.group_norm(x, groups, w, b, eps), mean, var


def row_norm_forward(x, w, b, eps, center):
    """``(y, mean (R,), var (R,))``; RMS: mean 0 and var the mean square."""
    d = x.shape[-1]
    if center:
        var, mean = torch.var_mean(x, dim=-1, correction=0)
        return F.layer_norm(x, (d,), w, b, eps), mean, var
    var = x.square().mean(-1)
    return F.rms_norm(x, (d,), w, eps), torch.zeros_like(var), var
