"""gradcheck and gradgradcheck in float64 through each functional form, on both backends
(the numba backend's double backward differentiates the torch formulation), and the
NumPy reference's backward against central differences of its own forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normkit.functional as F
from normkit import reference_batch_free as R

F64 = torch.float64
C = 4


def _param(scale=0.4, offset=0.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (offset + scale * torch.randn(C, generator=gen, dtype=F64)).requires_grad_(True)


def _x(shape=(2, C, 3, 4), seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=F64) * 1.2 + 0.3).requires_grad_(True)


# name -> (function of (x, *params), params)
def _cases():
    w, b, tau, v = _param(offset=1.0), _param(seed=1), _param(seed=2), _param(offset=1.0, seed=3)
    running_var = torch.rand(C, dtype=F64) + 0.5
    return {
        "frn_tlu": (lambda x, w, b, t: F.filter_response_norm(x, w, b, t), (w, b, tau)),
        "frn_silu": (lambda x, w, b: F.filter_response_norm(x, w, b, act="silu"), (w, b)),
        "frn_gelu": (lambda x, w, b: F.filter_response_norm(x, w, b, act="gelu"), (w, b)),
        "evo_b0_train": (
            lambda x, v, w, b: F.evo_norm_b0(x, None, v, w, b, training=True),
            (v, w, b),
        ),
        "evo_b0_eval": (
            lambda x, v, w, b: F.evo_norm_b0(x, running_var, v, w, b, training=False),
            (v, w, b),
        ),
        "evo_s0": (lambda x, v, w, b: F.evo_norm_s0(x, 2, v, w, b), (v, w, b)),
        "evo_s0_no_gate": (lambda x, w, b: F.evo_norm_s0(x, 2, None, w, b, eps=1e-3), (w, b)),
        "grn": (lambda x, w, b: F.global_response_norm(x, w, b), (w, b)),
        "grn_channels_last": (
            lambda x, w, b: F.global_response_norm(x.movedim(1, -1), w, b, channels_last=True),
            (w, b),
        ),
        "rms2d": (lambda x, w: F.rms_norm2d(x, w), (w,)),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_gradcheck_and_gradgradcheck(name, backend):
    fn, params = _cases()[name]
    x = _x()
    assert torch.autograd.gradcheck(fn, (x, *params))
    assert torch.autograd.gradgradcheck(fn, (x, *params))


def test_gradcheck_channels_last_input(backend):
    x = _x((2, C, 3, 3)).detach().contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w, b = _param(offset=1.0), _param(seed=1)
    for fn in (
        lambda x, w, b: F.filter_response_norm(x, w, b, act="relu"),
        lambda x, w, b: F.evo_norm_s0(x, 2, w, w, b),
        lambda x, w, b: F.global_response_norm(x, w, b),
        lambda x, w, b: F.rms_norm2d(x, w) + b.reshape(-1, 1, 1),
    ):
        assert torch.autograd.gradcheck(fn, (x, w, b))


# ---------------------------------------------------------------------------------------
# The reference's own backward formulas against its forward (central differences).


def _directional(forward, args, index, direction, h=1e-6):
    plus = list(args)
    minus = list(args)
    plus[index] = args[index] + h * direction
    minus[index] = args[index] - h * direction
    return (forward(*plus) - forward(*minus)) / (2 * h)


REFERENCE = {
    "frn_tlu": (
        lambda x, w, b, t: R.filter_response_norm(x, w, b, t),
        lambda g, x, w, b, t: R.filter_response_norm_backward(g, x, w, b, t),
    ),
    "frn_gelu": (
        lambda x, w, b: R.filter_response_norm(x, w, b, act="gelu"),
        lambda g, x, w, b: R.filter_response_norm_backward(g, x, w, b, act="gelu")[:3],
    ),
    "evo_b0_train": (
        lambda x, v, w, b: R.evo_norm_b0(x, R.evo_norm_b0_batch_var(x), v, w, b),
        lambda g, x, v, w, b: R.evo_norm_b0_backward(g, x, R.evo_norm_b0_batch_var(x), v, w, b),
    ),
    "evo_s0": (
        lambda x, v, w, b: R.evo_norm_s0(x, 2, v, w, b),
        lambda g, x, v, w, b: R.evo_norm_s0_backward(g, x, 2, v, w, b),
    ),
    "grn": (
        lambda x, w, b: R.global_response_norm(x, w, b),
        lambda g, x, w, b: R.global_response_norm_backward(g, x, w, b),
    ),
    "rms2d": (
        lambda x, w: R.rms_norm2d(x, w),
        lambda g, x, w: R.rms_norm2d_backward(g, x, w),
    ),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_backward_matches_finite_differences(name):
    forward, backward = REFERENCE[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, C, 3, 4)) * 1.2 + 0.3
    n_params = forward.__code__.co_argcount - 1
    params = [1.0 + 0.4 * rng.standard_normal(C) for _ in range(n_params)]
    args = [x, *params]
    g = rng.standard_normal(x.shape)
    grads = backward(g, *args)
    for index, grad in enumerate(grads):
        direction = rng.standard_normal(args[index].shape)
        numeric = float((g * _directional(forward, args, index, direction)).sum())
        analytic = float((grad * direction).sum())
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (name, index)
