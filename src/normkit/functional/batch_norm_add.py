"""Batch normalization, a residual add and an activation as one op, stateless: the end of a
ResNet block, ``act(batch_norm(x) + residual)``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from torch import Tensor

from normkit._shared import constant_under_compile
from normkit.backends import backend_name, select
from normkit.functional import _validate as v

#: Activations the fused residual op applies.
RESIDUAL_ACTIVATIONS = ("identity", "relu")

_BACKEND_MODULES = {
    "numba": "normkit.backends.numba_batch_norm_add",
    "torch": "normkit.backends.torch_batch_norm_add",
}


def batch_norm_add_act(
    input: Tensor,
    residual: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    act: str = "relu",
    *,
    num_batches_tracked: Tensor | None = None,
    backend: str | None = None,
    name: str = "batch_norm_add_act",
) -> Tensor:
    r"""``act(batch_norm(input, ...) + residual)`` in one pass over memory each way.

    .. math::
        y = \mathrm{act}\!\left(\gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta
            + r\right)

    Statistics, running update and ``training`` semantics are
    :func:`~normkit.functional.batch_norm`'s. ``act``: ``"relu"`` or ``"identity"``. The
    gradients are those of the three ops in a row: ``d residual = g * act'(y)`` and
    BatchNorm's backward of that same gradient (the ReLU's mask is read from the output, so
    nothing but the output is kept for the backward).

    Shape: ``input`` and ``residual`` ``(N, C, *)``, the same shape, dtype and device (no
    broadcasting); output the same, in BatchNorm's memory format.
    """
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, training, name
    )
    check_residual(input, residual, name)
    check_residual_activation(act, name)
    return normalize_add_per_channel(
        input, residual, running_mean, running_var, weight, bias, training, momentum, eps,
        num_batches_tracked, backend, name, act,
    )  # fmt: skip


def check_residual(input: Tensor, residual: object, name: str) -> None:
    if not isinstance(residual, Tensor):
        raise v.NormInputError(f"{name}: expected a residual tensor, got {type(residual).__name__}")
    if residual.shape != input.shape:
        raise v.NormInputError(
            f"{name}: expected a residual of the input's size {v.shape_str(input.shape)}, "
            f"got {v.shape_str(residual.shape)}"
        )
    if residual.dtype != input.dtype or residual.device != input.device:
        raise v.NormInputError(
            f"{name}: expected a residual of the input's dtype and device ({input.dtype}, "
            f"{input.device}), got {residual.dtype} on {residual.device}"
        )


def check_residual_activation(act: str, name: str) -> None:
    if act not in RESIDUAL_ACTIVATIONS:
        raise v.NormInputError(
            f"{name}: act must be one of {RESIDUAL_ACTIVATIONS} after a residual add, got {act!r}"
        )


def normalize_add_per_channel(
    input: Tensor,
    residual: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float | None,
    eps: float,
    num_batches_tracked: Tensor | None,
    backend: str | None,
    name: str,
    act: str = "relu",
) -> Tensor:
    """:func:`batch_norm_add_act` on validated arguments: the mode-dependent checks, then the
    backend. The fused op runs on the backend BatchNorm itself takes for ``input`` (the
    same dispatch decision and measured crossover: the op is a BatchNorm with a cheaper
    elementwise tail)."""
    if training:
        v.check_more_than_one_value_per_channel(input, name)
        v.check_cumulative_average(momentum, running_mean, running_var, num_batches_tracked, name)
        module = sys.modules[_backend_module(select("batch_norm_train", input, backend, act))]
        return module.batch_norm_add_train(
            input, residual, weight, bias, running_mean, running_var, num_batches_tracked,
            momentum, eps, act, name,
        )  # fmt: skip
    v.check_running_stats_for_eval(running_mean, running_var, name)
    module = sys.modules[_backend_module(select("batch_norm_eval", input, backend, act))]
    return module.batch_norm_add_eval(
        input, residual, weight, bias, running_mean, running_var, eps, act
    )


@constant_under_compile
def _backend_module(bn_impl: Callable) -> str:
    """The module holding the fused op of the backend BatchNorm's ``bn_impl`` (what
    :func:`normkit.backends.select` returned) belongs to; imported on first use. Under
    torch.compile this runs at trace time, like the dispatch decision itself."""
    name = _MODULE_OF.get(bn_impl)
    if name is None:
        name = _MODULE_OF[bn_impl] = _BACKEND_MODULES[backend_name(bn_impl)]
        importlib.import_module(name)
    return name


_MODULE_OF: dict[Callable, str] = {}
