"""SyncBatchNorm without synchronization to do (fallback to BatchNorm), torch compatibility,
convert_sync_batchnorm, and Chan's merge."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import normkit as nk
from normkit import reference_variants as rv
from normkit.autograd.sync import chan_merge
from tests.conftest import assert_close


def _pair(**kwargs):
    reference = nn.SyncBatchNorm(3, **kwargs).double()
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_()
    ours = nk.nn.SyncBatchNorm(3, **kwargs).double()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}, {"bias": False}],
    ids=str,
)
def test_without_process_group_equals_batch_norm(kwargs):
    """torch.nn.SyncBatchNorm refuses CPU input when distributed is initialised, so the
    reference is torch's BatchNorm with the same state."""
    _, ours = _pair(**kwargs)
    bn = nn.BatchNorm2d(3, **kwargs).double()
    bn.load_state_dict(ours.state_dict())
    for step in range(3):
        if step == 2:
            ours.eval()
            bn.eval()
        x = torch.randn(4, 3, 2, 5, dtype=torch.float64) + step
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours(xa), bn(xb)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert_close(ya, yb)
        assert_close(xa.grad, xb.grad, floor=1.0)
        for (k, a), (_, b) in zip(ours.state_dict().items(), bn.state_dict().items(), strict=True):
            assert_close(a, b, torch.float64, what=k)


def test_repr_state_dict_and_attributes_match_torch():
    reference, ours = nn.SyncBatchNorm(5, momentum=0.2), nk.nn.SyncBatchNorm(5, momentum=0.2)
    assert repr(ours) == repr(reference)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert (
        ours.state_dict()._metadata[""]["version"]
        == reference.state_dict()._metadata[""]["version"]
    )
    reference.load_state_dict(ours.state_dict())
    ours.load_state_dict(reference.state_dict())
    assert ours.process_group is None
    # Any rank >= 2 is accepted, like torch's.
    for shape in [(4, 5), (4, 5, 3), (2, 5, 2, 2), (2, 5, 2, 2, 2), (2, 5, 1, 2, 2, 2)]:
        assert ours(torch.randn(shape)).shape == shape


@pytest.fixture
def world_of_one():
    """torch.distributed initialised with a single gloo process."""
    if dist.is_initialized():
        pytest.fail("a test left torch.distributed initialised")
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{os.path.join(tmp, 'store')}",
            rank=0,
            world_size=1,
            timeout=timedelta(seconds=20),
        )
        try:
            yield
        finally:
            dist.destroy_process_group()


def test_world_of_one_falls_back_to_batch_norm(world_of_one):
    ours = nk.nn.SyncBatchNorm(3).double()
    bn = nk.nn.BatchNorm1d(3).double()
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    assert torch.equal(ours(x), bn(x))
    assert torch.equal(ours.running_var, bn.running_var)
    group = dist.new_group([0])
    assert torch.equal(nk.nn.SyncBatchNorm(3, process_group=group).double()(x), bn(x))


def test_bad_process_group():
    with pytest.raises(TypeError, match=r"process_group must be None .* got str"):
        nk.nn.SyncBatchNorm(3, process_group="world")
    with pytest.raises(TypeError, match="process_group must be None"):
        nk.functional.sync_batch_norm(torch.randn(4, 3), None, None, training=True,
                                      process_group=3)  # fmt: skip


def test_convert_sync_batchnorm_like_torch():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4),
        nn.Sequential(nk.nn.BatchNorm2d(4, momentum=None), nn.ReLU()),
        nn.BatchNorm2d(4, affine=False, eps=1e-3).eval(),
        nn.SyncBatchNorm(4, track_running_stats=False),
        nn.BatchNorm2d(4, bias=False),
        nk.nn.BatchRenorm2d(4),  # other semantics: left alone
        nk.nn.BatchNormAct2d(4),
    )
    model[1].running_mean.fill_(0.5)
    params = {name: p for name, p in model.named_parameters()}
    converted = nk.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted is model
    for index in (1, 3, 4, 5):
        assert type(converted[index]) is nk.nn.SyncBatchNorm, index
    assert type(converted[2][0]) is nk.nn.SyncBatchNorm
    assert type(converted[6]) is nk.nn.BatchRenorm2d
    assert type(converted[7]) is nk.nn.BatchNormAct2d
    assert converted[2][0].momentum is None
    assert converted[3].eps == 1e-3 and not converted[3].affine and not converted[3].training
    assert converted[4].running_mean is None
    assert converted[5].bias is None
    assert torch.equal(converted[1].running_mean, torch.full((4,), 0.5))
    for name, p in converted.named_parameters():
        assert p is params[name], name  # the same Parameter objects (optimizers keep working)
    single = nn.BatchNorm1d(3)
    out = nk.nn.SyncBatchNorm.convert_sync_batchnorm(single)
    assert isinstance(out, nk.nn.SyncBatchNorm) and out is not single
    x = torch.randn(5, 2, 6, 6)
    assert converted(x).shape == (5, 4, 4, 4)


def test_chan_merge_is_exact_where_raw_sums_of_squares_are_not():
    gen = torch.Generator().manual_seed(0)
    shards = [torch.randn(n, 4, generator=gen, dtype=torch.float64) + 1e4 for n in (5, 0, 3, 9)]
    whole = torch.cat(shards)
    counts = [float(len(s)) for s in shards]
    means = torch.stack([s.mean(0) if len(s) else torch.zeros(4, dtype=torch.float64)
                         for s in shards])  # fmt: skip
    m2s = torch.stack([((s - s.mean(0)) ** 2).sum(0) if len(s) else torch.zeros(4, dtype=torch.float64)
                       for s in shards])  # fmt: skip
    n, mean, m2 = chan_merge(counts, means, m2s)
    assert n == len(whole)
    assert_close(mean, whole.mean(0))
    assert_close(m2 / n, whole.var(0, unbiased=False))
    n_ref, mean_ref, m2_ref = rv.merge_moments(counts, means.numpy(), m2s.numpy())
    assert n_ref == n
    np.testing.assert_allclose(mean_ref, mean.numpy(), rtol=1e-14)
    np.testing.assert_allclose(m2_ref, m2.numpy(), rtol=1e-12)
    # What the merge avoids: sum of squares minus squared sum, at |mean| / std = 1e4, misses
    # the 1e-10 standard by orders of magnitude.
    total_sq = sum((s**2).sum(0) for s in shards)
    naive = total_sq / n - (whole.sum(0) / n) ** 2
    assert (naive - whole.var(0, unbiased=False)).abs().max() > 1e-8
