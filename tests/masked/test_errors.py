"""Bad masks: a clear error naming the layer and the mask, and the running statistics and
num_batches_tracked unchanged."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import normkit as nk
from normkit.functional import NormDTypeError, NormInputError

LAYERS = {
    "BatchNorm1d(3)": lambda: nk.nn.BatchNorm1d(3),
    "BatchNorm2d(3)": lambda: nk.nn.BatchNorm2d(3),
    "BatchRenorm1d(3)": lambda: nk.nn.BatchRenorm1d(3),
    "BatchNormAct1d(3)": lambda: nk.nn.BatchNormAct1d(3),
    "SyncBatchNorm(3)": lambda: nk.nn.SyncBatchNorm(3),
    "InstanceNorm1d(3)": lambda: nk.nn.InstanceNorm1d(3, track_running_stats=True),
    "GroupNorm(1, 3)": lambda: nk.nn.GroupNorm(1, 3),
}


def _input(name):
    return torch.randn(4, 3, 5, 6) if "2d" in name else torch.randn(4, 3, 6)


def _state(layer):
    return {k: v.clone() for k, v in layer.state_dict().items()}


def _assert_unchanged(layer, before):
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key


def _raises(name, exc, match, mask, x=None):
    layer = LAYERS[name]()
    before = _state(layer)
    x = _input(name) if x is None else x
    with pytest.raises(exc, match=match) as info:
        layer(x, mask=mask)
    message = str(info.value)
    assert message.startswith(name), message
    assert "mask" in message, message
    _assert_unchanged(layer, before)
    return message


@pytest.mark.parametrize("name", list(LAYERS))
def test_mask_of_the_wrong_shape(backend, name):
    x = _input(name)
    wrong = torch.ones(4, *x.shape[2:-1], x.shape[-1] - 1, dtype=torch.bool)
    message = _raises(name, NormInputError, r"expected mask of size", wrong, x)
    assert str((4, *x.shape[2:])) in message
    _raises(name, NormInputError, r"expected mask of size", torch.ones(4, dtype=torch.bool), x)


@pytest.mark.parametrize("name", list(LAYERS))
def test_non_bool_mask(backend, name):
    x = _input(name)
    for mask in (torch.ones(4, *x.shape[2:]), torch.ones(4, *x.shape[2:], dtype=torch.uint8)):
        _raises(name, NormDTypeError, r"expected a bool mask.*got mask of dtype", mask, x)
    _raises(name, NormDTypeError, r"expected mask to be a bool tensor", [[True] * 6] * 4, x)


@pytest.mark.parametrize("name", [n for n in LAYERS if not n.startswith(("Group", "Instance"))])
def test_one_valid_value_per_channel_in_training(backend, name):
    x = _input(name)
    mask = torch.zeros(4, *x.shape[2:], dtype=torch.bool)
    mask.view(-1)[7] = True
    _raises(name, NormInputError, r"Expected more than 1 valid value per channel when training, "
            r"got 1 \(mask of size", mask, x)  # fmt: skip


@pytest.mark.parametrize("name", [n for n in LAYERS if not n.startswith("Group")])
def test_all_false_mask_in_training(backend, name):
    x = _input(name)
    mask = torch.zeros(4, *x.shape[2:], dtype=torch.bool)
    _raises(name, NormInputError, r"the mask has no valid position \(all False", mask, x)


def test_instance_norm_sample_with_one_valid_position(backend):
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2, 1:] = False
    _raises("InstanceNorm1d(3)", NormInputError, r"got 1 in sample 2", mask)
    mask[2] = False  # a sample without valid positions is fine
    nk.nn.InstanceNorm1d(3)(torch.randn(4, 3, 6), mask=mask)


def test_eval_accepts_any_number_of_valid_positions(backend):
    bn = nk.nn.BatchNorm1d(3).eval()
    y = bn(torch.randn(4, 3, 6), mask=torch.zeros(4, 6, dtype=torch.bool))
    assert torch.equal(y, torch.zeros(4, 3, 6))


def test_mask_on_another_device():
    with pytest.raises(NormInputError, match=r"BatchNorm1d\(3\): expected mask on the input's"):
        nk.nn.BatchNorm1d(3)(torch.randn(4, 3, 6), mask=torch.ones(4, 6, dtype=torch.bool,
                                                                    device="meta"))  # fmt: skip


def test_errors_are_also_runtime_errors_like_torchs():
    with pytest.raises(RuntimeError):
        nk.nn.BatchNorm1d(3)(torch.randn(4, 3, 6), mask=torch.ones(4, 5, dtype=torch.bool))


def test_functional_names_the_function():
    with pytest.raises(NormInputError, match=r"^batch_norm: expected mask of size \(4, 6\)"):
        nk.functional.batch_norm(torch.randn(4, 3, 6), None, None, training=True,
                                 mask=torch.ones(4, 5, dtype=torch.bool))  # fmt: skip
    with pytest.raises(NormDTypeError, match=r"^group_norm: expected a bool mask"):
        nk.functional.group_norm(torch.randn(4, 3, 6), 1, mask=torch.ones(4, 6))


def test_packed_sequence_errors():
    x = torch.randn(3, 5, 2)
    packed = pack_padded_sequence(x, torch.tensor([5, 3, 2]), batch_first=True)
    with pytest.raises(NormInputError, match=r"BatchNorm1d\(2\): got a PackedSequence and a mask"):
        nk.nn.BatchNorm1d(2)(packed, mask=torch.ones(10, dtype=torch.bool))
    with pytest.raises(NormInputError, match=r"BatchNorm2d\(2\): a PackedSequence .* 1-D layers"):
        nk.nn.BatchNorm2d(2)(packed)


def test_lengths_to_mask_errors():
    with pytest.raises(
        NormInputError, match=r"lengths_to_mask: expected lengths in \[0, max_len=4\]"
    ):
        nk.functional.lengths_to_mask([2, 5], 4)
    with pytest.raises(NormInputError, match=r"expected lengths as a 1-D tensor .* integers"):
        nk.functional.lengths_to_mask(torch.tensor([2.0, 3.0]), 4)
    with pytest.raises(NormInputError, match=r"max_len must be a non-negative integer"):
        nk.functional.lengths_to_mask([2, 3], -1)
