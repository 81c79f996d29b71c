"""NaN/Inf guard of the functional API, empty batches, old checkpoints and whole-model checkpoints."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.functional import NonFiniteStatisticsWarning
from tests.conftest import assert_close


def test_non_finite_guard_in_functional_batch_norm(backend):
    """(The guard on every layer kind and call path: tests/nn/test_paths.py.)"""
    rm, rv = torch.zeros(2), torch.ones(2)
    with pytest.warns(NonFiniteStatisticsWarning, match="batch_norm: the batch statistics"):
        nk.functional.batch_norm(torch.full((4, 2), float("inf")), rm, rv, training=True)
    assert torch.equal(rm, torch.zeros(2)) and torch.equal(rv, torch.ones(2))


def test_finite_batches_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nk.nn.BatchNorm1d(4)(torch.randn(8, 4))


@pytest.mark.parametrize(
    ("cls", "args", "shape"),
    [
        ("BatchNorm2d", (3,), (0, 3, 4, 4)),
        ("BatchNorm1d", (3,), (0, 3)),
        ("BatchNorm2d", (3,), (2, 3, 0, 4)),
        ("LayerNorm", (4,), (0, 4)),
        ("GroupNorm", (1, 3), (0, 3, 2)),
        ("InstanceNorm1d", (3,), (0, 3, 5)),
        ("RMSNorm", (4,), (0, 4)),
    ],
)
def test_empty_batches_behave_as_torch(cls, args, shape):
    ours, theirs = getattr(nk.nn, cls)(*args), getattr(nn, cls)(*args)
    x_ours = torch.randn(shape, requires_grad=True)
    x_theirs = x_ours.detach().clone().requires_grad_()
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert y_ours.shape == y_theirs.shape
    y_ours.sum().backward()
    y_theirs.sum().backward()
    assert x_ours.grad.shape == x_theirs.grad.shape
    for (name, a), (_, b) in zip(ours.named_buffers(), theirs.named_buffers(), strict=True):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad), name


def _strip_num_batches_tracked(state_dict):
    old = type(state_dict)((k, v) for k, v in state_dict.items() if "num_batches_tracked" not in k)
    old._metadata = {k: dict(v, version=1) for k, v in state_dict._metadata.items()}
    return old


def test_old_checkpoint_without_num_batches_tracked_loads():
    trained = nn.BatchNorm2d(3)
    trained(torch.randn(4, 3, 5, 5) * 2 + 1)
    old = _strip_num_batches_tracked(trained.state_dict())
    ours, theirs = nk.nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    ours.load_state_dict(old)  # strict
    theirs.load_state_dict(_strip_num_batches_tracked(trained.state_dict()))
    assert int(ours.num_batches_tracked) == 0 == int(theirs.num_batches_tracked)
    assert torch.equal(ours.running_mean, trained.running_mean)


def test_pre_0_4_instance_norm_checkpoint_is_reported():
    stale = {"running_mean": torch.zeros(3), "running_var": torch.ones(3)}
    layer = nk.nn.InstanceNorm1d(3)
    with pytest.raises(RuntimeError, match="Unexpected running stats buffer"):
        layer.load_state_dict(stale)


def _model(ns):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        ns.BatchNorm2d(8),
        nn.ReLU(),
        ns.GroupNorm(2, 8),
        ns.InstanceNorm2d(8, affine=True, track_running_stats=True),
        nn.Flatten(2),
        ns.LayerNorm(36),
        nn.Flatten(),
        nn.Linear(8 * 36, 16),
        ns.BatchNorm1d(16, momentum=None),
        ns.RMSNorm(16),
        nn.Linear(16, 4),
    )


@pytest.mark.parametrize("direction", ["torch->normkit", "normkit->torch"])
def test_whole_model_checkpoint_loads_and_gives_the_same_outputs(direction, tmp_path):
    source_ns, target_ns = (nn, nk.nn) if direction == "torch->normkit" else (nk.nn, nn)
    source = _model(source_ns)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1)
    for _ in range(3):
        loss = source(torch.randn(8, 3, 6, 6)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(source.state_dict(), tmp_path / "ckpt.pt")
    target = _model(target_ns)
    target.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    x = torch.randn(5, 3, 6, 6)
    for mode in ("eval", "train"):
        getattr(source, mode)()
        getattr(target, mode)()
        assert_close(target(x), source(x), torch.float32, what=mode)
    for key, value in source.state_dict().items():  # including the train-mode update
        assert_close(target.state_dict()[key], value, torch.float32, what=key)


class _Doubled(nn.Module):
    def forward(self, t):
        return 2 * t


@pytest.mark.parametrize("cls", ["BatchNorm2d", "BatchNormAct2d"])
@pytest.mark.parametrize("training", [True, False])
def test_parametrized_tensors_are_read_as_attributes(cls, training):
    """The layers read their tensors from the parameter and buffer dicts; parametrized ones
    (which leave those dicts for a property) must still be read, as torch's forward does."""
    from torch.nn.utils import parametrize

    x = torch.randn(4, 3, 5, 5)
    layers = [nn.BatchNorm2d(3), getattr(nk.nn, cls)(3)]
    for layer in layers:
        if hasattr(layer, "act"):
            layer.act = "identity"
        layer.running_var.fill_(3.0)
        parametrize.register_parametrization(layer, "weight", _Doubled())
        if not training:
            parametrize.register_parametrization(layer, "running_var", _Doubled())
        layer.train(training)
    theirs, ours = (layer(x) for layer in layers)
    assert_close(ours, theirs, torch.float32)
    assert_close(layers[1].running_mean, layers[0].running_mean, torch.float32)


@pytest.mark.parametrize("backend_name", ["torch", "numba"])
def test_a_refused_batch_still_backpropagates(backend_name):
    """The guard puts the running statistics back after torch's kernel updated them in
    place; torch's backward saved them, so putting them back must not count as a
    modification (backward would raise "modified by an inplace operation")."""
    layer = nk.nn.BatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5)
    x[0, 1, 2, 2] = float("nan")
    x.requires_grad_()
    with nk.use_backend(backend_name), pytest.warns(NonFiniteStatisticsWarning):
        y = layer(x)
    y.sum().backward()
    assert torch.equal(layer.running_mean, torch.zeros(3)) and int(layer.num_batches_tracked) == 0
