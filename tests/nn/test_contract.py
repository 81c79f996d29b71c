"""Generic contract of every layer against its torch.nn twin, driven by tests/samples.py.

For each sample, dtype and input layout: several training steps (output, input/weight/bias
gradients and running statistics compared after each), then evaluation (output and
gradients), on every call path (tests/paths.py): the whole grid on both backends eagerly, a
subset under ``torch.compile`` (aot_eager, and inductor for a few), and float16/bfloat16
(the torch fallback) for every layer kind. Plus repr, state_dict keys and round trips both
ways, pickle, deepcopy and factory kwargs.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import normkit as nk
from tests.conftest import RTOL, assert_close
from tests.paths import COMPILED_PATHS, EAGER_PATHS, HALF_DTYPES, HALF_PATHS, INDUCTOR_PATHS
from tests.samples import NORM_SAMPLES, REPRESENTATIVES

DTYPES = [torch.float32, torch.float64]
#: float16/bfloat16 run torch's kernels on both sides: the two agree to a few units of the
#: dtype's last place (torch.nn's own CPU kernels accumulate in float32).
PARITY_RTOL = {**RTOL, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
LAYOUTS = ["contiguous", "channels_last", "noncontiguous"]


def make_input(shape, dtype, layout, offset=0.5, scale=2.0):
    if layout == "noncontiguous":
        big = torch.randn(*shape[:-1], shape[-1] * 2, dtype=dtype)
        x = big[..., ::2]
        assert not x.is_contiguous() or shape[-1] == 1
    else:
        x = torch.randn(shape, dtype=dtype)
    if layout == "channels_last":
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    return x * scale + offset


def randomized_pair(sample, dtype):
    """The torch and normkit layers with identical, non-default parameters and buffers."""
    reference = sample.build(torch.nn).to(dtype)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(mean=1.0, std=0.5)
        if getattr(reference, "running_mean", None) is not None:
            reference.running_mean.normal_()
            reference.running_var.uniform_(0.5, 2.0)
    ours = sample.build(nk.nn).to(dtype)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def forward_backward(module, x, grad_out, call=None):
    """Output and gradients (input, then parameters) of ``call(x)`` (default: the module)."""
    x = x.detach().clone().requires_grad_(True)
    y = (module if call is None else call)(x)
    params = [p for p in module.parameters()]
    grads = torch.autograd.grad(y, [x, *params], grad_out)
    return y.detach(), grads


def compare_step(reference, ours, x, dtype, what, call=None):
    grad_out = torch.randn_like(x)
    y_ref, g_ref = forward_backward(reference, x, grad_out)
    y_ours, g_ours = forward_backward(ours, x, grad_out, call)
    floor = grad_out.abs().max()
    rtol = PARITY_RTOL[dtype]
    assert y_ours.dtype == y_ref.dtype, f"{what}: output dtype {y_ours.dtype} != {y_ref.dtype}"
    assert_close(y_ours, y_ref, rtol=rtol, what=f"{what} output")
    names = ["input", *(n for n, _ in reference.named_parameters())]
    for name, a, b in zip(names, g_ours, g_ref, strict=True):
        assert_close(a, b, rtol=rtol, what=f"{what} grad {name}", floor=floor)
    for (name, a), (_, b) in zip(ours.named_buffers(), reference.named_buffers(), strict=True):
        if b.dtype == torch.long:
            assert torch.equal(a, b), f"{what} {name}: {a} != {b}"
        else:
            assert_close(a, b, rtol=rtol, what=f"{what} {name}")
    return y_ours, y_ref


def _layouts_for(sample):
    rank = len(sample.input_shape)
    return [lay for lay in LAYOUTS if lay != "channels_last" or rank in (4, 5)]


PARITY_CASES = [
    pytest.param(sample, dtype, layout, id=f"{sample.id}-{str(dtype)[6:]}-{layout}")
    for sample in NORM_SAMPLES
    for dtype in DTYPES
    for layout in _layouts_for(sample)
]


def _layout(y):
    """The strides that matter: those of the dims longer than 1."""
    return [stride for size, stride in zip(y.shape, y.stride(), strict=True) if size > 1]


def _train_steps_then_eval(sample, dtype, layout, path):
    reference, ours = randomized_pair(sample, dtype)
    call = path.prepare(ours, fullgraph=_full_graph(sample, path))
    for step in range(3):
        x = make_input(sample.input_shape, dtype, layout, offset=0.5 * step)
        y_ours, y_ref = compare_step(reference, ours, x, dtype, f"train step {step}", call)
        assert _layout(y_ours) == _layout(y_ref), "output memory layout differs from torch"
    reference.eval()
    ours.eval()
    x = make_input(sample.input_shape, dtype, layout, offset=-1.0)
    compare_step(reference, ours, x, dtype, "eval", call)


def _full_graph(sample, path) -> bool:
    """torch's kernel takes the cumulative-average factor ``1 / (num_batches_tracked + 1)`` as
    a Python float read from a buffer: no full graph can hold it (torch.nn.BatchNorm1d(
    momentum=None) fails with fullgraph=True as well); the numba op computes it inside."""
    cumulative = "momentum" in sample.kwargs and sample.kwargs["momentum"] is None
    return not (cumulative and sample.tracks_running_stats and path.backend != "numba")


@pytest.mark.parametrize("path", EAGER_PATHS, indirect=True, ids=str)
@pytest.mark.parametrize(("sample", "dtype", "layout"), PARITY_CASES)
def test_parity_train_steps_then_eval(sample, dtype, layout, path):
    _train_steps_then_eval(sample, dtype, layout, path)


def _compile_samples():
    """The samples whose options change the traced code: every option on the first sample
    of each family (BatchNorm1d/2d/3d are one class of code, InstanceNorm1d/2d/3d another;
    momentum 0.5 is traced like 0.1) and every shape with its default options."""
    first = {}
    for sample in NORM_SAMPLES:
        first.setdefault(sample.cls.rstrip("123d"), (sample.cls, sample.input_shape))
    for sample in NORM_SAMPLES:
        if sample.kwargs.get("momentum") == 0.5:
            continue
        default = sample.kwargs in (
            {},
            {"affine": True, "track_running_stats": True, "momentum": 0.1},
        )
        if default or (sample.cls, sample.input_shape) == first[sample.cls.rstrip("123d")]:
            yield sample


COMPILE_CASES = [
    *(
        pytest.param(sample, torch.float32, "contiguous", id=f"{sample.id}-float32-contiguous")
        for sample in _compile_samples()
    ),
    *(
        pytest.param(sample, dtype, layout, id=f"{sample.id}-{str(dtype)[6:]}-{layout}")
        for sample in REPRESENTATIVES
        for dtype, layout in [
            (torch.float64, "contiguous"),
            *((torch.float32, lay) for lay in _layouts_for(sample) if lay != "contiguous"),
        ]
    ),
]


@pytest.mark.parametrize("path", COMPILED_PATHS, indirect=True, ids=str)
@pytest.mark.parametrize(("sample", "dtype", "layout"), COMPILE_CASES)
def test_compiled_parity_train_steps_then_eval(sample, dtype, layout, path):
    _train_steps_then_eval(sample, dtype, layout, path)


@pytest.mark.parametrize("path", HALF_PATHS, indirect=True, ids=str)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("sample", REPRESENTATIVES, ids=lambda s: s.id)
def test_half_precision_parity_train_steps_then_eval(sample, dtype, path):
    """float16/bfloat16 take the torch fallback under the automatic choice, eager and
    compiled (tests/nn/test_paths.py checks that they do): one representative per class."""
    _train_steps_then_eval(sample, dtype, "contiguous", path)


INDUCTOR_SAMPLES = [
    s for s in REPRESENTATIVES if s.cls in ("BatchNorm2d", "GroupNorm", "LayerNorm")
]


@pytest.mark.slow
@pytest.mark.parametrize("path", INDUCTOR_PATHS, indirect=True, ids=str)
@pytest.mark.parametrize("sample", INDUCTOR_SAMPLES, ids=lambda s: s.id)
def test_inductor_parity_train_steps_then_eval(sample, path):
    _train_steps_then_eval(sample, torch.float32, "contiguous", path)


@pytest.mark.parametrize("sample", NORM_SAMPLES, ids=lambda s: s.id)
def test_repr_and_state_dict_layout_match_torch(sample):
    reference, ours = sample.build(torch.nn), sample.build(nk.nn)
    assert repr(ours) == repr(reference)
    sd_ref, sd_ours = reference.state_dict(), ours.state_dict()
    assert list(sd_ours) == list(sd_ref)
    for key in sd_ref:
        assert sd_ours[key].shape == sd_ref[key].shape, key
        assert sd_ours[key].dtype == sd_ref[key].dtype, key
        assert torch.equal(sd_ours[key], sd_ref[key]), f"{key}: initial values differ"
    assert sd_ours._metadata[""].get("version") == sd_ref._metadata[""].get("version")
    for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats"):
        assert getattr(ours, attr, None) == getattr(reference, attr, None), attr
    for attr in ("normalized_shape", "elementwise_affine", "num_groups", "num_channels"):
        assert getattr(ours, attr, None) == getattr(reference, attr, None), attr


@pytest.mark.parametrize("sample", REPRESENTATIVES, ids=lambda s: s.id)
def test_state_dict_round_trip_both_ways(sample):
    reference, ours = randomized_pair(sample, torch.float32)
    back = sample.build(torch.nn)
    back.load_state_dict(ours.state_dict())  # normkit -> torch, strict
    for key, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    # Through a serialized checkpoint, as users do it.
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    fresh = sample.build(nk.nn)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in reference.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize("sample", REPRESENTATIVES, ids=lambda s: s.id)
def test_pickle_and_deepcopy_keep_state_and_behaviour(sample):
    _, ours = randomized_pair(sample, torch.float64)
    x = make_input(sample.input_shape, torch.float64, "contiguous")
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert repr(clone) == repr(ours)
        for (k, a), (_, b) in zip(
            clone.state_dict().items(), ours.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), k
        clone.eval()
        ours.eval()
        assert torch.equal(clone(x), ours(x))


@pytest.mark.parametrize("sample", REPRESENTATIVES, ids=lambda s: s.id)
def test_factory_kwargs(sample):
    kwargs = dict(sample.kwargs, device="cpu", dtype=torch.float64)
    layer = getattr(nk.nn, sample.cls)(*sample.args, **kwargs)
    reference = getattr(torch.nn, sample.cls)(*sample.args, **kwargs)
    for (name, a), (_, b) in zip(
        layer.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert a.dtype == b.dtype and a.device == b.device, name


@pytest.mark.parametrize("sample", REPRESENTATIVES, ids=lambda s: s.id)
def test_reset_methods_match_torch(sample):
    reference, ours = randomized_pair(sample, torch.float32)
    x = make_input(sample.input_shape, torch.float32, "contiguous")
    reference(x)
    ours(x)
    reference.reset_parameters()
    ours.reset_parameters()
    for (k, a), (_, b) in zip(
        ours.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    if hasattr(reference, "reset_running_stats"):
        reference(x)
        ours(x)
        reference.reset_running_stats()
        ours.reset_running_stats()
        for (k, a), (_, b) in zip(
            ours.state_dict().items(), reference.state_dict().items(), strict=True
        ):
            if "running" in k or "num_batches" in k:
                assert torch.equal(a, b), k
