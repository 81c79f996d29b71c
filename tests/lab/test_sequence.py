"""The ``sequence`` experiment: the padded data it builds, the padding invariance of the
masked network (and its absence in plain BatchNorm's train mode), and a smoke run."""

from __future__ import annotations

import pytest
import torch

from normkit.lab.datasets import Dataset
from normkit.lab.errors import LabError
from normkit.lab.experiments import sequence
from tests.conftest import assert_close

from .helpers import check_run_dir, run_small


def _toy(n: int = 24, length: int = 16) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, length, generator=generator)
    y = torch.arange(n) % 3
    return Dataset("toy", x, y, x.clone(), y.clone(), 3, "random sequences")


def test_crops_are_left_aligned_zero_padded_with_the_mask_as_last_channel():
    data = sequence.cropped(_toy(), 5, seed=0)
    x = data.x_train
    assert x.shape == (24, 2, 16)
    mask = x[:, -1] > 0.5
    lengths = mask.sum(1)
    assert 5 <= int(lengths.min()) and int(lengths.max()) <= 16
    assert torch.equal(mask, torch.arange(16) < lengths[:, None])  # prefixes
    assert torch.equal(x[:, 0][~mask], torch.zeros(int((~mask).sum())))
    # Each crop is a window of the original sequence.
    source = _toy().x_train
    for i in range(24):
        window = x[i, 0, : lengths[i]]
        starts = [s for s in range(17 - int(lengths[i])) if torch.equal(
            source[i, 0, s : s + int(lengths[i])], window)]  # fmt: skip
        assert starts, i
    assert torch.equal(sequence.cropped(_toy(), 5, seed=0).x_test, data.x_test)  # seeded
    with pytest.raises(LabError, match="--min-length must be between 2 and"):
        sequence.cropped(_toy(), 20, seed=0)


def test_padded_batch_cuts_to_the_longest_sequence_plus_extra_frames():
    data = sequence.cropped(_toy(), 3, seed=1)
    batch = data.x_train[:4]
    longest = int((batch[:, -1] > 0.5).sum(1).max())
    x, mask = sequence.padded_batch(batch, 0)
    assert x.shape[-1] == mask.shape[-1] == longest
    x, mask = sequence.padded_batch(batch, 30)
    assert x.shape[-1] == longest + 30
    assert not mask[:, longest:].any() and torch.equal(
        x[..., 16:], torch.zeros(4, 1, x.shape[-1] - 16)
    )


@pytest.mark.parametrize("train_mode", [True, False])
def test_the_masked_network_does_not_depend_on_the_padding(train_mode):
    """Masked BatchNorm, LayerNorm and no norm: the same logits with 0 or 80 extra padded
    frames; plain BatchNorm in train mode: different logits."""
    data = sequence.cropped(_toy(n=16), 4, seed=2)
    for norm in sequence.VARIANTS:
        torch.manual_seed(0)
        model = sequence.SequenceNet(1, 3, norm).train(train_mode)
        with torch.no_grad():
            model.extra_padding = 0
            short = model(data.x_train)
            model.extra_padding = 80
            padded = model(data.x_train)
        if norm == "bn" and train_mode:
            assert (short - padded).abs().max() > 1e-3
        else:
            assert_close(padded, short, torch.float32, what=norm)


def test_sequence_smoke(tmp_path):
    result = run_small("sequence", tmp_path)
    results = check_run_dir(tmp_path, "sequence", ["sequence.png"])
    metrics = results["metrics"]
    assert metrics["extra_padding"] == list(sequence.EXTRA_PADDING)
    assert list(metrics["padding_sweep"]) == list(sequence.VARIANTS)
    for v in sequence.VARIANTS:
        sweep = metrics["padding_sweep"][v]
        assert len(sweep["eval"]) == len(sweep["train"]) == len(sequence.EXTRA_PADDING)
        if v != "bn":  # padding-invariant in both modes
            assert len(set(sweep["eval"])) == len(set(sweep["train"])) == 1, v
            assert metrics["agreement"][v] == {"eval": 1.0, "train": 1.0}, v
    assert len(set(metrics["padding_sweep"]["bn"]["eval"])) == 1  # running statistics
    for v in ("ln", "none"):  # no batch statistics: both modes agree
        assert metrics["curves"][v]["eval"] == metrics["curves"][v]["train"]
    assert [row[0] for row in result.rows] == ["plain BN", "masked BN", "LayerNorm", "no norm"]
    assert result.headline.startswith("with 160 more padded frames per test batch")


def test_non_sequence_data_is_refused():
    images = Dataset("img", torch.zeros(4, 1, 8, 8), torch.zeros(4).long(), torch.zeros(4, 1, 8, 8),
                     torch.zeros(4).long(), 2, "")  # fmt: skip
    with pytest.raises(LabError, match="needs 1-D sequences"):
        sequence.cropped(images, 4, seed=0)
