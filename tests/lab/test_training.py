"""The training loop, the seeds, and the measurement helpers (percentiles, recalibration)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import normkit as nk
from normkit.lab import _compat
from normkit.lab.datasets import load_dataset
from normkit.lab.errors import LabError
from normkit.lab.models import cnn, copy_init, make_norm, mlp
from normkit.lab.training import accuracy, batches, derive_seed, eval_steps, train


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


def test_input_percentiles_match_numpy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Sigmoid(), nn.Linear(6, 2))
    x = torch.randn(200, 5)
    got = _compat.input_percentiles(model, model[1], x, unit=3)
    pre = model[0](x)[:, 3].detach().double().numpy()
    np.testing.assert_allclose(got, np.percentile(pre, [15, 50, 85]), rtol=1e-12)


def test_recalibrate_gives_exact_population_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 3, 3),
        nk.nn.BatchNorm1d(3),
        nn.ReLU(),
        nn.Conv1d(3, 4, 3),
        nk.nn.BatchNorm1d(4),
    )
    model.train()
    for _ in range(5):  # some running statistics to overwrite
        model(torch.randn(8, 2, 10) * 3 + 1)
    x = torch.randn(103, 2, 10) * 2 + 0.5
    original = {k: v.clone() for k, v in model.state_dict().items()}
    new = _compat.recalibrate(model, x, batch_size=25)
    for key, value in model.state_dict().items():  # the input model is untouched
        assert torch.equal(value, original[key])
    assert new.training  # mode restored
    with torch.no_grad():
        z1 = model[0](x).double()  # input of the first BN
        mean1 = z1.mean((0, 2))
        var1 = z1.transpose(0, 1).reshape(3, -1).var(1, unbiased=True)
        torch.testing.assert_close(new[1].running_mean.double(), mean1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(new[1].running_var.double(), var1, rtol=1e-5, atol=1e-6)
        new.eval()
        z2 = new[3](new[2](new[1](new[0](x)))).double()  # second BN's input, first recalibrated
        torch.testing.assert_close(
            new[4].running_mean.double(), z2.mean((0, 2)), rtol=1e-5, atol=1e-6
        )
        var2 = z2.transpose(0, 1).reshape(4, -1).var(1, unbiased=True)
        torch.testing.assert_close(new[4].running_var.double(), var2, rtol=1e-5, atol=1e-6)
