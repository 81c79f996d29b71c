"""freeze()/unfreeze(): fine-tuning patterns that survive model.train(); exact inverses."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools import freeze, frozen, is_frozen, unfreeze
from tests.conftest import assert_close
from tests.tools.models import ResNetish, TransformerBlock, randomize_norm_state

NAMESPACES = {"torch": nn, "normkit": nk.nn}


def _flags(model):
    return (
        [(n, m.training) for n, m in model.named_modules()],
        [(n, p.requires_grad) for n, p in model.named_parameters()],
        [(n, dict(m._forward_pre_hooks), "train" in m.__dict__) for n, m in model.named_modules()],
    )


@pytest.mark.parametrize("library", sorted(NAMESPACES))
def test_frozen_bn_stays_in_eval_and_fine_tunes_the_rest(library):
    model = randomize_norm_state(ResNetish(NAMESPACES[library]))
    freeze(model)
    model.train()
    bns = [m for _, m in nk.tools.iter_norm_layers(model)]
    assert all(not m.training for m in bns) and model.stem[0].training
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3, 8, 8)
    model(x).square().mean().backward()
    optimizer.step()
    after = model.state_dict()
    for name, bn in nk.tools.iter_norm_layers(model):
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(after[f"{name}.{key}"], before[f"{name}.{key}"]), (name, key)
        assert bn.weight.grad is None
    assert not torch.equal(after["stem.0.weight"], before["stem.0.weight"])
    # Frozen statistics: the BN output equals the eval-mode output.
    bn = model.stem[1]
    z = torch.randn(4, 8, 5, 5)
    reference = copy.deepcopy(bn)
    unfreeze(reference)
    assert_close(bn(z), reference.eval()(z))


@pytest.mark.parametrize("stats, affine", [(True, True), (True, False), (False, True)])
def test_unfreeze_is_the_exact_inverse(stats, affine):
    model = ResNetish(nn).train()
    model.layers[1].bn2.eval()  # mixed flags
    model.stem[1].weight.requires_grad_(False)
    flags = _flags(model)
    freeze(model, stats=stats, affine=affine)
    assert _flags(model) != flags
    unfreeze(model)
    assert _flags(model) == flags


def test_unfreeze_follows_the_mode_asked_for_while_frozen():
    model = ResNetish(nk.nn).eval()
    freeze(model, affine=False)
    model.train()
    assert not model.stem[1].training
    unfreeze(model)
    assert model.stem[1].training and all(m.training for m in model.modules())
    freeze(model).eval()
    unfreeze(model)
    assert not any(m.training for m in model.modules())


def test_refreeze_keeps_the_original_state_and_kinds():
    model = TransformerBlock(nk.nn)
    flags = _flags(model)
    freeze(model)  # kinds=("batch",): nothing in a Transformer block
    assert _flags(model) == flags
    freeze(model, kinds=("layer",))
    assert is_frozen(model.ln1) == {"stats": False, "affine": True}
    assert not model.ln1.weight.requires_grad and model.ln1.training
    freeze(model, stats=True, affine=True, kinds=("layer",))  # again: no stats for LN
    unfreeze(model)
    assert _flags(model) == flags and is_frozen(model.ln1) is None


def test_survives_deepcopy_and_pickle():
    model = freeze(ResNetish(nk.nn))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.train()
        assert not clone.stem[1].training and not clone.stem[1].weight.requires_grad
        unfreeze(clone)
        assert clone.stem[1].training and clone.stem[1].weight.requires_grad
    assert not model.stem[1].training  # the original is still frozen
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert is_frozen(loaded.stem[1]) == {"stats": True, "affine": True}
    assert model.state_dict().keys() == ResNetish(nk.nn).state_dict().keys()


def test_context_manager_and_include():
    model = ResNetish(nn).train()
    freeze(model, include=lambda name, m: name == "stem.1")
    flags = _flags(model)
    with frozen(model, affine=False) as m:
        assert m is model and not model.layers[0].bn1.training
        assert model.layers[0].bn1.weight.requires_grad
    assert _flags(model) == flags  # stem.1 still frozen, the others back
    assert is_frozen(model.stem[1]) is not None
    with pytest.raises(RuntimeError, match="boom"), frozen(model):
        raise RuntimeError("boom")
    assert _flags(model) == flags


def test_nothing_to_freeze():
    with pytest.raises(ValueError, match="nothing to freeze"):
        freeze(nn.BatchNorm1d(3), stats=False, affine=False)


def test_convert_carries_the_frozen_state():
    model = ResNetish(nn).train()
    freeze(model)
    ours = nk.tools.convert(model, "normkit")
    ours.train()
    assert not ours.stem[1].training and not ours.stem[1].weight.requires_grad
    assert is_frozen(ours.stem[1]) == {"stats": True, "affine": True}
    unfreeze(ours)
    assert ours.stem[1].training and ours.stem[1].weight.requires_grad
    gn = nk.tools.convert(model, "group")  # no running statistics: only the affine stays frozen
    assert is_frozen(gn.stem[1]) == {"stats": False, "affine": True} and gn.stem[1].training
    unfreeze(gn)
    assert gn.stem[1].weight.requires_grad


def test_fold_inplace_with_example_compares_against_the_original():
    model = randomize_norm_state(ResNetish(nn)).eval()
    x = torch.randn(2, 3, 8, 8)
    _, report = nk.tools.fold(model, inplace=True, example=x, return_report=True)
    assert report.max_rel_error < 1e-5 and isinstance(model.stem[1], nn.Identity)
