"""The calls ``nk.tools.convert``'s block fusion (:mod:`normkit.tools.fuse_blocks`) writes
into a block's forward in place of a BatchNorm call and what follows it::

    norm_act(norm, x, act, act_name)                 # act(norm(x))
    norm_add_act(norm, x, residual, act, act_name)   # act(norm(x) + residual)

``act`` is the activation module the block called, or ``None`` when it called a function
(``torch.relu``, ``F.silu``, ...) or, after a residual add, nothing; ``act_name`` names the
activation (:data:`normkit.nn._activations.ACTIVATION_CLASSES`; ``"identity"``: none).

Each computes the fused op (one BatchNorm+activation pass; BatchNorm + add + ReLU in one
pass) when that is exactly what the steps compute: ``norm`` is one of normkit's plain
``BatchNorm1d/2d/3d``, ``act`` is the torch class ``act_name`` names (GELU in its exact
form), no hook is registered on either module (nor globally), and the residual has the
input's shape, dtype and device. Otherwise (the norm replaced since conversion, e.g. folded
into ``nn.Identity`` or frozen; hooks from a tool such as ``monitor`` or ``summary``) it runs
the steps one by one, calling the modules, as the unfused block does; likewise for a norm
with a ``single_sample`` policy, which its own forward applies.

Registered with ``torch.fx.wrap``: a traced fused block has one node per call, with the
modules as ``get_attr`` arguments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module

from normkit.functional.batch_norm import normalize_per_channel
from normkit.functional.batch_norm_add import RESIDUAL_ACTIVATIONS, normalize_add_per_channel
from normkit.nn._activations import ACTIVATION_CLASSES
from normkit.nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d

_BATCH_NORMS = (BatchNorm1d, BatchNorm2d, BatchNorm3d)


def _hooked(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _global_hooks() -> bool:
    return bool(
        _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


def _fusable(norm: nn.Module, act: nn.Module | None, act_name: str) -> bool:
    """The fused op computes exactly what calling ``norm`` then ``act`` computes."""
    if type(norm) not in _BATCH_NORMS or _hooked(norm) or _global_hooks():
        return False
    if norm.single_sample != "error":  # the layer's own forward applies its policy
        return False
    if act is None:
        return True
    return (
        type(act) is ACTIVATION_CLASSES.get(act_name)
        and not _hooked(act)
        and getattr(act, "approximate", "none") == "none"
    )


def _activate(act: nn.Module | None, act_name: str, x: Tensor) -> Tensor:
    """The activation step of the unfused computation."""
    if act is not None:
        return act(x)
    return x if act_name == "identity" else getattr(F, act_name)(x)


def norm_act(norm: nn.Module, input: Tensor, act: nn.Module | None, act_name: str) -> Tensor:
    """``act(norm(input))``; one fused pass when exact (module docstring)."""
    if not (isinstance(input, Tensor) and _fusable(norm, act, act_name)):
        return _activate(act, act_name, norm(input))
    name = norm._check_input(input)
    running_mean, running_var, training, num_batches_tracked = norm._batch_norm_state()
    slope = act.negative_slope if act_name == "leaky_relu" else 0.01
    weight, bias = norm._affine()
    return normalize_per_channel(
        input, running_mean, running_var, weight, bias, training, norm.momentum, norm.eps,
        num_batches_tracked, None, name, act_name, slope,
    )  # fmt: skip


def norm_add_act(
    norm: nn.Module, input: Tensor, residual: Tensor, act: nn.Module | None, act_name: str
) -> Tensor:
    """``act(norm(input) + residual)``; one fused op when exact (module docstring)."""
    if not (
        isinstance(input, Tensor)
        and isinstance(residual, Tensor)
        and act_name in RESIDUAL_ACTIVATIONS
        and residual.shape == input.shape
        and residual.dtype == input.dtype
        and residual.device == input.device
        and _fusable(norm, act, act_name)
    ):
        return _activate(act, act_name, norm(input) + residual)
    name = norm._check_input(input)
    running_mean, running_var, training, num_batches_tracked = norm._batch_norm_state()
    weight, bias = norm._affine()
    return normalize_add_per_channel(
        input, residual, running_mean, running_var, weight, bias, training, norm.momentum,
        norm.eps, num_batches_tracked, None, name, act_name,
    )  # fmt: skip


torch.fx.wrap("norm_act")
torch.fx.wrap("norm_add_act")
