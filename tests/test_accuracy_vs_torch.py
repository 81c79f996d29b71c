"""At least as accurate as torch: every normkit drop-in layer against its torch twin, judged
against a float64 computation (Hypothesis, derandomized).

Each example draws a layer kind with its constructor arguments, a shape (the degenerate
sizes often: a batch of one where the mode allows it, one channel, spatial size 1, one
value per group, one-value rows; and now and then about 70000 values, run on two threads),
a dtype, a memory layout (contiguous, channels_last for 4-D and 5-D, a sliced or a
transposed view), a value scale and offset, and the backend (``nk.use_backend("auto" |
"numba" | "torch")``; ``"auto"`` reaches numba for strided inputs and large ones). Three
layers hold the same state (random parameters and running statistics, rounded to the
dtype): normkit's and torch's in the dtype, and torch's in float64, the *truth*, run on the
same values upcast exactly (RMSNorm's ``eps=None`` given as the dtype's epsilon). Compared:
the output, the input, weight and bias gradients for a random output gradient, the running
statistics after the step and ``num_batches_tracked`` (exactly), and the output's dtype and
memory format (LayerNorm2d's twin returns a permuted view, channels fastest, and so does
normkit's).

The judge, per quantity, with ``err = max |q - truth|`` over the tensor::

    err(normkit) <= max(2 * err(torch), floor)
    floor = max(4 ulp * max|truth|,     the quantity's own rounding
                4 ulp * reduction,      a reduction over the batch (parameter gradients,
                                        running statistics)
                TRUTH * terms)          what the float64 truth can resolve

``ulp`` is the dtype's machine epsilon (2**-23 for float32, 2**-52 for float64).

* ``4 ulp * max|truth|``: torch's error can be zero by luck (a tiny tensor, an exactly
  representable result), and a correct computation in another order still rounds a few
  times. It is relative to the quantity itself, not to the terms it is computed from: a
  gradient that should cancel to nothing must, where torch's does (a GroupNorm with one
  value per group and one channel: torch's input gradient is exactly 0). Where the input
  itself limits the dtype (an offset of -300 with a 1e-3 spread, a gradient that cancels
  to almost nothing) torch's own error is large and the factor 2 allows the same order.
* ``4 ulp * reduction``: the parameter gradients are sums of ``n`` terms up to ``term``
  (``|g|``, ``|g * x_hat|``), whose rounding errors in both libraries are random walks of
  about ``sqrt(n) * term`` ulps (numba's float32 sum of 70001 gradients is on average 8x
  more accurate than torch's, yet beyond twice torch's in one draw out of ten). The running
  statistics average the batch: ``reduction`` is the mean ``|x|`` (mean) and twice the mean
  ``(x - mean)**2`` (variance) of the values they average, since float32 statistics are not
  expected to beat the values they come from. torch accumulates its batch statistics in
  float64 and normkit's kernels in float32 blocks added in float64, which leaves about
  0.02 ulp of ``max|x|`` in the batch mean, up to 200x torch's error (visible only in a running
  mean much smaller than the spread of the values).
* ``TRUTH * terms``, where ``terms`` is the size of the largest intermediate the formula
  adds or subtracts (e.g. ``|g * w| * rstd * (1 + |x_hat|)`` for the input gradient): the
  truth is float64 and is itself only that accurate. ``TRUTH`` is ``16 * 2**-52`` for a
  float32 example and, for float64, the project's float64 tolerance ``1e-10``
  (tests/conftest.py ``RTOL``): in float64 the truth is torch's own float64 layer, so
  ``err(torch) == 0`` and the test is the parity standard, relative to the terms (an
  ill-conditioned float64 case, two values 2 +- 1e-3 with eps 1e-10, has errors of 1e-9 in
  both libraries against an 80-bit computation).

An example of fewer than 64 values is judged over several draws of its values and output
gradient (up to 32): on the mean over the draws of each side of the inequality, each draw's
in units of its ``terms``. On a handful of values both errors are a rounding or two either
way and one draw where torch's happens to be exact is no verdict; a real loss shows in
every draw.

float16 and bfloat16 (the torch backend only; the numba backend refuses them by name,
:func:`test_numba_refuses_half_precision`): normkit runs torch's own kernels and must equal
torch.nn bit for bit (NaN where torch has NaN), everything but InstanceNorm's parameter
gradients with running statistics in evaluation (:func:`_sums_differently`), which are
judged as above. RMSNorm with ``eps=None`` takes the epsilon of torch's computation dtype,
as torch's kernel does (:func:`test_rms_norm_default_eps_in_half_precision`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import normkit as nk
from normkit import backends
from normkit.config import BackendUnavailableError
from tests.conftest import RTOL

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64


def examples(count: int) -> settings:
    """Hypothesis settings: ``count`` derandomized examples, no deadline, no database."""
    return settings(max_examples=count, deadline=None, derandomize=True, database=None)


SETTINGS = examples(100)
ULPS = 4
#: What the float64 truth resolves, in units of ``terms`` (see the module docstring).
TRUTH = {F16: 16 * 2.0**-52, BF16: 16 * 2.0**-52, F32: 16 * 2.0**-52, F64: RTOL[F64]}
#: About this many values make a call large enough for two kernel threads (and, for some
#: ops and layouts, for the automatic choice to pick numba).
LARGE = 70000
ACTS = ("identity", "relu", "leaky_relu", "silu", "gelu", "relu6", "hardswish")

SMALL = st.sampled_from([1, 1, 2, 3, 5])
SPATIAL = st.sampled_from([1, 1, 2, 3, 4, 7])
EPS = st.sampled_from([1e-5, 1e-5, 1e-3, 0.5, 1e-10])
MOMENTUM = st.sampled_from([0.1, 0.1, 0.5, 1.0, None])


# --- the torch twins ------------------------------------------------------------------------


def _act(y: Tensor, act: str, negative_slope: float) -> Tensor:
    """torch.nn.functional's activation of that name (gelu: the exact, erf-based one)."""
    if act == "identity":
        return y
    if act == "leaky_relu":
        return F.leaky_relu(y, negative_slope)
    functions = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu, "relu6": F.relu6,
                 "hardswish": F.hardswish}  # fmt: skip
    return functions[act](y)


def _then_act(base: type[nn.Module]) -> type[nn.Module]:
    """torch's ``base`` layer followed by an activation: the twin of normkit's ``*Act``
    layers (same state dict as ``base``)."""

    class Twin(base):
        def __init__(self, *args, act: str, negative_slope: float = 0.01, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.act, self.negative_slope = act, negative_slope

        def forward(self, input: Tensor) -> Tensor:
            return _act(super().forward(input), self.act, self.negative_slope)

    Twin.__name__ = f"{base.__name__}ThenAct"
    return Twin


class PermutedLayerNorm(nn.LayerNorm):
    """timm's and torchvision's LayerNorm2d as they compute it: channels moved last,
    ``torch.nn.LayerNorm(C)``, moved back; then an optional activation."""

    def __init__(
        self, num_channels, eps, affine, bias=True, act="identity", negative_slope=0.01, dtype=None
    ) -> None:
        super().__init__(num_channels, eps, affine, bias, dtype=dtype)
        self.act, self.negative_slope = act, negative_slope

    def forward(self, input: Tensor) -> Tensor:
        y = super().forward(input.movedim(1, -1)).movedim(-1, 1)
        return _act(y, self.act, self.negative_slope)


# --- what one example is ------------------------------------------------------------------


@dataclass
class Spec:
    """One layer call: normkit's class name and constructor arguments, the twin's class and
    arguments, the input shape, the mode, the normkit backend op the call dispatches (to
    report which backend ``"auto"`` picked) and whether the input is InstanceNorm's
    unbatched form."""

    kind: str
    args: dict
    twin: Callable[..., nn.Module]
    twin_args: dict
    shape: tuple[int, ...]
    training: bool
    op: str
    unbatched: bool = False

    def ours(self, dtype: torch.dtype) -> nn.Module:
        return getattr(nk.nn, self.kind)(**self.args, dtype=dtype)

    def theirs(self, dtype: torch.dtype) -> nn.Module:
        return self.twin(**self.twin_args, dtype=dtype)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        mode = "train" if self.training else "eval"
        return f"{self.kind}({args}).{mode}() on input {self.shape}"

    def op_input(self, x: Tensor) -> Tensor:
        """The tensor the layer hands to its backend op (to ask which backend it selects)."""
        x = x.unsqueeze(0) if self.unbatched else x
        if self.kind.startswith("Instance") and self.op == "batch_norm_eval":
            return x.contiguous()  # InstanceNorm normalizing with its running statistics
        return x

    def groups(self, x: Tensor, layer: nn.Module, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(members (G, M), mean (G,), rstd (G,))``: the values that share statistics, and
        those statistics in float64 (the running ones where the call uses them)."""
        x = x.unsqueeze(0) if self.unbatched else x
        if self.op in ("batch_norm_train", "batch_norm_eval"):
            members = x.transpose(0, 1).reshape(x.shape[1], -1)
        elif self.op == "instance_norm_train":
            members = x.reshape(x.shape[0] * x.shape[1], -1)
        elif self.op == "group_norm":
            members = x.reshape(x.shape[0] * self.args["num_groups"], -1)
        elif self.op == "layer_norm_2d":
            members = x.movedim(1, -1).reshape(-1, x.shape[1])
        else:
            members = x.reshape(-1, math.prod(self.args["normalized_shape"]))
        if self.op == "batch_norm_eval":
            mean, var = layer.running_mean, layer.running_var
        elif self.op == "rms_norm":
            mean, var = torch.zeros(len(members), dtype=F64), members.square().mean(1)
        else:
            var, mean = torch.var_mean(members, 1, correction=0)
        return members, mean, (var + eps).rsqrt()


@dataclass
class Setting:
    """How the example's values are made, laid out and computed: dtype, memory layout,
    backend, value scale and offset, seed."""

    dtype: torch.dtype
    layout: str
    backend: str
    scale: float
    offset: float
    seed: int

    def describe(self, shape) -> str:
        return (
            f"dtype={str(self.dtype).removeprefix('torch.')}, layout={self.layout}, "
            f"backend={self.backend}, values N({self.offset}, {self.scale}^2), "
            f"threads={_threads(shape)}, seed={self.seed}"
        )


def _threads(shape) -> int:
    return 2 if math.prod(shape) >= LARGE else 1


def settings_for(
    dtypes: list[torch.dtype], backend_names: tuple[str, ...] = ("auto", "numba", "numba", "torch")
) -> st.SearchStrategy[Setting]:
    """Settings of those dtypes; the numba backend (the code under test) half of the time."""
    return st.builds(
        Setting,
        dtype=st.sampled_from(dtypes),
        layout=st.sampled_from(["contiguous", "channels_last", "sliced", "transposed"]),
        backend=st.sampled_from(backend_names),
        scale=st.sampled_from([1e-3, 1.0, 40.0]),
        offset=st.sampled_from([0.0, 0.0, 2.0, -300.0]),
        seed=st.integers(0, 2**31 - 1),
    )


# --- shapes and layer kinds -----------------------------------------------------------------

BATCH_NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNormAct1d", "BatchNormAct2d")


def _per_channel_shape(draw, rank: int) -> list[int]:
    """``(N, C, *spatial)`` of ``rank`` dims, small, or with about LARGE values."""
    shape = [draw(SMALL), draw(st.sampled_from([1, 1, 2, 3, 6]))]
    shape += [draw(SPATIAL) for _ in range(rank - 2)]
    if draw(st.integers(0, 7)) == 0:  # large: the last dim takes the rest
        shape[-1] = LARGE // math.prod(shape[:-1]) + 1
    return shape


def _with_act(draw, args: dict, twin_args: dict, act: str | None = None) -> None:
    """An ``*Act`` layer's activation (``act``, or a random one), in both argument sets."""
    act = act or draw(st.sampled_from(ACTS))
    args.update(act=act, negative_slope=0.2)
    twin_args.update(act=act, negative_slope=0.2)


@st.composite
def batch_norms(draw, kinds: tuple[str, ...] = BATCH_NORMS, act: str | None = None) -> Spec:
    """BatchNorm1d/2d/3d or BatchNormAct1d/2d (whose activation the numba kernels apply in
    the same pass), one of ``kinds``, with activation ``act`` if given, in training (running
    statistics updated, or not tracked) or evaluation."""
    kind = draw(st.sampled_from(kinds))
    dims = int(kind[-2])
    shape = _per_channel_shape(draw, draw(st.sampled_from([2, 3])) if dims == 1 else dims + 2)
    training = draw(st.booleans())
    track = draw(st.sampled_from([True, True, False]))
    if (training or not track) and shape[0] * math.prod(shape[2:]) == 1:
        shape[0] = 2  # batch statistics need more than one value per channel
    args = dict(num_features=shape[1], eps=draw(EPS), momentum=draw(MOMENTUM),
                affine=draw(st.booleans()), track_running_stats=track)  # fmt: skip
    twin, twin_args = getattr(nn, kind.replace("Act", "")), dict(args)
    if "Act" in kind:
        _with_act(draw, args, twin_args, act)
        twin = _then_act(twin)
    op = "batch_norm_train" if training or not track else "batch_norm_eval"
    return Spec(kind, args, twin, twin_args, tuple(shape), training, op)


@st.composite
def instance_norms(draw, dims: int | None = None) -> Spec:
    """InstanceNorm1d/2d/3d (``dims``, or a random one), batched or not, with or without
    affine parameters and running statistics, in training or evaluation."""
    dims = dims or draw(st.sampled_from([1, 2, 3]))
    kind = f"InstanceNorm{dims}d"
    shape = _per_channel_shape(draw, dims + 2)
    training, track = draw(st.booleans()), draw(st.booleans())
    use_input_stats = training or not track
    if use_input_stats and math.prod(shape[2:]) == 1:
        shape[-1] = 2  # instance statistics need more than one spatial element
    unbatched = draw(st.integers(0, 4)) == 0
    args = dict(num_features=shape[1], eps=draw(EPS), momentum=draw(MOMENTUM),
                affine=draw(st.booleans()), track_running_stats=track)  # fmt: skip
    op = "instance_norm_train" if use_input_stats else "batch_norm_eval"
    shape = shape[1:] if unbatched else shape
    return Spec(kind, args, getattr(nn, kind), dict(args), tuple(shape), training, op, unbatched)


@st.composite
def group_norms(draw) -> Spec:
    """GroupNorm or GroupNormAct with one group, one channel per group or a divisor in
    between, on ``(N, C, *)`` of 2 to 5 dims."""
    shape = _per_channel_shape(draw, draw(st.sampled_from([2, 2, 3, 4, 5])))
    c = shape[1] = draw(st.sampled_from([1, 2, 4, 6, 12]))
    grouping = draw(st.sampled_from(["one group", "one channel per group", "in between"]))
    divisors = [d for d in range(2, c) if c % d == 0]
    if grouping == "in between" and divisors:
        groups = draw(st.sampled_from(divisors))
    else:
        groups = 1 if grouping == "one group" else c
    if shape[0] * (c // groups) * math.prod(shape[2:]) == 1:
        shape[0] = 2  # torch refuses a single value in all (N = 2: one value per group)
    if (c // groups) * math.prod(shape[2:]) == 1:
        event("one value per group")
    kind = draw(st.sampled_from(["GroupNorm", "GroupNorm", "GroupNormAct"]))
    args = dict(num_groups=groups, num_channels=c, eps=draw(EPS), affine=draw(st.booleans()))
    twin, twin_args = nn.GroupNorm, dict(args)
    if kind == "GroupNormAct":
        _with_act(draw, args, twin_args)
        twin = _then_act(nn.GroupNorm)
    return Spec(kind, args, twin, twin_args, tuple(shape), draw(st.booleans()), "group_norm")


def _row_shape(draw) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(*batch, *normalized)`` and the normalized part: 0 to 2 batch dims, 1 to 3
    normalized dims (one-value rows often), or about LARGE values as many short rows or one
    or two long ones."""
    batch = [draw(SMALL) for _ in range(draw(st.integers(0, 2)))]
    normalized = [
        draw(st.sampled_from([1, 1, 2, 3, 8, 33])) for _ in range(draw(st.integers(1, 3)))
    ]
    size = draw(st.sampled_from(["small"] * 5 + ["one-value rows", "many rows", "long rows"]))
    if size == "one-value rows":
        normalized = [1] * len(normalized)
    elif size == "many rows":
        batch = [LARGE // math.prod(normalized) + 1]
    elif size == "long rows":
        batch, normalized = [draw(st.sampled_from([1, 2]))], [LARGE]
    if math.prod(normalized) == 1:
        event("one-value rows")
    return (*batch, *normalized), tuple(normalized)


@st.composite
def layer_norms(draw) -> Spec:
    """LayerNorm or LayerNormAct over 1 to 3 trailing dims, with or without weight and bias."""
    shape, normalized = _row_shape(draw)
    kind = draw(st.sampled_from(["LayerNorm", "LayerNorm", "LayerNormAct"]))
    args = dict(normalized_shape=normalized, eps=draw(EPS),
                elementwise_affine=draw(st.booleans()), bias=draw(st.booleans()))  # fmt: skip
    twin, twin_args = nn.LayerNorm, dict(args)
    if kind == "LayerNormAct":
        _with_act(draw, args, twin_args)
        twin = _then_act(nn.LayerNorm)
    return Spec(kind, args, twin, twin_args, shape, draw(st.booleans()), "layer_norm")


@st.composite
def rms_norms(draw) -> Spec:
    """RMSNorm over 1 to 3 trailing dims, eps None (the dtype's epsilon) or a number."""
    shape, normalized = _row_shape(draw)
    eps = draw(st.sampled_from([None, None, 1e-6, 1e-5, 0.5]))
    args = dict(normalized_shape=normalized, eps=eps, elementwise_affine=draw(st.booleans()))
    return Spec("RMSNorm", args, nn.RMSNorm, dict(args), shape, draw(st.booleans()), "rms_norm")


@st.composite
def layer_norms_2d(draw) -> Spec:
    """LayerNorm2d or LayerNormAct2d over the channels of ``(N, C, *)``, 2 to 5 dims."""
    shape = _per_channel_shape(draw, draw(st.sampled_from([2, 3, 4, 4, 5])))
    shape[1] = draw(st.sampled_from([1, 1, 2, 3, 8, 33]))
    if math.prod(shape) >= LARGE:
        shape[-1] = LARGE // math.prod(shape[:-1]) + 1
    kind = draw(st.sampled_from(["LayerNorm2d", "LayerNorm2d", "LayerNormAct2d"]))
    args = dict(num_channels=shape[1], eps=draw(EPS), affine=draw(st.booleans()),
                bias=draw(st.booleans()))  # fmt: skip
    twin_args = dict(args)
    if kind == "LayerNormAct2d":
        _with_act(draw, args, twin_args)
    training = draw(st.booleans())
    return Spec(kind, args, PermutedLayerNorm, twin_args, tuple(shape), training, "layer_norm_2d")


FAMILIES = {
    "batch_norm": batch_norms(),
    "instance_norm": instance_norms(),
    "group_norm": group_norms(),
    "layer_norm": layer_norms(),
    "rms_norm": rms_norms(),
    "layer_norm_2d": layer_norms_2d(),
}


# --- running one example --------------------------------------------------------------------


def _values(shape, dtype: torch.dtype, scale: float, offset: float, seed: int) -> Tensor:
    """Normal values of ``dtype`` (drawn in float64, then rounded)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=F64) * scale + offset).to(dtype)


def _laid_out(x: Tensor, layout: str) -> Tensor:
    """The same values in ``layout``: channels_last (4-D or 5-D; other ranks stay
    contiguous), every other element of a buffer twice as long in the first dim longer than
    1 (``"sliced"``), or the transpose of a transposed copy (``"transposed"``)."""
    if layout == "channels_last" and x.dim() in (4, 5):
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)
    if layout == "sliced":
        dim = next((d for d, size in enumerate(x.shape) if size > 1), 0)
        shape = list(x.shape)
        shape[dim] *= 2
        buffer = torch.full(shape, float("nan"), dtype=x.dtype)
        return buffer[(slice(None),) * dim + (slice(0, None, 2),)].copy_(x)
    if layout == "transposed" and x.dim() >= 2:
        return x.transpose(0, -1).contiguous().transpose(0, -1)
    return x


def _random_state(layer: nn.Module, gen: torch.Generator) -> None:
    """Random parameters and running statistics (a positive variance), a random count."""
    with torch.no_grad():
        for name, t in [*layer.named_parameters(), *layer.named_buffers()]:
            if name == "num_batches_tracked":
                t.fill_(int(torch.randint(0, 4, (), generator=gen)))
            elif name == "running_var":
                t.copy_(torch.rand(t.shape, generator=gen, dtype=F64) * 2.5 + 0.2)
            else:
                t.copy_(torch.randn(t.shape, generator=gen, dtype=F64))


def _run(layer: nn.Module, x: Tensor, grad: Tensor, training: bool) -> dict[str, Tensor]:
    """The layer's output, the gradients of ``(output * grad).sum()`` with respect to the
    input and each parameter, and the buffers after the call."""
    layer.train(training)
    x = x.detach().requires_grad_()
    params = dict(layer.named_parameters())
    y = layer(x)
    grads = torch.autograd.grad(y, [x, *params.values()], grad)
    out = {"output": y.detach()}
    out.update({f"grad {name}": g for name, g in zip(["input", *params], grads, strict=True)})
    out.update({name: b.detach().clone() for name, b in layer.named_buffers()})
    return out


def _scales(spec: Spec, x: Tensor, grad: Tensor, before: nn.Module, eps: float) -> dict:
    """Per quantity ``(terms, reduction)``: the largest intermediate the formula adds or
    subtracts, and for the quantities reduced over the batch the size of their rounding
    error (see the module docstring). ``x``, ``grad``: the float64 values; ``before``: the
    float64 layer before the call."""
    members, mean, rstd = spec.groups(x, before, eps)
    spread = members.abs().amax(1) + mean.abs()  # bounds |x - mean| in each group
    x_hat = (spread * rstd).max().item()
    per_group = (rstd * (1 + spread * rstd)).max().item()
    act = 2.0 if "Act" in spec.kind else 1.0  # the activations' slopes are below 1.5
    weight, bias = getattr(before, "weight", None), getattr(before, "bias", None)
    w = weight.abs().max().item() if weight is not None else 1.0
    b = bias.abs().max().item() if bias is not None else 0.0
    g = grad.abs().max().item() * act
    n = grad.numel() // weight.numel() if weight is not None else 1
    out = {
        "output": (act * (w * x_hat + b), 0.0),
        "grad input": (g * w * per_group, 0.0),
        "grad weight": (n * g * x_hat, math.sqrt(n) * g * x_hat),
        "grad bias": (n * g, math.sqrt(n) * g),
    }
    if getattr(before, "running_mean", None) is not None:
        square = 2 * spread.max().item() ** 2  # (x - mean)**2 * n / (n - 1), n / (n - 1) <= 2
        typical = members.abs().mean(1).max().item()
        typical_square = 2 * (members - mean[:, None]).square().mean(1).max().item()
        big = x.abs().max().item()
        out["running_mean"] = (before.running_mean.abs().max().item() + big, typical)
        out["running_var"] = (before.running_var.abs().max().item() + square, typical_square)
    return out


@dataclass
class Errors:
    """One quantity's errors over an example's draws, each in units of its draw's ``terms``
    (a scale common to both libraries, so that a draw with a large ``rstd`` does not
    outweigh the others): the means of normkit's error, torch's and the floor, and the
    numbers of the draw where normkit's was largest."""

    dtype: torch.dtype
    ours: float = 0.0
    theirs: float = 0.0
    floor: float = 0.0
    draws: int = 0
    worst: tuple = (-math.inf, "")

    def add(self, ours: Tensor, theirs: Tensor, truth: Tensor, scales: tuple) -> None:
        truth = truth.double()
        err = (ours.double() - truth).abs().max().item()
        torch_err = (theirs.double() - truth).abs().max().item()
        magnitude = truth.abs().max().item()
        terms, reduction = scales
        ulp = torch.finfo(self.dtype).eps
        floors = {
            "4 ulp * max|truth|": ULPS * ulp * magnitude,
            "4 ulp * reduction": ULPS * ulp * reduction,
            "TRUTH * terms": TRUTH[self.dtype] * terms,
        }
        floor = max(floors.values())
        unit = terms if terms > 0 else 1.0
        self.ours += err / unit
        self.theirs += torch_err / unit
        self.floor += floor / unit
        if not err / unit <= self.worst[0]:  # NaN too
            text = ", ".join(f"{name} = {value:.2e}" for name, value in floors.items())
            self.worst = (err / unit, f"normkit's error {err:.3e}, torch's {torch_err:.3e}, "
                          f"max|truth| {magnitude:.3e}, terms {terms:.3e}; {text}")  # fmt: skip
        self.draws += 1

    def failure(self, what: str) -> str | None:
        """The judge of the module docstring: a message when normkit's error is too large."""
        ours, theirs, floor = (
            self.ours / self.draws,
            self.theirs / self.draws,
            self.floor / self.draws,
        )
        if ours <= max(2 * theirs, floor):
            return None
        return (
            f"{what}: normkit's error {ours:.3e} > max(2 * torch's error {theirs:.3e}, floor "
            f"{floor:.3e}) (in units of terms, mean of {self.draws} draw(s); the worst: "
            f"{self.worst[1]})"
        )


def _formats(t: Tensor) -> tuple[bool, ...]:
    """Whether ``t`` is contiguous, and channels_last(_3d) for a 4-D (5-D) tensor."""
    layouts = {4: torch.channels_last, 5: torch.channels_last_3d}
    extra = (t.is_contiguous(memory_format=layouts[t.dim()]),) if t.dim() in layouts else ()
    return (t.is_contiguous(), *extra)


def _expected_formats(spec: Spec, x: Tensor, theirs: Tensor) -> tuple[bool, ...]:
    """torch's output format (for LayerNorm2d its twin's: channels fastest)."""
    return _formats(theirs)


def _picked(spec: Spec, x: Tensor) -> str:
    """The backend the call's op selects for ``x`` in the active ``use_backend`` block."""
    return backends.backend_name(backends.select(spec.op, spec.op_input(x)))


def _three_layers(spec: Spec, dtype: torch.dtype, seed: int):
    """normkit's layer, torch's and torch's float64 copy, with one random state."""
    theirs = spec.theirs(dtype)
    _random_state(theirs, torch.Generator().manual_seed(seed))
    ours = spec.ours(dtype)
    ours.load_state_dict(theirs.state_dict())
    truth = copy.deepcopy(theirs).double()
    if getattr(truth, "eps", 0.0) is None:  # RMSNorm's default is the *input's* epsilon
        truth.eps = torch.finfo(dtype).eps
    return ours, theirs, truth


def _draws(shape) -> int:
    """How many draws of values and gradients judge an example: one for 64 values or more,
    else up to 32 (see :func:`check_against_torch`)."""
    return min(32, -(-64 // math.prod(shape)))


def _one_draw(spec: Spec, setting: Setting, seed: int):
    """normkit's, torch's and the truth's quantities for one draw, the float64 scales, the
    input as laid out and the backend the call took."""
    dtype = setting.dtype
    ours, theirs, truth_layer = _three_layers(spec, dtype, seed + 1)
    before = copy.deepcopy(truth_layer)
    values = _values(spec.shape, dtype, setting.scale, setting.offset, seed)
    x = _laid_out(values, setting.layout)
    grad = _values(spec.shape, dtype, 1.0, 0.0, seed + 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(spec.shape))
    try:
        with nk.use_backend(setting.backend):
            picked = _picked(spec, x)
            got = _run(ours, x, grad, spec.training)
        want = _run(theirs, x, grad, spec.training)
        truth = _run(truth_layer, values.double(), grad.double(), spec.training)
    finally:
        torch.set_num_threads(threads)
    scales = _scales(spec, values.double(), grad.double(), before, truth_layer.eps)
    return got, want, truth, scales, x, picked


def _sums_differently(spec: Spec, what: str) -> bool:
    """Where normkit's result is not torch's bit for bit in float16/bfloat16: torch computes
    InstanceNorm with running statistics as BatchNorm of a ``(1, N * C, *)`` view with the
    weight repeated N times, so each sample's parameter gradient is rounded to the dtype
    before the N are summed; normkit sums them unrounded (one BatchNorm over ``(N, C, *)``)."""
    return (
        spec.kind.startswith("InstanceNorm")
        and spec.op == "batch_norm_eval"
        and what
        in (
            "grad weight",
            "grad bias",
        )
    )


def check_against_torch(spec: Spec, setting: Setting, bitwise: bool = False) -> None:
    """Run normkit's layer, torch's and torch's float64 layer on an example's draws and
    assert the judge of the module docstring for every quantity (all failures in one
    message naming the example).

    An example of fewer than 64 values is judged over several draws of its values and
    output gradient (:func:`_draws`), on the mean error (each draw's in units of its
    ``terms``): on a handful of values both errors are a few roundings either way and one
    lucky draw of torch's is no verdict, while a real loss (a gradient torch gets exactly
    and normkit does not) shows in every draw. ``bitwise``: normkit's quantities must
    be torch's bit for bit (NaN where torch's is NaN) in every draw, except where
    :func:`_sums_differently`, which are judged."""
    dtype = setting.dtype
    draws = _draws(spec.shape)
    errors: dict[str, Errors] = {}
    failures: list[str] = []
    for draw in range(draws):
        got, want, truth, scales, x, picked = _one_draw(spec, setting, setting.seed + 3 * draw)
        where = f"{spec.describe()}, {setting.describe(spec.shape)} (ran on {picked})"
        assert got.keys() == want.keys(), f"{where}: quantities {sorted(got)} vs {sorted(want)}"
        y = got["output"]
        assert y.dtype == dtype, f"{where}: output dtype {y.dtype}"
        assert _formats(y) == _expected_formats(spec, x, want["output"]), (
            f"{where}: output strides {y.stride()}, torch's {want['output'].stride()}"
        )
        if "num_batches_tracked" in got:
            count, torch_count = got.pop("num_batches_tracked"), want["num_batches_tracked"]
            assert torch.equal(count, torch_count), (
                f"{where}: num_batches_tracked {count.item()}, torch's {torch_count.item()}"
            )
        for what in got:
            if bitwise and not _sums_differently(spec, what):
                if not _same(got[what], want[what]):
                    diff = (got[what].double() - want[what].double()).abs().max().item()
                    failures.append(f"{what}: not torch's bit for bit, max difference {diff:.3e}")
            else:
                quantity = errors.setdefault(what, Errors(dtype))
                quantity.add(got[what], want[what], truth[what], scales[what])
    event(f"{spec.kind} {str(dtype).removeprefix('torch.')} {setting.backend}->{picked}")
    event(f"layout {backends.layout_of(x)}")
    failures += [message for what, e in errors.items() if (message := e.failure(what))]
    assert not failures, f"{where}:\n  " + "\n  ".join(failures)


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"])
@examples(50)
@given(data=st.data(), setting=settings_for([F32, F64]))
def test_batch_norm_at_least_as_accurate_as_torch(kind, data, setting):
    check_against_torch(data.draw(batch_norms(kinds=(kind,))), setting)


@pytest.mark.parametrize("act", ACTS)
@examples(20)
@given(data=st.data(), setting=settings_for([F32, F64]))
def test_batch_norm_act_at_least_as_accurate_as_torch(act, data, setting):
    """Each fused activation on its own (the numba kernels compute it, with float32
    approximations of exp and erf), on the numba backend half of the time."""
    check_against_torch(data.draw(batch_norms(("BatchNormAct1d", "BatchNormAct2d"), act)), setting)


@pytest.mark.parametrize("dims", [1, 2, 3])
@examples(40)
@given(data=st.data(), setting=settings_for([F32, F64]))
def test_instance_norm_at_least_as_accurate_as_torch(dims, data, setting):
    check_against_torch(data.draw(instance_norms(dims)), setting)


@SETTINGS
@given(spec=group_norms(), setting=settings_for([F32, F64]))
def test_group_norm_at_least_as_accurate_as_torch(spec, setting):
    check_against_torch(spec, setting)


@SETTINGS
@given(spec=layer_norms(), setting=settings_for([F32, F64]))
def test_layer_norm_at_least_as_accurate_as_torch(spec, setting):
    check_against_torch(spec, setting)


@SETTINGS
@given(spec=rms_norms(), setting=settings_for([F32, F64]))
def test_rms_norm_at_least_as_accurate_as_torch(spec, setting):
    check_against_torch(spec, setting)


@SETTINGS
@given(spec=layer_norms_2d(), setting=settings_for([F32, F64]))
def test_layer_norm_2d_at_least_as_accurate_as_torch(spec, setting):
    check_against_torch(spec, setting)


def _same(a: Tensor, b: Tensor) -> bool:
    """Same dtype, shape and values, NaN where the other has NaN (a float16 eps of 1e-10
    overflows 1/sqrt in both libraries)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


@SETTINGS
@given(spec=st.one_of(*FAMILIES.values()), setting=settings_for([F16, BF16], ("auto", "torch")))
def test_half_precision_equals_torch(spec, setting):
    check_against_torch(spec, setting, bitwise=True)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_rms_norm_default_eps_in_half_precision(dtype):
    """torch's kernel takes eps=None as its float32 computation type's epsilon."""
    x = torch.tensor([[0.0012, 0.5]], dtype=dtype)
    want = nn.RMSNorm(2, eps=None, elementwise_affine=False, dtype=dtype)(x)
    got = nk.nn.RMSNorm(2, eps=None, elementwise_affine=False, dtype=dtype)(x)
    assert torch.equal(got, want), f"normkit {got.tolist()}, torch {want.tolist()}"


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    "layer, shape",
    [
        (lambda dt: nk.nn.GroupNorm(1, 1, eps=1e-10, dtype=dt), (2, 1)),
        (lambda dt: nk.nn.GroupNorm(1, 1, eps=1e-10, dtype=dt), (3, 1, 1)),
        (lambda dt: nk.nn.GroupNorm(3, 3, eps=1e-10, dtype=dt), (4, 3)),
        (lambda dt: nk.nn.GroupNorm(6, 6, eps=1e-10, dtype=dt), (3, 6, 1, 1)),
        (lambda dt: nk.nn.GroupNorm(2, 2, eps=1e-10, dtype=dt), (70001, 2)),
        (lambda dt: nk.nn.LayerNorm(1, bias=False, dtype=dt), (1,)),
        (lambda dt: nk.nn.LayerNorm(1, dtype=dt), (7, 1)),
        (lambda dt: nk.nn.LayerNorm((1, 1), dtype=dt), (3, 1, 1)),
        (lambda dt: nk.nn.LayerNorm(1, dtype=dt), (70001, 1)),
        (lambda dt: nk.nn.LayerNorm2d(1, dtype=dt), (2, 1, 5, 5)),
    ],
    ids=[
        "GN(1,1) 2x1",
        "GN(1,1) 3x1x1",
        "GN(3,3)",
        "GN(6,6)",
        "GN(2,2) two threads",
        "LN(1) 1",
        "LN(1) 7x1",
        "LN(1,1)",
        "LN(1) two threads",
        "LN2d(1)",
    ],
)
def test_one_value_normalized_has_zero_input_gradient(layer, shape, dtype):
    """A group or row of one value outputs its bias whatever the value, so the input
    gradient is exactly 0 (torch's is, with one channel). The numba kernels left an ulp of
    ``rstd * w * g``, up to 4e-4 in float32 (GroupNorm(1, 1) on (2, 1), eps 1e-10) and
    5e-6 (LayerNorm(1), eps 1e-5), found by test_group_norm_at_least_as_accurate_as_torch
    and test_layer_norm_at_least_as_accurate_as_torch."""
    gen = torch.Generator().manual_seed(0)
    module = layer(dtype)
    _random_state(module, gen)
    x = _values(shape, dtype, 1e-3, -300.0, 1).requires_grad_()
    grad = _values(shape, dtype, 1.0, 0.0, 2)
    with nk.use_backend("numba"):
        dx = torch.autograd.grad(module(x), x, grad)[0]
    assert torch.equal(dx, torch.zeros_like(dx)), f"max |dx| {dx.abs().max():.3e}, expected 0"


@pytest.mark.parametrize(
    "layer, shape",
    [
        (lambda dt: nk.nn.BatchNorm2d(3, dtype=dt), (2, 3, 4, 4)),
        (lambda dt: nk.nn.InstanceNorm1d(3, dtype=dt), (2, 3, 5)),
        (lambda dt: nk.nn.GroupNorm(1, 3, dtype=dt), (2, 3, 4)),
        (lambda dt: nk.nn.LayerNorm(4, dtype=dt), (2, 4)),
        (lambda dt: nk.nn.RMSNorm(4, dtype=dt), (2, 4)),
        (lambda dt: nk.nn.LayerNorm2d(3, dtype=dt), (2, 3, 4, 4)),
    ],
    ids=["BatchNorm2d", "InstanceNorm1d", "GroupNorm", "LayerNorm", "RMSNorm", "LayerNorm2d"],
)
@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_numba_refuses_half_precision(layer, shape, dtype):
    """Why the half-precision test draws only ``"auto"`` and ``"torch"``: the numba backend,
    asked for by name, refuses these dtypes with an error (never a silent fallback)."""
    x = torch.ones(shape, dtype=dtype)
    with nk.use_backend("numba"), pytest.raises(BackendUnavailableError, match="cannot run"):
        layer(dtype)(x)
