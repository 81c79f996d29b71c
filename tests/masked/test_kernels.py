"""The masked numba ops against the NumPy reference and the composite torch backend: both
kernel layouts, sizes that split into several parallel chunks (2 threads), the fused
activations, the primitives of the masked variants, and precision with a large mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normkit.backends.numba_backend  # noqa: F401  (registers the ops)
from normkit import reference
from normkit.backends import torch_masked
from tests.conftest import assert_close
from tests.masked._oracle import hole_mask, poison

ops = torch.ops.normkit

ACTS = ["identity", "relu", "leaky_relu", "silu", "gelu", "relu6", "hardswish"]

# (shape, layout): large ones exceed two parallel chunks of MIN_CHUNK elements.
SHAPES = {
    "ncl small": ((3, 4, 10), ""),
    "ncl large, 2 chunks": ((8, 16, 1100), ""),
    "ncl short planes": ((64, 8, 3), ""),
    "nlc (N,C)": ((40, 6), ""),
    "nlc channels_last large": ((16, 32, 16, 16), "channels_last"),
    "nlc (N,L,C) transposed": ((8, 24, 700), "transposed"),
}


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _inputs(shape, layout, dtype, offset=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mask = hole_mask((shape[0], *shape[2:]), generator, p=0.7)
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * 2 + offset
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    w = torch.randn(shape[1], generator=generator, dtype=torch.float64) * 0.5 + 1
    b = torch.randn(shape[1], generator=generator, dtype=torch.float64)
    clean = x.clone(), g.clone()
    x, g = poison(x, mask), poison(g, mask)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        g = g.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
        g = g.transpose(1, 2).contiguous().transpose(1, 2)
    return x.to(dtype), mask, g.to(dtype), w.to(dtype), b.to(dtype), clean


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(SHAPES))
def test_forward_and_backward_ops_match_the_reference(two_threads, case, dtype):
    shape, layout = SHAPES[case]
    x, mask, g, w, b, (x64, g64) = _inputs(shape, layout, dtype)
    count = mask.sum(dtype=torch.float64)
    y, mean, var = ops.masked_batch_norm_forward(x, mask, count, w, b, 1e-5, "identity", 0.0)
    assert y.stride() == x.stride()
    ry, rmean, rvar, n = reference.masked_batch_norm_train(
        x64.numpy(), mask.numpy(), w.double().numpy(), b.double().numpy()
    )
    assert n == int(count)
    assert_close(y, torch.from_numpy(ry), dtype, what="y")
    assert_close(mean, torch.from_numpy(rmean), dtype, what="mean")
    assert_close(var, torch.from_numpy(rvar), dtype, what="var")
    dx, dw, db = ops.masked_batch_norm_backward(
        g, x, mask, count, w, b, mean, var, 1e-5, "identity", 0.0, True
    )
    rdx, rdw, rdb = reference.masked_batch_norm_train_backward(
        g64.numpy(), x64.numpy(), mask.numpy(), w.double().numpy()
    )
    assert_close(dx, torch.from_numpy(rdx), dtype, what="dx", floor=1.0)
    assert_close(dw, torch.from_numpy(rdw), dtype, what="dweight", floor=1.0)
    assert_close(db, torch.from_numpy(rdb), dtype, what="dbias", floor=1.0)
    # Evaluation: fixed statistics.
    rm, rv = mean.double() + 0.3, var.double() + 0.2
    y = ops.masked_batch_norm_eval_forward(
        x, mask, w, b, rm.to(dtype), rv.to(dtype), 1e-5, "identity", 0.0
    )
    expected = reference.masked_batch_norm_eval(
        x64.numpy(), mask.numpy(), rm.numpy(), rv.numpy(), w.double().numpy(), b.double().numpy()
    )
    assert_close(y, torch.from_numpy(expected), dtype, what="eval y")
    dx, dw, db = ops.masked_batch_norm_backward(
        g, x, mask, count, w, b, rm.to(dtype), rv.to(dtype), 1e-5, "identity", 0.0, False
    )
    rdx, rdw, rdb = reference.masked_batch_norm_eval_backward(
        g64.numpy(), x64.numpy(), mask.numpy(), rm.numpy(), rv.numpy(), w.double().numpy()
    )
    assert_close(dx, torch.from_numpy(rdx), dtype, what="eval dx")
    assert_close(dw, torch.from_numpy(rdw), dtype, what="eval dweight", floor=1.0)
    assert_close(db, torch.from_numpy(rdb), dtype, what="eval dbias", floor=1.0)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("case", ["ncl small", "nlc channels_last large", "ncl large, 2 chunks"])
def test_fused_activations_match_the_composite_backend(two_threads, case, act):
    shape, layout = SHAPES[case]
    x, mask, g, w, b, _ = _inputs(shape, layout, torch.float64)
    count = mask.sum(dtype=torch.float64)
    y, mean, var = ops.masked_batch_norm_forward(x, mask, count, w, b, 1e-5, act, 0.1)
    expected = torch_masked.batch_norm_train_output(x, mask, count, w, b, 1e-5, act, 0.1)[0]
    assert_close(y, expected, what="y")
    dx, dw, db = ops.masked_batch_norm_backward(
        g, x, mask, count, w, b, mean, var, 1e-5, act, 0.1, True
    )
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    torch_masked.batch_norm_train_output(xr, mask, count, wr, br, 1e-5, act, 0.1)[0].backward(g)
    assert_close(dx, xr.grad, what="dx", floor=1.0)
    assert_close(dw, wr.grad, what="dweight", floor=1.0)
    assert_close(db, br.grad, what="dbias", floor=1.0)


@pytest.mark.parametrize("case", ["ncl small", "nlc channels_last large", "nlc (N,C)"])
def test_primitives_match_the_composite_backend(two_threads, case):
    shape, layout = SHAPES[case]
    x, mask, g, w, b, _ = _inputs(shape, layout, torch.float64)
    count = mask.sum(dtype=torch.float64)
    mean, var = ops.masked_bn_stats(x, mask, count)
    emean, evar = torch_masked.masked_bn_stats(x, mask, count)
    assert_close(mean, emean, what="mean")
    assert_close(var, evar, what="var")
    invstd = torch.rsqrt(var + 1e-5)
    for act in ("identity", "gelu"):
        assert_close(
            ops.masked_bn_elemt(x, mask, mean, invstd, w, b, act, 0.0),
            torch_masked.masked_bn_elemt(x, mask, mean, invstd, w, b, act),
            what=f"elemt {act}",
        )
        sums = ops.masked_bn_backward_reduce(g, x, mask, mean, invstd, w, b, act, 0.0)
        esums = torch_masked.masked_bn_backward_reduce(g, x, mask, mean, invstd, w, b, act)
        for got, want in zip(sums, esums, strict=True):
            assert_close(got, want, what=f"reduce {act}", floor=1.0)
        for stats in (sums, (None, None)):
            assert_close(
                ops.masked_bn_backward_elemt(
                    g, x, mask, mean, invstd, w, b, *stats, count, act, 0.0
                ),
                torch_masked.masked_bn_backward_elemt(
                    g, x, mask, mean, invstd, w, b, *stats, count, act
                ),
                what=f"backward elemt {act}",
                floor=1.0,
            )


def test_large_mean_keeps_float32_precision(two_threads):
    """1e4 + N(0, 1): the shifted sums keep the variance at float32 accuracy (raw sums of
    squares would lose it all)."""
    x, mask, _, w, b, (x64, _) = _inputs((8, 4, 3000), "", torch.float32, offset=1e4)
    count = mask.sum(dtype=torch.float64)
    _, mean, var = ops.masked_batch_norm_forward(x, mask, count, w, b, 1e-5, "identity", 0.0)
    _, rmean, rvar, _ = reference.masked_batch_norm_train(x64.numpy(), mask.numpy())
    assert_close(mean, torch.from_numpy(rmean), torch.float32, what="mean")
    assert_close(var, torch.from_numpy(rvar), torch.float32, rtol=1e-4, what="var")


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_group_norm_ops_match_the_reference(two_threads, groups):
    x, mask, g, w, b, (x64, g64) = _inputs((6, 8, 900), "", torch.float64)
    mask[2] = False  # a sample without valid positions
    x64[2] = 0.0
    x[2] = float("nan")
    counts = mask.reshape(6, -1).sum(1, dtype=torch.float64)
    y, mean, var = ops.masked_group_norm_forward(x, mask, counts, groups, w, b, 1e-5)
    expected = reference.masked_group_norm(x64.numpy(), mask.numpy(), groups, w.numpy(), b.numpy())
    assert_close(y, torch.from_numpy(expected), what="y")
    dx, dw, db = ops.masked_group_norm_backward(g, x, mask, counts, groups, w, mean, var, 1e-5)
    rdx, rdw, rdb = reference.masked_group_norm_backward(
        np.nan_to_num(g64.numpy()), x64.numpy(), mask.numpy(), groups, w.numpy()
    )
    assert_close(dx, torch.from_numpy(rdx), what="dx", floor=1.0)
    assert_close(dw, torch.from_numpy(rdw), what="dweight", floor=1.0)
    assert_close(db, torch.from_numpy(rdb), what="dbias", floor=1.0)
