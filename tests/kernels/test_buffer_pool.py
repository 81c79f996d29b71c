"""The output buffer pool: reuse only memory nobody can see any more."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normkit as nk
from normkit.backends.buffer_pool import ENV_VAR, BufferPool
from tests.kernels.conftest import numba_ops

MB = 2**20
SHAPE, STRIDE = (4, 256, 256), (65536, 256, 1)  # 1 MiB of float32


def _empty(pool):
    return pool.empty(SHAPE, STRIDE, torch.float32)


def test_a_buffer_is_reused_only_after_every_reference_is_gone():
    pool = BufferPool(max_bytes=64 * MB)
    a = _empty(pool)
    b = _empty(pool)
    assert a.data_ptr() != b.data_ptr()
    ptr = a.data_ptr()
    del a
    c = _empty(pool)
    assert c.data_ptr() == ptr
    assert pool.stats()["buffers"] == 2 and pool.hits == 1


@pytest.mark.parametrize(
    "keep",
    [
        lambda t: t[1:],  # a view
        lambda t: t.numpy(),  # a NumPy array
        lambda t: t.untyped_storage(),  # the storage object
        lambda t: t.view(-1).reshape(4, -1),  # a view of a view
        lambda t: [t],  # the tensor itself, in a container
    ],
    ids=["view", "numpy", "storage", "view-of-view", "tensor"],
)
def test_anything_that_sees_the_memory_keeps_it_busy(keep):
    pool = BufferPool(max_bytes=64 * MB)
    a = _empty(pool)
    a.fill_(7.0)
    held = keep(a)
    ptr = a.data_ptr()
    del a
    fresh = _empty(pool)
    assert fresh.data_ptr() != ptr
    fresh.fill_(-1.0)
    view = held[0] if isinstance(held, list) else held
    if isinstance(view, torch.UntypedStorage):
        view = torch.empty(0).set_(view)
    assert (np.asarray(view) == 7.0).all(), "a busy buffer was overwritten"
    del held, view
    assert _empty(pool).data_ptr() == ptr


def test_small_and_oversized_requests_are_not_pooled():
    pool = BufferPool(max_bytes=2 * MB)
    pool.empty((10,), (1,), torch.float32)
    pool.empty((4, 1024, 1024), (1048576, 1024, 1), torch.float32)  # 16 MiB > max
    assert pool.stats()["buffers"] == 0


def test_the_cap_evicts_the_least_recently_used_idle_buffer():
    pool = BufferPool(max_bytes=3 * MB)
    a = pool.empty((MB // 4,), (1,), torch.float32)
    b = pool.empty((MB // 2,), (1,), torch.float32)  # 2 MiB
    del a, b
    c = pool.empty((MB // 2 + 8,), (1,), torch.float32)  # 2 MiB + 32 B: evicts the LRU (a)
    assert pool.stats()["held_bytes"] <= 3 * MB
    del c
    assert pool.release() > 0 and pool.stats()["buffers"] == 0


def test_busy_buffers_are_never_evicted():
    pool = BufferPool(max_bytes=2 * MB)
    a = pool.empty((MB // 4,), (1,), torch.float32)
    b = pool.empty((MB // 2,), (1,), torch.float32)  # does not fit: plain allocation
    assert pool.stats()["buffers"] == 1
    assert a.data_ptr() != b.data_ptr()


def test_env_var_sets_or_disables_the_pool(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "0")
    pool = BufferPool.from_env()
    _empty(pool)
    assert pool.stats()["buffers"] == 0
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ValueError, match=ENV_VAR):
        BufferPool.from_env()


def test_outputs_saved_for_backward_stay_untouched():
    """A layer output kept by the autograd graph is not handed out again."""
    ours, ref = nk.nn.BatchNorm2d(16), torch.nn.BatchNorm2d(16)
    x = torch.randn(8, 16, 64, 64)  # 2 MiB outputs: pooled
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y = ours(xa)
    loss = (y * y).sum()  # saves y for backward
    ptr = y.data_ptr()
    del y
    for _ in range(3):  # would overwrite the saved y if its buffer were reused
        other = ours(torch.randn(8, 16, 64, 64))
        assert other.data_ptr() != ptr
    loss.backward()
    yb = ref(xb)
    (yb * yb).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-4, rtol=1e-4)


def test_in_place_activation_after_a_pooled_output_matches_torch():
    """ResNet's BatchNorm -> ReLU(inplace=True) on pooled outputs."""
    torch.manual_seed(0)
    ours = torch.nn.Sequential(nk.nn.BatchNorm2d(16), torch.nn.ReLU(inplace=True))
    ref = torch.nn.Sequential(torch.nn.BatchNorm2d(16), torch.nn.ReLU(inplace=True))
    for _ in range(3):
        x = torch.randn(8, 16, 48, 48)
        xa = x.clone().requires_grad_(True)
        xb = x.clone().requires_grad_(True)
        g = torch.randn_like(x)
        ya, yb = ours(xa), ref(xb)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(ya, yb)
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-4)


def test_off_by_default_and_used_for_large_outputs_when_on(monkeypatch):
    from normkit.backends import _arrays

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert BufferPool.from_env().max_bytes == 0
    pool = BufferPool(max_bytes=64 * MB)
    monkeypatch.setattr(_arrays, "BUFFERS", pool)
    numba_ops.batch_norm_forward(torch.randn(4, 8, 16384), None, None, 1e-5)
    assert pool.stats()["hits"] + pool.stats()["misses"] == 1
