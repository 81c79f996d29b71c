"""Randomized accuracy of the numba kernels (Hypothesis) against normkit.reference (float64,
on the kernels' own float32 or float64 inputs):
BatchNorm (training and evaluation), GroupNorm, LayerNorm and RMSNorm, forward and backward,
over random shapes with the degenerate ones drawn often: one channel, spatial size 1, a
batch of one where the op allows it, one group and one group per channel, one-value rows.

Every call is forced onto the numba backend (a shape the kernels cannot take fails instead
of falling back). Some draws have a dimension long enough for two kernel threads (at least
2 * 32768 values): the kernels split the work differently then. Running statistics are
checked for BatchNorm training too.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

import normkit.functional as nkf
from normkit import reference
from tests.conftest import RTOL, assert_close
from tests.kernels.conftest import torch_threads

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
F64 = torch.float64
#: Sizes of one dimension: the degenerate 1 often, odd and even small sizes, a size that
#: makes a long plane or row (kernels treat planes shorter than 40 values as rows).
SMALL = st.sampled_from([1, 1, 2, 3, 4, 5, 7])
LONG = st.sampled_from([1, 3, 8, 41, 70000])


class Draw:
    """One example's random data in one dtype: NumPy float64 arrays holding values exactly
    representable in ``dtype`` (the reference then computes on the kernel's very inputs),
    and their tensors."""

    def __init__(self, seed: int, dtype: torch.dtype) -> None:
        self.rng, self.dtype = np.random.default_rng(seed), dtype

    def _round(self, a):
        return torch.from_numpy(np.asarray(a, dtype=np.float64)).to(self.dtype).double().numpy()

    def normal(self, shape):
        return self._round(self.rng.standard_normal(shape))

    def uniform(self, low, high, shape):
        return self._round(self.rng.uniform(low, high, shape))

    def tensor(self, a, channels_last=False):
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.dtype, copy=True)
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t

    def leaf(self, a, channels_last=False):
        return self.tensor(a, channels_last).requires_grad_()


@st.composite
def arrays(draw, shape):
    """``(x, rng)``: data of ``shape`` in float32 or float64 with a random scale and offset
    (a large mean tests the shifted sums), and the :class:`Draw` for the example's other
    arrays."""
    rng = Draw(draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from([F64, torch.float32])))
    event(str(rng.dtype))
    scale = draw(st.sampled_from([1e-3, 1.0, 40.0]))
    offset = draw(st.sampled_from([0.0, 2.0, -300.0]))
    return rng._round(rng.rng.standard_normal(shape) * scale + offset), rng


@st.composite
def per_channel_shapes(draw, max_spatial_dims=3):
    """``(N, C, *spatial)``: small dims, or a last spatial dim making planes of 41 values
    (kernels take planes shorter than 40 as rows), or about 70000 values in all (two
    threads), or wide ``(N, C)`` rows."""
    n, c = draw(SMALL), draw(SMALL)
    spatial = [draw(SMALL) for _ in range(draw(st.integers(0, max_spatial_dims)))]
    size = draw(st.sampled_from(["small", "long planes", "two threads", "wide rows"]))
    if size == "long planes":
        spatial = [*spatial[:-1], 41]
    elif size == "two threads":
        spatial = [1] * len(spatial[:-1]) + [70000 // (n * c) + 1]
    elif size == "wide rows":  # (N, C) with C >= 64 on two threads: a column block each
        c = draw(st.sampled_from([64, 96, 130]))
        return (70000 // c + 1, c)
    return (n, c, *spatial)


def _threads(shape) -> int:
    """Two kernel threads where the call is large enough to split (and a Hypothesis event
    naming the degenerate cases drawn, shown by ``--hypothesis-show-statistics``)."""
    threads = 2 if math.prod(shape) >= 2 * 32768 else 1
    event(f"{threads} thread(s)")
    for size, what in [(shape[0], "N"), (shape[1] if len(shape) > 1 else 0, "dim 1")]:
        if size == 1:
            event(f"{what} = 1")
    if len(shape) > 2 and math.prod(shape[2:]) == 1:
        event("trailing size 1")
    return threads


def _check(rng, y, inputs, y_ref, grads_ref, g, what, torch_grads=None):
    """Output and gradients against the reference, at the dtype's tolerance. With
    ``torch_grads`` (torch's own gradients for the same inputs), a gradient may also be off
    by up to twice torch's own error: "at least as accurate as torch" where the input itself
    limits float32 (a large mean with a tiny spread)."""
    assert y.dtype == rng.dtype, f"{what}: output dtype {y.dtype}"
    assert_close(y, torch.from_numpy(y_ref), rng.dtype, what=f"{what} output")
    grads = torch.autograd.grad(y, inputs, rng.tensor(g))
    for i, (name, got, want) in enumerate(
        zip(("input", "weight", "bias"), grads, grads_ref, strict=False)
    ):
        want = torch.from_numpy(want)
        floor = abs(g).max()
        if torch_grads is not None:
            torch_err = float((torch_grads[i].double() - want).abs().max())
            floor = max(floor, 2 * torch_err / RTOL[rng.dtype])
        assert_close(got, want, rng.dtype, what=f"{what} grad {name}", floor=floor)


@SETTINGS
@given(st.data(), per_channel_shapes(), st.booleans(), st.floats(1e-5, 1.0))
def test_batch_norm_train(data, shape, affine, eps):
    if shape[0] * math.prod(shape[2:]) < 2:
        shape = (2, *shape[1:])  # one value per channel is refused in training
    x, rng = data.draw(arrays(shape))
    channels_last = len(shape) == 4 and data.draw(st.booleans())
    c = shape[1]
    w, b = (rng.normal(c), rng.normal(c)) if affine else (None, None)
    xt = rng.leaf(x, channels_last)
    wt, bt = (rng.leaf(w), rng.leaf(b)) if affine else (None, None)
    rm_ref, rv_ref = rng.normal(c), rng.uniform(0.5, 2, c)
    rm, rv = rng.tensor(rm_ref), rng.tensor(rv_ref)
    with torch_threads(_threads(shape)):
        y = nkf.batch_norm(xt, rm, rv, wt, bt, True, 0.3, eps, backend="numba")
    y_ref, mean, var = reference.batch_norm_train(x, w, b, eps)
    count = x.size // c
    assert_close(rm, torch.from_numpy(0.7 * rm_ref + 0.3 * mean), rng.dtype, what="running_mean")
    expected_var = 0.7 * rv_ref + 0.3 * var * count / (count - 1)
    assert_close(rv, torch.from_numpy(expected_var), rng.dtype, what="running_var")
    g = rng.normal(shape)
    inputs = (xt, wt, bt) if affine else (xt,)
    theirs = torch.nn.functional.batch_norm(xt, None, None, wt, bt, True, 0.3, eps)
    torch_grads = torch.autograd.grad(theirs, inputs, rng.tensor(g))
    with torch_threads(_threads(shape)):
        _check(
            rng, y, inputs, y_ref, reference.batch_norm_train_backward(g, x, w, eps), g, "train",
            torch_grads,
        )  # fmt: skip


@SETTINGS
@given(st.data(), per_channel_shapes(), st.floats(0.0, 1.0))
def test_batch_norm_eval(data, shape, eps):
    x, rng = data.draw(arrays(shape))
    c = shape[1]
    w, b = rng.normal(c), rng.normal(c)
    rm, rv = rng.normal(c), rng.uniform(0.1, 3.0, c)
    xt, wt, bt = rng.leaf(x, len(shape) == 4 and data.draw(st.booleans())), rng.leaf(w), rng.leaf(b)
    g = rng.normal(shape)
    with torch_threads(_threads(shape)):
        y = nkf.batch_norm(
            xt, rng.tensor(rm), rng.tensor(rv), wt, bt, False, 0.1, eps, backend="numba"
        )
        _check(
            rng,
            y,
            (xt, wt, bt),
            reference.batch_norm_eval(x, rm, rv, w, b, eps),
            reference.batch_norm_eval_backward(g, x, rm, rv, w, eps),
            g,
            "eval",
        )


@SETTINGS
@given(st.data(), per_channel_shapes(), st.sampled_from(["one", "per-channel", "divisor"]))
def test_group_norm(data, shape, grouping):
    c = shape[1]
    if grouping == "divisor":
        c = 2 * c + 2  # at least one divisor strictly between 1 and C
        shape = (shape[0], c, *shape[2:])
        groups = data.draw(st.sampled_from([d for d in range(2, c) if c % d == 0]))
    else:
        groups = 1 if grouping == "one" else c
    if shape[0] * (c // groups) * math.prod(shape[2:]) < 2:
        shape = (shape[0], c, 2, *shape[2:])  # one value per group is refused
    event("groups = 1" if groups == 1 else "groups = C" if groups == c else "1 < groups < C")
    x, rng = data.draw(arrays(shape))
    affine = data.draw(st.booleans())
    w, b = (rng.normal(c), rng.normal(c)) if affine else (None, None)
    xt = rng.leaf(x)
    wt, bt = (rng.leaf(w), rng.leaf(b)) if affine else (None, None)
    eps = data.draw(st.floats(1e-5, 1.0))
    g = rng.normal(shape)
    with torch_threads(_threads(shape)):
        y = nkf.group_norm(xt, groups, wt, bt, eps, backend="numba")
        _check(
            rng,
            y,
            (xt, wt, bt) if affine else (xt,),
            reference.group_norm(x, groups, w, b, eps),
            reference.group_norm_backward(g, x, groups, w, eps),
            g,
            f"GroupNorm({groups}, {c})",
        )


@st.composite
def row_shapes(draw):
    """``((*batch), (*normalized))``: 0 to 2 batch dims (a batch of one, or none), 1 or 2
    normalized dims (one-value rows included); or about 70000 values in all (two threads),
    as many short rows or as one or two long ones."""
    batch = [draw(SMALL) for _ in range(draw(st.integers(0, 2)))]
    normalized = [draw(st.sampled_from([1, 2, 3, 8, 33, 300]))]
    if draw(st.booleans()):
        normalized.insert(0, draw(SMALL))
    size = draw(st.sampled_from(["small", "small", "many rows", "long rows"]))
    if size == "many rows":
        batch, normalized = [70000 // math.prod(normalized) + 1], normalized
    elif size == "long rows":
        batch, normalized = [draw(st.sampled_from([1, 2]))], [70000]
    return tuple(batch), tuple(normalized)


@SETTINGS
@given(st.data(), row_shapes(), st.booleans(), st.floats(1e-6, 1.0))
def test_layer_norm(data, shapes, affine, eps):
    batch, normalized = shapes
    shape = (*batch, *normalized)
    x, rng = data.draw(arrays(shape))
    w, b = (None, None)
    if affine:
        w, b = rng.normal(normalized), rng.normal(normalized)
    xt = rng.leaf(x)
    wt, bt = (rng.leaf(w), rng.leaf(b)) if affine else (None, None)
    g = rng.normal(shape)
    with torch_threads(_threads(shape)):
        y = nkf.layer_norm(xt, normalized, wt, bt, eps, backend="numba")
        _check(
            rng,
            y,
            (xt, wt, bt) if affine else (xt,),
            reference.layer_norm(x, normalized, w, b, eps),
            reference.layer_norm_backward(g, x, normalized, w, eps),
            g,
            f"LayerNorm{normalized}",
        )


@SETTINGS
@given(st.data(), row_shapes(), st.booleans(), st.floats(1e-6, 1.0))
def test_rms_norm(data, shapes, affine, eps):
    batch, normalized = shapes
    shape = (*batch, *normalized)
    x, rng = data.draw(arrays(shape))
    w = rng.normal(normalized) if affine else None
    xt = rng.leaf(x)
    wt = rng.leaf(w) if affine else None
    g = rng.normal(shape)
    with torch_threads(_threads(shape)):
        y = nkf.rms_norm(xt, normalized, wt, eps, backend="numba")
        _check(
            rng,
            y,
            (xt, wt) if affine else (xt,),
            reference.rms_norm(x, normalized, w, eps),
            reference.rms_norm_backward(g, x, normalized, w, eps),
            g,
            f"RMSNorm{normalized}",
        )
