"""single_sample: a training batch with one value per channel (torch raises) under each
policy, for every BatchNorm-family layer, on both backends; torch is the oracle.

``running_stats``: output and gradients of torch's layer in eval mode with the same state,
state untouched. ``skip_update``: the batch-statistics formula (torch's own kernel, which
computes it when called without running buffers; BatchRenorm: ``normkit.reference_variants``),
state untouched, one warning per layer. ``error``: torch's error.
"""

from __future__ import annotations

import copy
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normkit as nk
from normkit import reference_variants as rv
from normkit.functional import SingleSampleWarning
from tests.conftest import assert_close

BACKENDS = ("torch", "numba")
C = 5


@dataclass(frozen=True)
class Kind:
    """A layer kind: how to build it, an input of one value per channel, the torch class
    whose eval mode is its inference, and its activation."""

    name: str
    build: Any
    shape: tuple[int, ...]
    torch_cls: type[nn.Module]
    act: str = "identity"
    tracks: bool = True  # accepts track_running_stats=False

    def layer(self, policy: str, **kwargs) -> nn.Module:
        return self.build(single_sample=policy, **kwargs).double()


def _lazy(cls):
    def build(**kwargs):
        layer = cls(**kwargs)
        with torch.no_grad():
            layer.eval()(torch.zeros(2, C))  # materialize C channels
        return layer.train()

    return build


KINDS = [
    Kind("BatchNorm1d", lambda **k: nk.nn.BatchNorm1d(C, **k), (1, C), nn.BatchNorm1d),
    Kind("BatchNorm1d-3d", lambda **k: nk.nn.BatchNorm1d(C, **k), (1, C, 1), nn.BatchNorm1d),
    Kind("BatchNorm2d", lambda **k: nk.nn.BatchNorm2d(C, **k), (1, C, 1, 1), nn.BatchNorm2d),
    Kind("BatchNorm3d", lambda **k: nk.nn.BatchNorm3d(C, **k), (1, C, 1, 1, 1), nn.BatchNorm3d),
    Kind("SyncBatchNorm", lambda **k: nk.nn.SyncBatchNorm(C, **k), (1, C, 1, 1), nn.BatchNorm2d),
    Kind(
        "BatchRenorm1d",
        lambda **k: nk.nn.BatchRenorm1d(C, rmax=2.0, dmax=0.5, **k),
        (1, C),
        nn.BatchNorm1d,
        tracks=False,
    ),
    Kind(
        "BatchRenorm2d",
        lambda **k: nk.nn.BatchRenorm2d(C, warmup_steps=10, **k),
        (1, C, 1, 1),
        nn.BatchNorm2d,
        tracks=False,
    ),
    Kind(
        "GhostBatchNorm1d",
        lambda **k: nk.nn.GhostBatchNorm1d(C, virtual_batch_size=4, **k),
        (1, C),
        nn.BatchNorm1d,
        tracks=False,
    ),
    Kind(
        "BatchNormAct1d",
        lambda **k: nk.nn.BatchNormAct1d(C, act="relu", **k),
        (1, C),
        nn.BatchNorm1d,
        "relu",
    ),
    Kind(
        "BatchNormAct2d",
        lambda **k: nk.nn.BatchNormAct2d(C, act="silu", **k),
        (1, C, 1, 1),
        nn.BatchNorm2d,
        "silu",
    ),
    Kind("LazyBatchNorm1d", _lazy(nk.nn.LazyBatchNorm1d), (1, C), nn.BatchNorm1d),
]
KIND_IDS = [k.name for k in KINDS]
ACTS = {"identity": lambda y: y, "relu": F.relu, "silu": F.silu}


def _randomize(layer: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(C, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(C, generator=g, dtype=torch.float64))
        if layer.running_mean is not None:
            layer.running_mean.copy_(torch.randn(C, generator=g, dtype=torch.float64))
            layer.running_var.copy_(0.5 + torch.rand(C, generator=g, dtype=torch.float64))
            layer.num_batches_tracked.fill_(7)
    return layer


def _state(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in layer.state_dict().items()}


def _assert_state_unchanged(layer: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = layer.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed"


def _forward_backward(layer, x, grad):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(grad)
    return y.detach(), x.grad, layer.weight.grad, layer.bias.grad


def _torch_eval_twin(kind: Kind, layer: nn.Module) -> nn.Module:
    twin = kind.torch_cls(C).double()
    twin.load_state_dict(layer.state_dict())  # strict: the same keys as torch's
    return twin.eval()


def _inputs(kind: Kind, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = 3 + torch.randn(kind.shape, generator=g, dtype=torch.float64)
    return x, torch.randn(kind.shape, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- running_stats


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_running_stats_gives_torchs_eval_output_and_gradients_and_updates_nothing(kind, backend):
    layer = _randomize(kind.layer("running_stats")).train()
    twin = _torch_eval_twin(kind, layer)
    before = _state(layer)
    x, grad = _inputs(kind)
    with nk.use_backend(backend):
        y, dx, dw, db = _forward_backward(layer, x, grad)
    x_ref = x.clone().requires_grad_(True)
    y_ref = ACTS[kind.act](twin(x_ref))
    y_ref.backward(grad)
    assert_close(y, y_ref, what=f"{kind.name} output")
    assert_close(dx, x_ref.grad, what=f"{kind.name} input gradient")
    assert_close(dw, twin.weight.grad, what=f"{kind.name} weight gradient")
    assert_close(db, twin.bias.grad, what=f"{kind.name} bias gradient")
    _assert_state_unchanged(layer, before)  # running stats and num_batches_tracked
    assert layer.training


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_running_stats_is_silent_and_leaves_other_batches_alone(kind):
    """Only a batch of one value per channel is diverted: a (2, ...) batch trains as torch's
    layer does (statistics from the batch, running statistics updated)."""
    layer = _randomize(kind.layer("running_stats")).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(_inputs(kind)[0])
    plain = _randomize(kind.layer("error")).train()
    x = torch.randn((2, *kind.shape[1:]), dtype=torch.float64)
    assert torch.equal(layer(x), plain(x))
    for key, value in plain.state_dict().items():
        assert torch.equal(layer.state_dict()[key], value), key
    assert int(layer.num_batches_tracked) == 8


SPATIAL = [k for k in KINDS if len(k.shape) > 2]


@pytest.mark.parametrize("policy", ["running_stats", "skip_update"])
@pytest.mark.parametrize("kind", SPATIAL, ids=[k.name for k in SPATIAL])
def test_one_sample_with_several_values_per_channel_trains_as_usual(kind, policy):
    """N = 1 is not the condition: a (1, C, 2, ...) batch has two values per channel, so it
    trains (batch statistics, running update) exactly as without the option, silently."""
    layer = _randomize(kind.layer(policy)).train()
    plain = _randomize(kind.layer("error")).train()
    x = torch.randn((1, C, 2, *kind.shape[3:]), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(layer(x), plain(x))
    for key, value in plain.state_dict().items():
        assert torch.equal(layer.state_dict()[key], value), key
    assert int(layer.num_batches_tracked) == 8


# ----------------------------------------------------------------------------- skip_update


def _batch_statistics_oracle(kind: Kind, layer: nn.Module, x: torch.Tensor, grad=None):
    """What training computes with the batch's own statistics, without any update: the
    output, and with ``grad`` also the input, weight and bias gradients."""
    if kind.name.startswith("BatchRenorm"):
        rmax, dmax = layer.current_limits()
        arrays = [t.detach().numpy() for t in (layer.running_mean, layer.running_var)]
        w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
        y, _, _, r, d = rv.batch_renorm_train(x.numpy(), *arrays, w, b, rmax, dmax, layer.eps)
        if grad is None:
            return torch.from_numpy(np.asarray(y))
        grads = rv.batch_renorm_train_backward(grad.numpy(), x.numpy(), r, d, w, layer.eps)
        return tuple(torch.from_numpy(np.asarray(t)) for t in (y, *grads))
    x = x.clone().requires_grad_(True)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    y = ACTS[kind.act](torch.batch_norm(x, w, b, None, None, True, 0.0, layer.eps, False))
    if grad is None:
        return y.detach()
    y.backward(grad)
    return y.detach(), x.grad, w.grad, b.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_skip_update_normalizes_with_the_batch_and_updates_nothing(kind, backend):
    layer = _randomize(kind.layer("skip_update")).train()
    before = _state(layer)
    x, grad = _inputs(kind)
    y_ref, dx_ref, dw_ref, db_ref = _batch_statistics_oracle(kind, layer, x, grad)
    with nk.use_backend(backend), pytest.warns(SingleSampleWarning):
        y, dx, dw, db = _forward_backward(layer, x, grad)
    assert_close(y, y_ref, what=f"{kind.name} output")
    if not kind.name.startswith("BatchRenorm"):
        # one value per channel: each value is its channel's mean, so y = act(beta)
        beta = layer.bias.detach().reshape(1, C, *[1] * (x.dim() - 2)).expand_as(x)
        assert_close(y, ACTS[kind.act](beta), what=f"{kind.name} output is act(beta)")
    # The input gradient is 0 (the output does not depend on the input); its terms are
    # O(|grad| * |gamma| / sqrt(eps)), the scale its rounding is judged against.
    scale = float(grad.abs().max() * layer.weight.detach().abs().max() / layer.eps**0.5)
    assert_close(dx, dx_ref, floor=scale, what=f"{kind.name} input gradient")
    assert_close(dx, torch.zeros_like(x), floor=scale, what=f"{kind.name} input gradient is 0")
    assert_close(dw, dw_ref, floor=float(grad.abs().max()), what=f"{kind.name} weight grad")
    assert_close(db, db_ref, what=f"{kind.name} bias gradient")
    _assert_state_unchanged(layer, before)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_skip_update_warns_once_per_layer_naming_it(kind):
    first, second = kind.layer("skip_update").train(), kind.layer("skip_update").train()
    x = _inputs(kind)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            first(x)
        second(x)
        first(x)
    ours = [w for w in caught if issubclass(w.category, SingleSampleWarning)]
    messages = [str(w.message) for w in ours]
    assert len(messages) == 2, messages
    assert [w.filename for w in ours] == [__file__] * 2  # the user's line, not normkit's
    assert messages[0].startswith(f"{first._single_sample_owner()}: a batch with one value")
    assert "single_sample='skip_update'" in messages[0] and "not update" in messages[0]


# ----------------------------------------------------------------------------------- error


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_the_default_is_torchs_error(kind):
    """Without the option: torch's message, after the layer's name (normkit's error style),
    the size written as a tuple; the state is untouched."""
    layer = _randomize(kind.build().double()).train()
    assert layer.single_sample == "error"
    before = _state(layer)
    x = _inputs(kind)[0]
    with pytest.raises(ValueError) as theirs:
        kind.torch_cls(C).double().train()(x)  # torch's own
    with pytest.raises(ValueError) as ours:
        layer(x)
    torch_message = re.sub(r"torch\.Size\(\[(.*)\]\)", r"(\1)", str(theirs.value))
    assert torch_message.startswith("Expected more than 1 value per channel when training")
    assert str(ours.value) == f"{type(layer).__name__}({C}): {torch_message}"
    _assert_state_unchanged(layer, before)


# ------------------------------------------- eval mode without running statistics (#156051)

NO_STATS = [k for k in KINDS if k.tracks and not k.name.startswith("Lazy")]


@pytest.mark.parametrize("kind", NO_STATS, ids=[k.name for k in NO_STATS])
def test_without_running_statistics_eval_at_batch_one(kind):
    x = _inputs(kind)[0]
    torch_layer = kind.torch_cls(C, track_running_stats=False).double().eval()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch_layer(x)  # pytorch#156051: torch raises in eval mode too
    plain = kind.build(track_running_stats=False).double().eval()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        plain(x)
    # running_stats cannot apply: refused when built, and when set later
    with pytest.raises(ValueError, match=r"single_sample='running_stats' needs running stat"):
        kind.build(track_running_stats=False, single_sample="running_stats")
    with pytest.raises(ValueError, match=r"track_running_stats=False"):
        plain.single_sample = "running_stats"
    assert plain.single_sample == "error"
    # skip_update: the layer's own formula, batch statistics (output act(beta)), one warning
    layer = _randomize(kind.build(track_running_stats=False, single_sample="skip_update"))
    layer = layer.double().eval()
    with pytest.warns(SingleSampleWarning, match="skip_update"):
        y = layer(x)
    assert_close(y, _batch_statistics_oracle(kind, layer, x))
    assert layer.state_dict().keys() == torch_layer.state_dict().keys()


def test_running_stats_with_the_buffers_removed_later_names_the_option():
    layer = nk.nn.BatchNorm1d(C, single_sample="running_stats").train()
    layer.running_mean = None
    layer.running_var = None
    with pytest.raises(ValueError, match=r"BatchNorm1d\(5\): single_sample='running_stats' "
                       r"cannot normalize .* no running statistics"):  # fmt: skip
        layer(torch.randn(1, C))


# ------------------------------------------------------------------ configuration handling


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("bad", ["bogus", "Error", True, None, 1])
def test_a_bad_policy_is_refused_naming_the_layer(kind, bad):
    with pytest.raises(ValueError, match=r"single_sample must be one of 'error', "
                       r"'running_stats', 'skip_update'.*got") as info:  # fmt: skip
        kind.build(single_sample=bad)
    assert str(info.value).startswith(kind.name.split("-")[0])
    layer = kind.build()
    with pytest.raises(ValueError, match=rf"^{type(layer).__name__}\({C}\): single_sample"):
        layer.single_sample = bad
    assert layer.single_sample == "error"


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_state_dict_repr_copy_and_pickle(kind):
    plain = kind.build().double()
    layer = _randomize(kind.layer("running_stats"))
    # the state dict is torch's: same keys, loads strictly both ways
    torch_layer = kind.torch_cls(C).double()
    assert list(layer.state_dict()) == list(torch_layer.state_dict())
    torch_layer.load_state_dict(layer.state_dict())
    fresh = kind.layer("skip_update")
    fresh.load_state_dict(torch_layer.state_dict())
    assert fresh.single_sample == "skip_update"
    # repr: only a non-default policy shows
    assert "single_sample" not in repr(plain)
    assert repr(layer) == repr(plain)[:-1] + ", single_sample='running_stats')"
    # deepcopy and pickle keep it
    for copied in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert copied.single_sample == "running_stats"
        x = _inputs(kind)[0]
        assert torch.equal(copied.train()(x), layer.train()(x))


def test_lazy_layers_keep_the_policy_through_materialization():
    lazy = nk.nn.LazyBatchNorm1d(single_sample="running_stats")
    assert lazy.single_sample == "running_stats" and "single_sample='running_stats'" in repr(lazy)
    copied = copy.deepcopy(lazy)
    x = torch.randn(1, C)
    y = lazy.train()(x)  # the first call: materialize, then the policy
    assert type(lazy) is nk.nn.BatchNorm1d and lazy.single_sample == "running_stats"
    assert int(lazy.num_batches_tracked) == 0 and torch.equal(lazy.running_mean, torch.zeros(C))
    assert torch.equal(y, lazy.eval()(x))
    assert copied.single_sample == "running_stats"
    with pytest.raises(ValueError, match="track_running_stats=False"):
        nk.nn.LazyBatchNorm2d(track_running_stats=False, single_sample="running_stats")


def test_instance_norm_has_no_policy():
    """InstanceNorm's error is about the spatial size (every batch of the model hits it),
    not about a batch of one: no single_sample there (decided in docs/single_sample.md)."""
    with pytest.raises(TypeError):
        nk.nn.InstanceNorm2d(C, single_sample="running_stats")
    with pytest.raises(TypeError):
        nk.nn.LazyInstanceNorm2d(single_sample="running_stats")


def test_sync_batch_norm_conversion_keeps_the_policy():
    model = nn.Sequential(nk.nn.BatchNorm2d(C, single_sample="skip_update"), nn.BatchNorm2d(C))
    synced = nk.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert [m.single_sample for m in synced] == ["skip_update", "error"]


# ------------------------------------------------------------------------ compile and FX


def _compiled_calls(layer, x, calls: int = 3):
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ys = [compiled(x) for _ in range(calls)]
    return ys, [w for w in caught if issubclass(w.category, SingleSampleWarning)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", [KINDS[0], KINDS[3], KINDS[5], KINDS[8]], ids=lambda k: k.name)
def test_compile_fullgraph(kind, backend):
    torch._dynamo.reset()
    x = _inputs(kind)[0]
    with nk.use_backend(backend):
        layer = _randomize(kind.layer("running_stats")).train()
        before = _state(layer)
        expected = ACTS[kind.act](_torch_eval_twin(kind, layer)(x))
        ys, caught = _compiled_calls(layer, x)
        for y in ys:
            assert_close(y, expected, what=f"compiled {kind.name}")
        _assert_state_unchanged(layer, before)
        assert caught == []

        layer = _randomize(kind.layer("skip_update")).train()
        before = _state(layer)
        ys, caught = _compiled_calls(layer, x)
        for y in ys:
            assert_close(y, _batch_statistics_oracle(kind, layer, x))
        _assert_state_unchanged(layer, before)
        assert len(caught) == 1  # at trace time, once for the compiled graph

        # a normal batch through the same compiled layer still trains
        layer = _randomize(kind.layer("running_stats")).train()
        compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
        compiled(torch.randn((4, *kind.shape[1:]), dtype=torch.float64))
        assert int(layer.num_batches_tracked) == 8


def test_fx_trace_keeps_one_node_per_layer_and_the_policy():
    model = nn.Sequential(
        nn.Linear(3, C, bias=False).double(),
        _randomize(nk.nn.BatchNorm1d(C, single_sample="running_stats").double()),
        _randomize(nk.nn.BatchNormAct1d(C, single_sample="skip_update").double(), seed=2),
    )
    traced = torch.fx.symbolic_trace(model)
    targets = [n.target.__name__ for n in traced.graph.nodes if n.op == "call_function"]
    assert targets == ["batch_norm_forward", "batch_norm_act_forward"]
    x = torch.randn(1, 3, dtype=torch.float64)
    before = _state(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = traced.train()(x)
        traced(x)
    assert sum(issubclass(c.category, SingleSampleWarning) for c in caught) == 1
    _assert_state_unchanged(model, before)
    assert_close(y, F.relu(model[2].bias.detach()).reshape(1, C))  # act(beta)
    # the running_stats layer alone, traced: torch's eval output
    head = torch.fx.symbolic_trace(model[:2]).train()
    assert_close(head(x), _torch_eval_twin(KINDS[0], model[1])(model[0](x)))
    _assert_state_unchanged(model, before)


# --------------------------------------------------------------------------- functional


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_batch_norm_keyword(backend):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, C, dtype=torch.float64, generator=g)
    w, b = torch.randn(C, dtype=torch.float64), torch.randn(C, dtype=torch.float64)
    rm, rv_ = torch.randn(C, dtype=torch.float64), torch.rand(C, dtype=torch.float64) + 0.5
    saved = rm.clone(), rv_.clone()
    fn = nk.functional
    with nk.use_backend(backend):
        y = fn.batch_norm(x, rm, rv_, w, b, training=True, single_sample="running_stats")
        assert_close(y, F.batch_norm(x, rm, rv_, w, b, training=False))
        y = fn.batch_norm_act(x, rm, rv_, w, b, True, act="relu", single_sample="running_stats")
        assert_close(y, F.relu(F.batch_norm(x, rm, rv_, w, b, training=False)))
        y = fn.ghost_batch_norm(x, rm, rv_, w, b, True, single_sample="running_stats")
        assert_close(y, F.batch_norm(x, rm, rv_, w, b, training=False))
        y = fn.sync_batch_norm(x, rm, rv_, w, b, True, single_sample="running_stats")
        assert_close(y, F.batch_norm(x, rm, rv_, w, b, training=False))
        y = fn.batch_renorm(x, rm, rv_, w, b, True, single_sample="running_stats")
        assert_close(y, F.batch_norm(x, rm, rv_, w, b, training=False))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                y = fn.batch_norm(x, rm, rv_, w, b, training=True, single_sample="skip_update")
                assert_close(y, b.reshape(1, C))
            y = fn.batch_norm(x, None, None, w, b, training=True, single_sample="skip_update")
            assert_close(y, b.reshape(1, C))
        # stateless: a warning at every call (Python's default filter shows each once)
        assert sum(issubclass(c.category, SingleSampleWarning) for c in caught) == 3
    assert torch.equal(rm, saved[0]) and torch.equal(rv_, saved[1])
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        fn.batch_norm(x, rm, rv_, w, b, training=True)
    with pytest.raises(ValueError, match=r"^batch_norm: single_sample='running_stats' cannot"):
        fn.batch_norm(x, None, None, w, b, training=True, single_sample="running_stats")
    with pytest.raises(ValueError, match=r"^batch_norm: single_sample must be one of"):
        fn.batch_norm(x, rm, rv_, w, b, training=True, single_sample="eval")
    with pytest.raises(ValueError, match=r"^sync_batch_norm: single_sample must be one of"):
        fn.sync_batch_norm(torch.randn(4, C), None, None, training=True, single_sample="x")


# ---------------------------------------------------------------------------------- docs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "single_sample.md"


def test_docs_example_runs():
    """The Python block of docs/single_sample.md runs as written (its asserts included)."""
    (code,) = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "running_stats" is silent
        exec(compile(code, str(DOCS), "exec"), {"__name__": "__docs__"})
