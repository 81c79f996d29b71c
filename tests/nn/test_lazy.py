"""Lazy BatchNorm/InstanceNorm against torch's own lazy modules: defaults, isinstance before
and after the first call, outputs, running statistics, gradients and state_dicts after
materialization, torch's lazy-module machinery (load_state_dict before the first call, dry
runs, .to(dtype)), copies, errors and torch.compile."""

from __future__ import annotations

import copy
import doctest
import inspect
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm as TorchBatchNormBase
from torch.nn.modules.instancenorm import _InstanceNorm as TorchInstanceNormBase
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

import normkit as nk
from normkit.functional import NormDTypeError, NormInputError
from tests.conftest import assert_close

DOCS = Path(__file__).resolve().parents[2] / "docs" / "variants.md"

# name -> (normkit lazy, torch lazy, materialized normkit class, input shape)
PAIRS = {
    "BatchNorm1d-NC": (nk.nn.LazyBatchNorm1d, nn.LazyBatchNorm1d, nk.nn.BatchNorm1d, (6, 3)),
    "BatchNorm1d-NCL": (nk.nn.LazyBatchNorm1d, nn.LazyBatchNorm1d, nk.nn.BatchNorm1d, (4, 3, 5)),
    "BatchNorm2d": (nk.nn.LazyBatchNorm2d, nn.LazyBatchNorm2d, nk.nn.BatchNorm2d, (4, 3, 5, 3)),
    "BatchNorm3d": (
        nk.nn.LazyBatchNorm3d,
        nn.LazyBatchNorm3d,
        nk.nn.BatchNorm3d,
        (2, 3, 3, 2, 4),
    ),
    "InstanceNorm1d": (
        nk.nn.LazyInstanceNorm1d,
        nn.LazyInstanceNorm1d,
        nk.nn.InstanceNorm1d,
        (3, 3, 7),
    ),
    "InstanceNorm2d": (
        nk.nn.LazyInstanceNorm2d,
        nn.LazyInstanceNorm2d,
        nk.nn.InstanceNorm2d,
        (2, 3, 5, 4),
    ),
    "InstanceNorm3d": (
        nk.nn.LazyInstanceNorm3d,
        nn.LazyInstanceNorm3d,
        nk.nn.InstanceNorm3d,
        (2, 3, 2, 3, 4),
    ),
}
LAZY_CLASSES = sorted({p[0] for p in PAIRS.values()}, key=lambda c: c.__name__)
# One input shape per class (the first listed).
BY_CLASS = {p[0]: p for p in reversed(PAIRS.values())}

# The options with state: running statistics with momentum 0.1, 0.5 or the cumulative
# average (InstanceNorm: None leaves them unchanged), affine with or without bias.
OPTIONS = [
    {},
    {"momentum": 0.5, "eps": 1e-3},
    {"momentum": None},
    {"affine": False},
    {"track_running_stats": False},
    {"bias": False},
]


def _x(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (3 + 2 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)


def _state(layer):
    return {k: v.detach().clone() for k, v in layer.state_dict().items()}


def _assert_same_state(ours, theirs, dtype=torch.float32, what=""):
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b), what
    assert a._metadata == b._metadata, what
    for key, value in b.items():
        assert a[key].dtype == value.dtype and a[key].shape == value.shape, (what, key)
        if key == "num_batches_tracked":
            assert torch.equal(a[key], value), (what, key)
        else:
            assert_close(a[key], value, dtype, what=f"{what} {key}")


def _torch_twin(target):
    """torch.nn's class a normkit class subclasses (BatchNorm2d -> torch.nn.BatchNorm2d)."""
    return next(c for c in target.__mro__ if c.__module__.startswith("torch.nn"))


def _class_flags(module):
    """isinstance of every torch class a utility might look for."""
    classes = (
        LazyModuleMixin,
        TorchBatchNormBase,
        TorchInstanceNormBase,
        nn.LazyBatchNorm1d,
        nn.LazyBatchNorm2d,
        nn.LazyBatchNorm3d,
        nn.LazyInstanceNorm1d,
        nn.LazyInstanceNorm2d,
        nn.LazyInstanceNorm3d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
    )
    return {c.__name__: isinstance(module, c) for c in classes}


# ---------------------------------------------------------------------- the classes


@pytest.mark.parametrize("lazy_cls", LAZY_CLASSES, ids=lambda c: c.__name__)
def test_signature_defaults_and_repr_are_torchs(lazy_cls):
    """torch's lazy InstanceNorms default to affine=True, track_running_stats=True (their
    base class's defaults, unlike InstanceNorm): the same here."""
    torch_cls = BY_CLASS[lazy_cls][1]
    ours, theirs = inspect.signature(lazy_cls), inspect.signature(torch_cls)
    # normkit's one extension: the BatchNorms' keyword-only batch-of-1 policy, torch's default
    extra = [("single_sample", "error", inspect.Parameter.KEYWORD_ONLY)]
    assert [(p.name, p.default, p.kind) for p in ours.parameters.values()] == [
        (p.name, p.default, p.kind) for p in theirs.parameters.values()
    ] + (extra if "BatchNorm" in lazy_cls.__name__ else [])
    a, b = lazy_cls(), torch_cls()
    assert (a.affine, a.track_running_stats, a.eps, a.momentum, a.num_features) == (
        b.affine,
        b.track_running_stats,
        b.eps,
        b.momentum,
        b.num_features,
    )
    assert a.affine and a.track_running_stats
    assert repr(a) == repr(b)
    assert type(a).__name__ == type(b).__name__
    assert lazy_cls.__name__ in nk.nn.__all__


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_isinstance_before_and_after_the_first_call(name):
    """Before: torch's lazy class (torch's lazy-module machinery, e.g. torch.compile's,
    recognises it; BatchNorm utilities see a torch _BatchNorm). After: normkit's layer and
    torch's, and no longer lazy: exactly torch's flags at each stage."""
    lazy_cls, torch_cls, target, shape = PAIRS[name]
    ours, theirs = lazy_cls(), torch_cls()
    assert _class_flags(ours) == _class_flags(theirs)
    assert isinstance(ours, torch_cls) and isinstance(ours, LazyModuleMixin)
    x = _x(shape)
    ours(x), theirs(x)
    assert type(ours) is target
    assert _class_flags(ours) == _class_flags(theirs)
    assert isinstance(ours, _torch_twin(target)) and _torch_twin(target).__name__ == target.__name__
    assert not isinstance(ours, LazyModuleMixin)
    assert not hasattr(ours, "_initialize_hook") and not ours._forward_pre_hooks
    assert repr(ours) == repr(theirs)


# ---------------------------------------------------------------------- parity


def _train_then_eval(layer, shape, steps=3):
    """Outputs and gradients of ``steps`` training calls (the first materializes), then
    one evaluation call."""
    outputs, grads = [], []
    for step in range(steps):
        x = _x(shape, seed=step).requires_grad_(True)
        y = layer(x)
        (y * _x(shape, seed=10 + step)).sum().backward()
        outputs.append(y.detach())
        grads.append(x.grad)
        if layer.weight is not None:
            grads.append(layer.weight.grad.clone())
    layer.eval()
    outputs.append(layer(_x(shape, seed=99)).detach())
    return outputs, grads


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(map(str, o.items())) or "-")
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_outputs_running_stats_and_state_dict_equal_torchs_lazy(name, options):
    lazy_cls, torch_cls, target, shape = PAIRS[name]
    ours, theirs = lazy_cls(**options), torch_cls(**options)
    with warnings.catch_warnings():
        # torch's lazy layer without affine/statistics keeps num_features=0; its
        # InstanceNorm warns about the mismatch on every call (normkit's does not)
        warnings.filterwarnings("ignore", "input's size at dim", UserWarning)
        out_a, grad_a = _train_then_eval(ours, shape)
        out_b, grad_b = _train_then_eval(theirs, shape)
    assert type(ours) is target
    for i, (a, b) in enumerate(zip(out_a, out_b, strict=True)):
        assert_close(a, b, torch.float32, what=f"{name} output {i}")
    for i, (a, b) in enumerate(zip(grad_a, grad_b, strict=True)):
        assert_close(a, b, torch.float32, what=f"{name} gradient {i}", floor=1.0)
    _assert_same_state(ours, theirs, what=name)
    assert ours.num_features == shape[1]
    # torch's keeps 0 when there was nothing to materialize
    assert theirs.num_features == (shape[1] if theirs.state_dict() else 0)


@pytest.mark.parametrize("name", ["BatchNorm2d", "InstanceNorm1d"])
def test_without_affine_or_statistics_num_features_is_the_channel_count(name):
    """Nothing to materialize, yet num_features is C (torch leaves 0): the layer then checks
    channels as a layer built with C does, and InstanceNorm does not warn."""
    lazy_cls, _, target, shape = PAIRS[name]
    layer = lazy_cls(affine=False, track_running_stats=False)
    assert not layer.has_uninitialized_params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = layer(_x(shape))
        layer(_x(shape, seed=1))
    assert type(layer) is target and layer.num_features == shape[1]
    built = target(shape[1], affine=False, track_running_stats=False)
    assert_close(y, built(_x(shape)), torch.float32)
    assert repr(layer) == repr(built)


@pytest.mark.parametrize(
    ("lazy_cls", "torch_cls", "shape"),
    [
        (nk.nn.LazyInstanceNorm1d, nn.InstanceNorm1d, (3, 7)),
        (nk.nn.LazyInstanceNorm2d, nn.InstanceNorm2d, (3, 4, 5)),
        (nk.nn.LazyInstanceNorm3d, nn.InstanceNorm3d, (3, 2, 3, 4)),
    ],
)
def test_unbatched_instance_norm_infers_c_from_the_channel_dim(lazy_cls, torch_cls, shape):
    """(C, *spatial): C is dim 0 (torch's lazy module reads input.shape[1] and fails)."""
    layer = lazy_cls()
    built = torch_cls(shape[0], affine=True, track_running_stats=True)
    for step in range(2):
        x = _x(shape, seed=step)
        assert_close(layer(x), built(x), torch.float32, what=f"step {step}")
    assert layer.num_features == shape[0]
    _assert_same_state(layer, built)


def test_float64_after_to_dtype_before_the_first_call():
    """``.to(torch.float64)``/``.double()`` on the lazy module: the first call materializes in
    float64 (num_batches_tracked stays int64), as torch's, within the float64 tolerance."""
    for convert in (lambda m: m.to(torch.float64), lambda m: m.double()):
        ours = convert(nk.nn.LazyBatchNorm2d(momentum=None))
        theirs = convert(nn.LazyBatchNorm2d(momentum=None))
        for step in range(2):
            x = _x((4, 3, 2, 5), seed=step, dtype=torch.float64)
            assert_close(ours(x), theirs(x), torch.float64, what=f"step {step}")
        assert ours.weight.dtype == ours.running_var.dtype == torch.float64
        assert ours.num_batches_tracked.dtype == torch.int64
        _assert_same_state(ours, theirs, torch.float64)
    ours = nk.nn.LazyInstanceNorm2d(dtype=torch.float64)
    ours(_x((2, 3, 4, 4), dtype=torch.float64))
    assert ours.running_mean.dtype == torch.float64


# ---------------------------------------------------------------------- torch's machinery


def _trained_torch_layer(cls, c, shape):
    layer = cls(c, affine=True, track_running_stats=True)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.normal_()
    for step in range(3):
        layer(_x(shape, seed=20 + step))
    return layer


@pytest.mark.parametrize("name", ["BatchNorm1d-NCL", "BatchNorm2d", "InstanceNorm2d"])
def test_load_state_dict_before_the_first_call(name):
    """Loading materializes each tensor with the loaded shape (torch's pre-hook) and sets
    num_features; the first call keeps the loaded values (no reset) and computes what the
    checkpoint's own layer computes, and, for BatchNorm, what torch's lazy module does
    (torch's lazy InstanceNorm keeps num_features=0 and refuses its first call)."""
    lazy_cls, torch_lazy_cls, target, shape = PAIRS[name]
    source = _trained_torch_layer(_torch_twin(target), shape[1], shape)
    references = [source]
    if "BatchNorm" in name:
        references.append(torch_lazy_cls())
        references[1].load_state_dict(_state(source))
    layer = lazy_cls()
    layer.load_state_dict(_state(source))
    assert not layer.has_uninitialized_params() and layer.num_features == shape[1]
    assert isinstance(layer, LazyModuleMixin)  # the class changes on the first call
    _assert_same_state(layer, source)
    for step in range(2):
        x = _x(shape, seed=step)
        y = layer(x)
        for ref in references:
            assert_close(y, ref(x), torch.float32, what=f"{type(ref)} train step {step}")
    assert type(layer) is target and layer.num_features == shape[1]
    for ref in references:
        _assert_same_state(layer, ref)
        ref.eval()
    layer.eval()
    for ref in references:
        assert_close(layer(_x(shape, 5)), ref(_x(shape, 5)), torch.float32, what="eval")


def test_state_dicts_between_normkit_and_torch_lazy_modules():
    """An uninitialized state dict loads into an uninitialized module either way (both stay
    lazy); a materialized one materializes the other side."""
    ours, theirs = nk.nn.LazyBatchNorm2d(), nn.LazyBatchNorm2d()
    uninitialized = ours.state_dict()
    assert list(uninitialized) == list(theirs.state_dict())
    assert [type(v) for v in uninitialized.values()] == [
        type(v) for v in theirs.state_dict().values()
    ]
    theirs.load_state_dict(uninitialized)
    ours.load_state_dict(theirs.state_dict())
    assert ours.has_uninitialized_params() and ours.num_features == 0

    theirs(_x((4, 3, 2, 2)))
    ours.load_state_dict(theirs.state_dict())
    assert not ours.has_uninitialized_params() and ours.num_features == 3
    back = nn.LazyBatchNorm2d()
    ours(_x((4, 3, 2, 2), seed=1))
    back.load_state_dict(ours.state_dict())
    _assert_same_state(back, ours)


def test_load_state_dict_with_tensors_of_different_shapes_is_refused():
    checkpoint = _state(nn.BatchNorm2d(3))
    checkpoint["running_var"] = torch.ones(4)
    with pytest.raises(
        RuntimeError,
        match=r"LazyBatchNorm2d: expected the loaded weight, bias, running_mean and "
        r"running_var of one shape \(C,\), got shapes \[\(3,\), \(4,\)\]",
    ):
        nk.nn.LazyBatchNorm2d().load_state_dict(checkpoint)
    model = nn.Sequential(nn.ReLU(), nk.nn.LazyBatchNorm1d(affine=False))
    with pytest.raises(RuntimeError, match=r"LazyBatchNorm1d at '1': .*got shapes \[\(2, 3\)\]"):
        model.load_state_dict(
            {
                "1.running_mean": torch.zeros(2, 3),
                "1.running_var": torch.ones(2, 3),
                "1.num_batches_tracked": torch.tensor(0),
            }
        )


def test_partial_load_then_first_call_initializes_only_the_missing_tensors():
    checkpoint = _state(_trained_torch_layer(nn.BatchNorm2d, 3, (4, 3, 2, 2)))
    del checkpoint["bias"]
    layer = nk.nn.LazyBatchNorm2d()
    result = layer.load_state_dict(checkpoint, strict=False)
    assert result.missing_keys == ["bias"] and is_lazy(layer.bias)
    layer(_x((4, 3, 2, 2)))
    assert torch.equal(layer.bias, torch.zeros(3))
    assert torch.equal(layer.weight.detach(), checkpoint["weight"])
    assert int(layer.num_batches_tracked) == 4  # loaded 3, one more step


def _lazy_model(norms):
    bn2, bn1 = norms
    return nn.Sequential(
        nn.LazyConv2d(4, 3),
        bn2(),
        nn.ReLU(),
        nn.Flatten(),
        bn1(momentum=None),
        nn.LazyLinear(5),
    )


def test_dry_run_under_no_grad_then_optimizer():
    """torch's recipe: dry run, then the optimizer; same model as with torch's lazy layers,
    before and after an SGD step."""
    ours = _lazy_model((nk.nn.LazyBatchNorm2d, nk.nn.LazyBatchNorm1d))
    theirs = _lazy_model((nn.LazyBatchNorm2d, nn.LazyBatchNorm1d))
    x = _x((6, 2, 5, 5))
    for model in (ours, theirs):
        torch.manual_seed(0)  # the lazy Conv2d/Linear draw their initial weights here
        with torch.no_grad():
            model(x)
    assert [type(m) for m in ours] == [
        nn.Conv2d,
        nk.nn.BatchNorm2d,
        nn.ReLU,
        nn.Flatten,
        nk.nn.BatchNorm1d,
        nn.Linear,
    ]
    assert not any(is_lazy(p) for p in ours.parameters())
    _assert_same_state(ours, theirs, what="after the dry run")
    for model in (ours, theirs):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        (model(_x((6, 2, 5, 5), seed=1)) * _x((6, 5), seed=2)).sum().backward()
        optimizer.step()
    _assert_same_state(ours, theirs, what="after a step")
    assert not torch.equal(ours[1].weight, torch.ones(4))


# ---------------------------------------------------------------------- copies


@pytest.mark.parametrize("name", ["BatchNorm2d", "InstanceNorm1d"])
def test_deepcopy_before_and_after_the_first_call(name):
    """Before: the copy is an independent lazy module (torch 2.13's lazy BatchNorm cannot
    be deep-copied: UninitializedBuffer has no __deepcopy__); each materializes alone."""
    lazy_cls, torch_cls, target, shape = PAIRS[name]
    layer = lazy_cls(dtype=torch.float64)
    twin = copy.deepcopy(layer)
    assert type(twin) is lazy_cls and twin.has_uninitialized_params()
    assert twin.running_mean.dtype == torch.float64 and is_lazy(twin.running_mean)
    wider = (shape[0], 2 * shape[1], *shape[2:])
    y = twin(_x(wider, dtype=torch.float64))
    assert type(twin) is target and twin.num_features == 2 * shape[1]
    assert type(layer) is lazy_cls and layer.has_uninitialized_params()
    reference = torch_cls(dtype=torch.float64)
    assert_close(y, reference(_x(wider, dtype=torch.float64)), torch.float64)
    _assert_same_state(twin, reference, torch.float64)
    layer(_x(shape, dtype=torch.float64))
    assert layer.num_features == shape[1]
    after = copy.deepcopy(layer)
    assert type(after) is target
    _assert_same_state(after, layer, torch.float64)


@pytest.mark.parametrize("name", ["BatchNorm3d", "InstanceNorm2d"])
def test_pickle_before_and_after_the_first_call(name):
    """Before: the unpickled module is lazy, with the dtype given by .double() (torch's
    uninitialized tensors pickle without it), and materializes as torch's does."""
    lazy_cls, torch_cls, target, shape = PAIRS[name]
    layer = pickle.loads(pickle.dumps(lazy_cls(momentum=0.3).double()))
    assert type(layer) is lazy_cls and layer.weight.dtype == torch.float64
    assert isinstance(layer.weight, nn.parameter.UninitializedParameter)
    reference = torch_cls(momentum=0.3).double()
    x = _x(shape, dtype=torch.float64)
    assert_close(layer(x), reference(x), torch.float64)
    assert not layer._forward_pre_hooks and type(layer) is target
    _assert_same_state(layer, reference, torch.float64)
    again = pickle.loads(pickle.dumps(layer))
    assert type(again) is target
    _assert_same_state(again, layer, torch.float64)
    again.eval(), reference.eval()
    assert_close(again(x), reference(x), torch.float64)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("lazy_cls", "bad", "message"),
    [
        (nk.nn.LazyBatchNorm2d, (2, 3, 4), r"^LazyBatchNorm2d: expected 4D input \(got 3D input\)"),
        (nk.nn.LazyBatchNorm1d, (6,), r"^LazyBatchNorm1d: expected 2D or 3D input \(got 1D"),
        (nk.nn.LazyBatchNorm3d, (2, 3, 4, 4), r"^LazyBatchNorm3d: expected 5D input \(got 4D"),
        (
            nk.nn.LazyInstanceNorm2d,
            (2, 3),
            r"^LazyInstanceNorm2d: expected 3D or 4D input \(got 2D",
        ),
        (nk.nn.LazyInstanceNorm1d, (2, 3, 4, 4), r"^LazyInstanceNorm1d: expected 2D or 3D input"),
    ],
)
def test_bad_first_input_names_the_layer_and_leaves_it_lazy(lazy_cls, bad, message):
    layer = lazy_cls()
    with pytest.raises(NormInputError, match=message):
        layer(torch.randn(bad))
    with pytest.raises(NormDTypeError, match=rf"^{lazy_cls.__name__}: expected a floating"):
        layer(torch.ones(BY_CLASS[lazy_cls][3], dtype=torch.int64))
    assert type(layer) is lazy_cls and layer.has_uninitialized_params()
    assert layer.num_features == 0 and hasattr(layer, "_initialize_hook")
    shape = BY_CLASS[lazy_cls][3]
    layer(_x(shape))
    assert type(layer) is BY_CLASS[lazy_cls][2] and layer.num_features == shape[1]


@pytest.mark.parametrize(
    ("lazy_cls", "shape", "other", "message"),
    [
        (
            nk.nn.LazyBatchNorm2d,
            (2, 3, 4, 4),
            (2, 5, 4, 4),
            r"^BatchNorm2d\(3\): expected 3 channels at dim 1 of the input, got 5",
        ),
        (
            nk.nn.LazyInstanceNorm1d,
            (2, 3, 6),
            (2, 4, 6),
            r"^InstanceNorm1d\(3\): expected 3 channels at dim 1 of the input, got 4",
        ),
    ],
)
def test_second_call_with_other_channels_names_the_layer(lazy_cls, shape, other, message):
    layer = lazy_cls()
    layer(_x(shape))
    with pytest.raises(NormInputError, match=message):
        layer(_x(other))
    loaded = lazy_cls()
    loaded.load_state_dict(layer.state_dict())
    with pytest.raises(NormInputError, match=message):
        loaded(_x(other))  # the loaded size wins over the first input's


def test_forward_without_call_and_bad_arguments():
    layer = nk.nn.LazyBatchNorm2d()
    with pytest.raises(RuntimeError, match=r"^LazyBatchNorm2d: not initialized; call the module"):
        layer.forward(torch.randn(2, 3, 4, 4))
    with pytest.raises(NormInputError, match=r"^LazyBatchNorm1d: momentum must be in \[0, 1\]"):
        nk.nn.LazyBatchNorm1d(momentum=1.5)
    with pytest.raises(NormInputError, match=r"^LazyInstanceNorm3d: eps must be non-negative"):
        nk.nn.LazyInstanceNorm3d(eps=-1.0)


# ---------------------------------------------------------------------- torch.compile


def test_compile_a_materialized_layer_and_a_lazy_one(fresh_compile):
    """A layer materialized eagerly compiles as its normkit class does; a lazy layer or
    model compiled before its first call is materialized by Dynamo's lazy-module handling
    (fullgraph every time)."""
    torch.manual_seed(0)
    eager = nk.nn.LazyBatchNorm2d()
    eager(_x((4, 3, 4, 4)))
    compiled_layer = copy.deepcopy(eager)
    compiled = torch.compile(compiled_layer, backend="aot_eager", fullgraph=True)
    for step in range(2):
        x = _x((4, 3, 4, 4), seed=step).requires_grad_(True)
        x2 = x.detach().clone().requires_grad_(True)
        y, y2 = eager(x), compiled(x2)
        assert_close(y2, y, torch.float32, what=f"step {step}")
        y.sum().backward()
        y2.sum().backward()
        assert_close(compiled_layer.weight.grad, eager.weight.grad, torch.float32, floor=1.0)
    _assert_same_state(compiled_layer, eager)

    lazy = nk.nn.LazyInstanceNorm2d()
    out = torch.compile(lazy, backend="aot_eager", fullgraph=True)(_x((2, 3, 4, 4)))
    assert type(lazy) is nk.nn.InstanceNorm2d and lazy.num_features == 3
    reference = nn.LazyInstanceNorm2d()
    assert_close(out, reference(_x((2, 3, 4, 4))), torch.float32)
    _assert_same_state(lazy, reference)

    ours = _lazy_model((nk.nn.LazyBatchNorm2d, nk.nn.LazyBatchNorm1d))
    theirs = _lazy_model((nn.LazyBatchNorm2d, nn.LazyBatchNorm1d))
    x = _x((6, 2, 5, 5))
    torch.manual_seed(0)
    y = torch.compile(ours, backend="aot_eager", fullgraph=True)(x)
    torch.manual_seed(0)
    assert_close(y, theirs(x), torch.float32, what="lazy model")
    assert [type(m) for m in ours][1::3] == [nk.nn.BatchNorm2d, nk.nn.BatchNorm1d]
    _assert_same_state(ours, theirs, what="lazy model")


# ---------------------------------------------------------------------- docs


def test_docs_example_runs():
    """The block of docs/variants.md's "Lazy layers" section runs as written."""
    section = DOCS.read_text().split("### Lazy layers", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(code, str(DOCS), "exec"), {"__name__": "__docs__"})


def test_docstring_examples_run():
    result = doctest.testmod(nk.nn.lazy, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0
