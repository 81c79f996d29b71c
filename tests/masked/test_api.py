"""The masked API around the layers: lengths_to_mask, PackedSequence, independence from
the padding, layouts, dtypes the numba kernels do not take, and backend selection."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import normkit as nk
from normkit.backends import backend_name, select
from tests.conftest import assert_close
from tests.masked._oracle import gather


def test_lengths_to_mask():
    mask = nk.functional.lengths_to_mask(torch.tensor([3, 1, 0]), 4)
    assert mask.dtype is torch.bool
    assert mask.tolist() == [
        [True, True, True, False],
        [True, False, False, False],
        [False, False, False, False],
    ]
    assert nk.functional.lengths_to_mask([2, 5]).shape == (2, 5)
    assert nk.functional.lengths_to_mask([], 3).shape == (0, 3)


def test_packed_sequence_keeps_batch_sizes_and_normalizes_its_frames(backend):
    x = torch.randn(4, 7, 3, dtype=torch.float64)  # (N, L, C), batch first
    lengths = torch.tensor([7, 2, 5, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    bn = nk.nn.BatchNorm1d(3).double()
    reference = torch.nn.BatchNorm1d(3).double()
    out = bn(packed)
    assert isinstance(out, type(packed))
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    assert torch.equal(out.sorted_indices, packed.sorted_indices)
    assert_close(out.data, reference(packed.data))
    assert_close(bn.running_var, reference.running_var)
    # The same as the masked layer on the padded batch, frame for frame.
    masked = nk.nn.BatchNorm1d(3).double()
    mask = nk.functional.lengths_to_mask(lengths, 7)
    y = masked(x.transpose(1, 2), mask=mask)
    assert_close(gather(y, mask).sort(0).values, out.data.sort(0).values)
    assert_close(masked.running_mean, bn.running_mean)
    bn.eval()
    assert_close(bn(packed).data, reference.eval()(packed.data))


@pytest.mark.parametrize("layer", ["BatchNorm1d", "InstanceNorm1d", "GroupNorm"])
def test_outputs_do_not_depend_on_the_padding(backend, layer):
    """The same sequences padded to 9 or to 20 positions, pads zero or garbage: the same
    outputs at the valid positions (training and evaluation)."""
    build = {
        "BatchNorm1d": lambda: nk.nn.BatchNorm1d(4),
        "InstanceNorm1d": lambda: nk.nn.InstanceNorm1d(4, affine=True, track_running_stats=True),
        "GroupNorm": lambda: nk.nn.GroupNorm(2, 4),
    }[layer]
    short, long_ = build().double(), build().double()
    lengths = torch.tensor([9, 3, 6])
    x = torch.randn(3, 4, 9, dtype=torch.float64)
    x_long = torch.randn(3, 4, 20, dtype=torch.float64) * 100
    x_long[..., :9] = x
    mask, mask_long = (nk.functional.lengths_to_mask(lengths, n) for n in (9, 20))
    for training in (True, False):
        short.train(training)
        long_.train(training)
        assert_close(gather(short(x, mask=mask), mask), gather(long_(x_long, mask=mask_long),
                                                               mask_long))  # fmt: skip


def test_channels_last_and_sequence_layouts_are_kept(backend):
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    mask = torch.rand(2, 4, 5) < 0.7
    assert nk.nn.BatchNorm2d(3)(x, mask=mask).is_contiguous(memory_format=torch.channels_last)
    seq = torch.randn(2, 6, 3).transpose(1, 2)  # (N, L, C) data seen as (N, C, L)
    y = nk.nn.BatchNorm1d(3)(seq, mask=torch.ones(2, 6, dtype=torch.bool))
    assert y.stride() == seq.stride()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_on_the_torch_backend(dtype):
    x = torch.randn(4, 3, 8).to(dtype)
    mask = nk.functional.lengths_to_mask([8, 2, 5, 3], 8)
    assert backend_name(select("masked_batch_norm_train", x)) == "torch"
    y = nk.nn.BatchNorm1d(3).to(dtype)(x, mask=mask)
    assert y.dtype == dtype
    expected = torch.nn.functional.batch_norm(gather(x.float(), mask), None, None, training=True)
    assert_close(gather(y, mask).float(), expected, rtol=1e-2)


def test_float32_cpu_runs_on_numba_when_it_loads():
    x = torch.randn(4, 3, 8)
    assert backend_name(select("masked_batch_norm_train", x)) == "numba"


def test_inference_mode(backend):
    bn = nk.nn.BatchNorm1d(3).eval()
    with torch.inference_mode():
        y = bn(torch.randn(2, 3, 5), mask=torch.ones(2, 5, dtype=torch.bool))
    assert y.shape == (2, 3, 5)


def test_an_empty_batch_in_evaluation():
    """Empty tensors go to the torch backend under automatic selection."""
    bn = nk.nn.BatchNorm1d(3).eval()
    empty = bn(torch.randn(0, 3, 5), mask=torch.ones(0, 5, dtype=torch.bool))
    assert empty.shape == (0, 3, 5)
