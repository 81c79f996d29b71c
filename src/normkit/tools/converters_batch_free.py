"""timm's batch-free and response norms -> normkit's layers of the same names, for the
``convert`` registry.

For each timm class, ``build(module)`` constructs the normkit layer from the module's
attributes (on its device, in its dtype), loads its state dict strictly and keeps its
train/eval flag and each parameter's ``requires_grad``; ``check(module)`` is ``None`` when
the conversion is exact, else the reason it is not. :data:`CONVERTERS` lists
``(dotted path of the timm class, build, check, why)``.

"Exact" means the same function with the same state: outputs agree to rounding in float32
and float64. timm reduces FRN and EvoNorm inputs in float32 even for float64 models, where
normkit reduces in float64 (its float64 results are the more accurate ones); in float16 and
bfloat16 normkit computes the whole layer in float32 and rounds once, while timm rounds
between its steps, so ``check`` reports half-precision layers as not exact.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from normkit.nn._activations import fused_activation
from normkit.nn.batch_free import (
    EvoNorm2dB0,
    EvoNorm2dS0,
    EvoNorm2dS0a,
    FilterResponseNormAct2d,
    FilterResponseNormTlu2d,
    GlobalResponseNorm,
    RmsNorm2d,
)
from normkit.tools._walk import factory_kwargs_of, load_state

__all__ = ["CONVERTERS"]


def _channels(module: nn.Module) -> int:
    return module.weight.shape[0]


def _half_precision(module: nn.Module) -> str | None:
    dtype = factory_kwargs_of(module).get("dtype")
    if dtype in (torch.float16, torch.bfloat16):
        return (
            f"{dtype} parameters: normkit computes the layer in float32 and rounds once, "
            "timm rounds between its steps (outputs differ by half-precision rounding)"
        )
    return None


# --------------------------------------------------------------------------- FRN


def build_filter_response_norm_tlu(module: nn.Module) -> FilterResponseNormTlu2d:
    layer = FilterResponseNormTlu2d(
        _channels(module), apply_act=module.tau is not None, eps=module.eps, rms=module.rms,
        **factory_kwargs_of(module),
    )  # fmt: skip
    layer.apply_act = module.apply_act
    return load_state(layer, module)


def check_filter_response_norm_tlu(module: nn.Module) -> str | None:
    return _half_precision(module)


def build_filter_response_norm_act(module: nn.Module) -> FilterResponseNormAct2d:
    reason = _activation_problem(module)
    if reason is not None:
        raise ValueError(f"cannot convert {type(module).__name__}: {reason}")
    layer = FilterResponseNormAct2d(
        _channels(module), rms=module.rms, eps=module.eps, **factory_kwargs_of(module)
    )
    layer.act = copy.deepcopy(module.act)  # timm's (stateless) activation module, kept
    return load_state(layer, module)


def _activation_problem(module: nn.Module) -> str | None:
    if fused_activation(module.act) is None:
        return (
            f"its activation {module.act!r} is not one normkit fuses (ReLU, LeakyReLU, SiLU, "
            "exact GELU, ReLU6, Hardswish, Identity)"
        )
    return None


def check_filter_response_norm_act(module: nn.Module) -> str | None:
    return _activation_problem(module) or _half_precision(module)


# --------------------------------------------------------------------------- EvoNorm


def build_evo_norm_b0(module: nn.Module) -> EvoNorm2dB0:
    layer = EvoNorm2dB0(
        _channels(module), apply_act=module.v is not None, momentum=module.momentum,
        eps=module.eps, **factory_kwargs_of(module),
    )  # fmt: skip
    layer.apply_act = module.apply_act
    return load_state(layer, module)


def check_evo_norm_b0(module: nn.Module) -> str | None:
    momentum = module.momentum
    if module.v is not None and not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
        return f"momentum={momentum!r}: normkit's EvoNorm2dB0 takes a number in [0, 1]"
    return _half_precision(module)


def _build_evo_norm_s(cls: type[EvoNorm2dS0], module: nn.Module) -> EvoNorm2dS0:
    layer = cls(
        _channels(module), groups=module.groups, apply_act=module.v is not None,
        eps=module.eps, **factory_kwargs_of(module),
    )  # fmt: skip
    layer.apply_act = module.apply_act
    return load_state(layer, module)


def build_evo_norm_s0(module: nn.Module) -> EvoNorm2dS0:
    return _build_evo_norm_s(EvoNorm2dS0, module)


def build_evo_norm_s0a(module: nn.Module) -> EvoNorm2dS0a:
    return _build_evo_norm_s(EvoNorm2dS0a, module)


def check_evo_norm_s0(module: nn.Module) -> str | None:
    return _half_precision(module)


# --------------------------------------------------------------------------- GRN, RmsNorm2d


def build_global_response_norm(module: nn.Module) -> GlobalResponseNorm:
    layer = GlobalResponseNorm(
        _channels(module), eps=module.eps, channels_last=module.channel_dim == -1,
        **factory_kwargs_of(module),
    )  # fmt: skip
    return load_state(layer, module)


def check_global_response_norm(module: nn.Module) -> str | None:
    return _half_precision(module)


def build_rms_norm2d(module: nn.Module) -> RmsNorm2d:
    layer = RmsNorm2d(
        module.normalized_shape, eps=module.eps, affine=module.elementwise_affine,
        **factory_kwargs_of(module),
    )  # fmt: skip
    return load_state(layer, module)


def check_rms_norm2d(module: nn.Module) -> str | None:
    if len(module.normalized_shape) != 1:
        return f"normalized_shape={tuple(module.normalized_shape)}: RmsNorm2d has one entry"
    return _half_precision(module)


CONVERTERS: list[tuple[str, Callable[[nn.Module], nn.Module], Callable, str]] = [
    (
        "timm.layers.filter_response_norm.FilterResponseNormTlu2d",
        build_filter_response_norm_tlu,
        check_filter_response_norm_tlu,
        "Both compute max(x * rsqrt(mean_HW(x**2) + eps) * weight + bias, tau) (no max "
        "without tau) from the same weight, bias, tau and eps.",
    ),
    (
        "timm.layers.filter_response_norm.FilterResponseNormAct2d",
        build_filter_response_norm_act,
        check_filter_response_norm_act,
        "Both compute act(x * rsqrt(mean_HW(x**2) + eps) * weight + bias), normkit with the "
        "activation fused and the same act module kept.",
    ),
    (
        "timm.layers.evo_norm.EvoNorm2dB0",
        build_evo_norm_b0,
        check_evo_norm_b0,
        "Both compute x / max(sqrt(var_b + eps), v * x + sqrt(var_HW + eps)) * weight + bias "
        "with the batch variance in training and running_var in eval, and move running_var "
        "by the same momentum rule (only the affine without v).",
    ),
    (
        "timm.layers.evo_norm.EvoNorm2dS0",
        build_evo_norm_s0,
        check_evo_norm_s0,
        "Both compute x * sigmoid(v * x) / sqrt(var_group + eps) * weight + bias with the "
        "same groups (only the affine without v).",
    ),
    (
        "timm.layers.evo_norm.EvoNorm2dS0a",
        build_evo_norm_s0a,
        check_evo_norm_s0,
        "Both compute x * sigmoid(v * x) / sqrt(var_group + eps) * weight + bias, the "
        "division by the group std also without v.",
    ),
    (
        "timm.layers.grn.GlobalResponseNorm",
        build_global_response_norm,
        check_global_response_norm,
        "Both compute x + weight * x * gx / (mean_C(gx) + eps) + bias, gx the spatial L2 norm, "
        "in the same layout (channels_last or not).",
    ),
    (
        "timm.layers.norm.RmsNorm2d",
        build_rms_norm2d,
        check_rms_norm2d,
        "Both compute x * rsqrt(mean_C(x**2) + eps) * weight over dim 1 of an NCHW map.",
    ),
]
