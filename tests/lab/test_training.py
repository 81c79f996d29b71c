"""The training loop, the seeds, the models and the ics percentile measurement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import normkit as nk
from normkit.lab.datasets import load_dataset
from normkit.lab.errors import LabError
from normkit.lab.experiments.ics import sigmoid_input_percentiles
from normkit.lab.models import cnn, copy_init, head_norm, make_norm, mlp
from normkit.lab.training import accuracy, batches, chunks, derive_seed, eval_steps, train


def test_derive_seed_is_stable_and_distinct():
    assert (
        derive_seed(0, "bn", 8) == derive_seed(0, "bn", 8) == 525420426
    )  # crc32("0/bn/8"): fixed forever
    assert derive_seed(0, "bn", 8) != derive_seed(0, "bn", 16) != derive_seed(1, "bn", 16)


def test_batches_cover_each_epoch_once_and_drop_the_remainder():
    it = batches(10, 3, seed=0)
    epoch = torch.cat([next(it) for _ in range(3)])
    assert len(set(epoch.tolist())) == 9  # 3 batches of 3, one example left out
    assert not torch.equal(torch.cat([next(it) for _ in range(3)]), epoch)  # reshuffled
    with pytest.raises(LabError, match="batch size 11 is larger than the training set"):
        next(batches(10, 11, seed=0))


def test_eval_steps():
    assert eval_steps(10, 4) == [0, 4, 8, 10]
    assert eval_steps(8, 4) == [0, 4, 8]
    assert eval_steps(8, 0) == [8]


def test_accuracy_train_mode_leaves_running_stats_alone():
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = cnn(data.input_shape, 10, norm="bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    acc = accuracy(model, data.x_test[:33], data.y_test[:33], train_mode=True, batch_size=8)
    assert 0 <= acc <= 1 and model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_train_is_deterministic_and_reports_divergence():
    data = load_dataset("digits")
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = mlp(64, 10, norm="bn")
        losses.append(train(model, data, steps=20, batch_size=16, lr=0.1, seed=3)["loss"])
    assert losses[0] == losses[1]
    torch.manual_seed(0)
    model = mlp(64, 10, activation="relu")
    seen = []
    info = train(
        model,
        data,
        steps=50,
        batch_size=16,
        lr=1e6,
        seed=0,
        eval_every=10,
        on_eval=lambda step, m: seen.append(step),
    )
    assert info["diverged"] and info["steps"] < 50
    assert seen == [0, 10, 20, 30, 40, 50]  # every evaluation still happens


def test_make_norm_kinds():
    assert isinstance(make_norm("bn", 4), nk.nn.BatchNorm1d)
    assert isinstance(make_norm("bn", 4, (5, 5)), nk.nn.BatchNorm2d)
    assert make_norm("gn", 32, (8,)).num_groups == 8
    assert make_norm("ln", 4, (6,)).normalized_shape == (4, 6)
    assert isinstance(make_norm("in", 4, (6,)), nk.nn.InstanceNorm1d)
    assert isinstance(make_norm("none", 4), nn.Identity)
    with pytest.raises(LabError, match="InstanceNorm needs spatial inputs"):
        make_norm("in", 4)
    with pytest.raises(LabError, match="unknown normalization 'xx'"):
        make_norm("xx", 4)


def test_models_use_normkit_layers_and_share_inits():
    torch.manual_seed(0)
    a = cnn((1, 40), 10, norm="none")
    b = cnn((1, 40), 10, norm="bn", placement="after")
    copy_init(a, b)
    assert sum(isinstance(m, nk.nn.BatchNorm1d) for m in b.modules()) == 3
    a.eval(), b.eval()
    x = torch.randn(4, 1, 40)
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)  # BN at init ~ identity
    assert cnn((1, 8, 8), 10)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert cnn((3, 28, 28), 7)(torch.randn(2, 3, 28, 28)).shape == (2, 7)


def test_cnn_head_normalizes_flat_features_with_the_same_kind():
    torch.manual_seed(0)
    plain = cnn((1, 40), 10, norm="bn")
    torch.manual_seed(0)
    headed = cnn((1, 40), 10, norm="bn", head=16)
    # The trunk is unchanged; the head is Linear(32 x 5, 16) -> BatchNorm1d(16) -> ReLU -> Linear.
    assert [type(m) for m in plain][:-1] == [type(m) for m in headed][:-4]
    linear, norm, _, out = list(headed)[-4:]
    assert (linear.in_features, linear.out_features, out.in_features) == (160, 16, 16)
    assert isinstance(norm, nk.nn.BatchNorm1d) and norm.num_features == 16
    assert isinstance(cnn((1, 40), 10, norm="gn", head=16)[-3], nk.nn.GroupNorm)
    assert isinstance(cnn((1, 40), 10, norm="ln", head=16)[-3], nk.nn.LayerNorm)
    assert isinstance(head_norm("in", 16), torch.nn.Identity)  # no flat InstanceNorm
    after = cnn((1, 40), 10, norm="bn", placement="after", head=16)
    assert isinstance(after[-2], nk.nn.BatchNorm1d)  # Linear -> ReLU -> BN -> Linear
    assert headed(torch.randn(3, 1, 40)).shape == (3, 10)


def test_head_batchnorm_at_batch_two_keeps_only_the_sign():
    """The mechanism the batch-size experiment shows: BN over 2 values gives about +-1."""
    torch.manual_seed(0)
    a = torch.randn(64) * 5
    delta = (1 + torch.rand(64)) * torch.randn(64).sign()  # |delta| in [1, 2)
    out = head_norm("bn", 64)(torch.stack([a, a + delta]))
    # Only which example is larger survives, whatever the values were.
    torch.testing.assert_close(out[1], delta.sign(), rtol=0, atol=1e-4)
    torch.testing.assert_close(out[0], -delta.sign(), rtol=0, atol=1e-4)


def test_chunks_never_leave_a_single_example():
    assert chunks(10, 4) == [(0, 4), (4, 10)]
    assert chunks(8, 4) == [(0, 4), (4, 8)]
    assert chunks(3, 4) == [(0, 3)]
    assert chunks(9, 4) == [(0, 4), (4, 9)]


def test_ics_percentiles_are_exact_and_keep_the_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nk.nn.BatchNorm1d(6), nn.Sigmoid(), nn.Linear(6, 2))
    model.train()
    x = torch.randn(300, 5)
    got = sigmoid_input_percentiles(model, "2", x, unit=3)
    assert model.training
    model.eval()
    with torch.no_grad():
        pre = model[1](model[0](x))[:, 3].double().numpy()  # eval mode: running statistics
    np.testing.assert_allclose(got, np.percentile(pre, [15, 50, 85]), rtol=1e-5)
