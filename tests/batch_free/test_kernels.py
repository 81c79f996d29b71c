"""The numba kernels' chunking paths (one and two threads, many and few planes, long planes
over several float32 blocks, more channels than a channel block, tiles with a remainder,
GlobalResponseNorm's rows split within a sample) against the NumPy reference."""

from __future__ import annotations

import pytest
import torch

import normkit as nk
import normkit.backends.numba_backend  # registers the ops; numba is a core dependency
import normkit.functional as F
from normkit import reference_batch_free as R
from tests.conftest import assert_close
from tests.kernels.conftest import torch_threads

SHAPES = [
    pytest.param((1, 64, 32, 32), id="one-sample"),  # GRN rows: two chunks of one sample
    pytest.param((2, 4, 80, 80), id="long-planes"),  # planes over two float32 blocks
    pytest.param((2, 300, 3, 200), id="wide"),  # rms2d: 3 channel blocks, tiles of 256 + 88
    pytest.param((5, 12, 1, 1), id="1x1"),
]


def _np(t):
    return None if t is None else t.detach().to(torch.float64).numpy()


def _t(a):
    return torch.from_numpy(a)


def _check(out, expected, dtype, what):
    assert_close(out, _t(expected), dtype, what=what, floor=1.0)


# which inputs (x, w, b, v, t) the reference's gradients are for, in its order
GRADS = {
    "frn": "xwbt",
    "evo_b0": "xvwb",
    "evo_s0": "xvwb",
    "grn_rows": "xwb",
    "grn": "xwb",
    "rms2d": "xw",
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_reference(shape, dtype, threads):
    gen = torch.Generator().manual_seed(3)
    c = shape[1]
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dtype)
    g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    w, b, v, tau = (torch.randn(c, generator=gen, dtype=dtype) * 0.3 + o for o in (1, 0, 1, 0))
    groups = 4
    xn, gn = _np(x), _np(g)
    cases = {
        "frn": (
            lambda x, w, b, v, t: F.filter_response_norm(x, w, b, t),
            R.filter_response_norm(xn, _np(w), _np(b), _np(tau)),
            R.filter_response_norm_backward(gn, xn, _np(w), _np(b), _np(tau)),
        ),
        "evo_b0": (
            lambda x, w, b, v, t: F.evo_norm_b0(x, None, v, w, b, training=True),
            R.evo_norm_b0(xn, R.evo_norm_b0_batch_var(xn), _np(v), _np(w), _np(b)),
            R.evo_norm_b0_backward(gn, xn, R.evo_norm_b0_batch_var(xn), _np(v), _np(w), _np(b)),
        ),
        "evo_s0": (
            lambda x, w, b, v, t: F.evo_norm_s0(x, groups, v, w, b),
            R.evo_norm_s0(xn, groups, _np(v), _np(w), _np(b)),
            R.evo_norm_s0_backward(gn, xn, groups, _np(v), _np(w), _np(b)),
        ),
        "grn_rows": (
            lambda x, w, b, v, t: F.global_response_norm(
                x.movedim(1, -1), w, b, channels_last=True
            ).movedim(-1, 1),
            R.global_response_norm(xn, _np(w), _np(b)),
            R.global_response_norm_backward(gn, xn, _np(w), _np(b)),
        ),
        "grn": (
            lambda x, w, b, v, t: F.global_response_norm(x, w, b),
            R.global_response_norm(xn, _np(w), _np(b)),
            R.global_response_norm_backward(gn, xn, _np(w), _np(b)),
        ),
        "rms2d": (
            lambda x, w, b, v, t: F.rms_norm2d(x, w),
            R.rms_norm2d(xn, _np(w)),
            R.rms_norm2d_backward(gn, xn, _np(w)),
        ),
    }
    with torch_threads(threads), nk.use_backend("numba"):
        for name, (fn, y_ref, grads_ref) in cases.items():
            leaves = [t.clone().requires_grad_(True) for t in (x, w, b, v, tau)]
            inputs = dict(zip("xwbvt", leaves, strict=True))
            y = fn(*inputs.values())
            y.backward(g)
            _check(y, y_ref, dtype, f"{name} y")
            for key, expected in zip(GRADS[name], grads_ref, strict=True):
                _check(inputs[key].grad, expected, dtype, f"{name} d{key}")
