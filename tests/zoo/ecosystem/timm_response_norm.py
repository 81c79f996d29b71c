"""Stand-ins for timm's batch-free and response norms (huggingface/pytorch-image-models
aa4b5850): ``timm.layers.evo_norm`` (EvoNorm2dB0, EvoNorm2dS0, EvoNorm2dS0a),
``timm.layers.filter_response_norm`` (FilterResponseNormTlu2d, FilterResponseNormAct2d) and
``timm.layers.grn`` (GlobalResponseNorm, ConvNeXt-V2).

Precision, as in timm: EvoNorm and FRN compute their statistics with ``x.float()``, i.e.
in float32 *even for a float64 input* (a downcast), then cast the statistic back to the
input's dtype; GlobalResponseNorm computes in the input's dtype. EvoNorm2dB0's running
variance is kept in the buffer's dtype. eps is added inside the square root everywhere
here except in GlobalResponseNorm, where it is added to the mean of the L2 norms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tests.zoo.ecosystem.timm_create_act import create_act_layer

__all__ = [
    "EvoNorm2dB0",
    "EvoNorm2dS0",
    "EvoNorm2dS0a",
    "FilterResponseNormAct2d",
    "FilterResponseNormTlu2d",
    "GlobalResponseNorm",
]

_V_SHAPE = (1, -1, 1, 1)


def _check_4d(x: Tensor) -> None:
    torch._assert(x.dim() == 4, "expected 4D input")


def instance_std(x: Tensor, eps: float = 1e-5) -> Tensor:
    """sqrt(var(x over H, W, biased) + eps), statistics in float32, expanded to x's shape."""
    std = x.float().var(dim=(2, 3), unbiased=False, keepdim=True).add(eps).sqrt().to(x.dtype)
    return std.expand(x.shape)


def group_std(x: Tensor, groups: int = 32, eps: float = 1e-5) -> Tensor:
    """sqrt(var(x over each group of C // groups channels and H, W, biased) + eps), in
    float32, expanded to x's shape."""
    B, C, H, W = x.shape
    torch._assert(C % groups == 0, "")
    grouped = x.reshape(B, groups, C // groups, H, W)
    var = grouped.float().var(dim=(2, 3, 4), unbiased=False, keepdim=True)
    std = var.add(eps).sqrt().to(x.dtype)
    return std.expand(grouped.shape).reshape(B, C, H, W)


def inv_instance_rms(x: Tensor, eps: float = 1e-5) -> Tensor:
    """rsqrt(mean(x**2 over H, W) + eps): x**2 in x's dtype, the mean in float32."""
    rms = x.square().float().mean(dim=(2, 3), keepdim=True).add(eps).rsqrt().to(x.dtype)
    return rms.expand(x.shape)


def _add_affine(module: nn.Module, num_features: int, factory: dict) -> None:
    module.weight = nn.Parameter(torch.empty(num_features, **factory))
    module.bias = nn.Parameter(torch.empty(num_features, **factory))


def _reset_affine(module: nn.Module) -> None:
    nn.init.ones_(module.weight)
    nn.init.zeros_(module.bias)


def _affine(module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
    return x * module.weight.to(dtype).view(_V_SHAPE) + module.bias.to(dtype).view(_V_SHAPE)


class EvoNorm2dB0(nn.Module):
    """timm.layers.evo_norm.EvoNorm2dB0 (timm aa4b5850) (Liu et al. 2020, "B0": batch-dependent):

        y = x / max(sqrt(var_b + eps), v * x + sqrt(var_i + eps)) * weight + bias

    ``var_b``: the batch variance per channel over (N, H, W) (biased, float32) in training,
    ``running_var`` in evaluation; ``var_i``: the instance variance over (H, W). Training
    updates ``running_var = (1 - momentum) * running_var + momentum * var_b * n / (n - 1)``
    (n = N*H*W). eps defaults to 1e-3, momentum 0.1. With ``apply_act=False`` there is no
    ``v`` and the layer is only the affine ``x * weight + bias`` (no normalization at all).
    State: parameters ``weight``, ``bias``, ``v``; buffer ``running_var``. Input (N, C, H, W).
    """

    __module__ = "timm.layers.evo_norm"

    def __init__(
        self,
        num_features: int,
        apply_act: bool = True,
        momentum: float = 0.1,
        eps: float = 1e-3,
        device=None,
        dtype=None,
        **_,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.apply_act = apply_act
        self.momentum = momentum
        self.eps = eps
        _add_affine(self, num_features, factory)
        self.v = nn.Parameter(torch.empty(num_features, **factory)) if apply_act else None
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)
        if self.v is not None:
            nn.init.ones_(self.v)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x)
        x_dtype = x.dtype
        if self.v is not None:
            if self.training:
                var = x.float().var(dim=(0, 2, 3), unbiased=False)
                n = x.numel() / x.shape[1]
                self.running_var.copy_(
                    self.running_var * (1 - self.momentum)
                    + var.detach() * self.momentum * (n / (n - 1))
                )
            else:
                var = self.running_var
            left = var.add(self.eps).sqrt_().to(x_dtype).view(_V_SHAPE).expand_as(x)
            right = x * self.v.to(x_dtype).view(_V_SHAPE) + instance_std(x, self.eps)
            x = x / left.max(right)
        return _affine(self, x, x_dtype)


class EvoNorm2dS0(nn.Module):
    """timm.layers.evo_norm.EvoNorm2dS0 (timm aa4b5850) (Liu et al. 2020, "S0": sample-based,
    batch-free):

        y = x * sigmoid(v * x) / sqrt(var_g + eps) * weight + bias

    ``var_g``: the variance over each group of channels and (H, W) (biased, float32);
    ``groups=32`` or ``group_size`` (channels per group); eps 1e-5. With
    ``apply_act=False``: ``y = x * weight + bias`` (no normalization). State ``weight``,
    ``bias``, ``v``; no buffers.
    """

    __module__ = "timm.layers.evo_norm"

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        eps: float = 1e-5,
        device=None,
        dtype=None,
        **_,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.apply_act = apply_act
        if group_size:
            if num_features % group_size:
                raise ValueError(
                    f"{type(self).__name__}: num_features={num_features} is not a multiple of "
                    f"group_size={group_size}"
                )
            self.groups = num_features // group_size
        else:
            self.groups = groups
        self.eps = eps
        _add_affine(self, num_features, factory)
        self.v = nn.Parameter(torch.empty(num_features, **factory)) if apply_act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)
        if self.v is not None:
            nn.init.ones_(self.v)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x)
        x_dtype = x.dtype
        if self.v is not None:
            v = self.v.view(_V_SHAPE).to(x_dtype)
            x = x * (x * v).sigmoid() / group_std(x, self.groups, self.eps)
        return _affine(self, x, x_dtype)


class EvoNorm2dS0a(EvoNorm2dS0):
    """timm.layers.evo_norm.EvoNorm2dS0a (timm aa4b5850): EvoNorm2dS0 with eps 1e-3 whose group-std
    division applies even with ``apply_act=False`` (``y = x / sqrt(var_g + eps)`` then the
    affine); the group statistics are taken from the input before the sigmoid gate."""

    __module__ = "timm.layers.evo_norm"

    def __init__(
        self,
        num_features: int,
        groups: int = 32,
        group_size: int | None = None,
        apply_act: bool = True,
        eps: float = 1e-3,
        device=None,
        dtype=None,
        **_,
    ) -> None:
        super().__init__(
            num_features,
            groups=groups,
            group_size=group_size,
            apply_act=apply_act,
            eps=eps,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x)
        x_dtype = x.dtype
        d = group_std(x, self.groups, self.eps)
        if self.v is not None:
            x = x * (x * self.v.view(_V_SHAPE).to(x_dtype)).sigmoid()
        return _affine(self, x / d, x_dtype)


class FilterResponseNormTlu2d(nn.Module):
    """timm.layers.filter_response_norm.FilterResponseNormTlu2d (timm aa4b5850) (Singh & Krishnan
    2020):

        y = max(x * rsqrt(mean(x**2 over H, W) + eps) * weight + bias, tau)

    (the thresholded linear unit, TLU). eps 1e-5; ``tau`` initialised to 0 and present only
    with ``apply_act=True`` (then state ``weight``, ``bias``, ``tau``). The mean of squares
    is taken in float32. ``rms`` is stored but unused, as in timm.
    """

    __module__ = "timm.layers.filter_response_norm"

    def __init__(
        self,
        num_features: int,
        apply_act: bool = True,
        eps: float = 1e-5,
        rms: bool = True,
        device=None,
        dtype=None,
        **_,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.apply_act = apply_act
        self.rms = rms
        self.eps = eps
        _add_affine(self, num_features, factory)
        self.tau = nn.Parameter(torch.empty(num_features, **factory)) if apply_act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)
        if self.tau is not None:
            nn.init.zeros_(self.tau)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x)
        x_dtype = x.dtype
        x = _affine(self, x * inv_instance_rms(x, self.eps), x_dtype)
        if self.tau is None:
            return x
        return torch.maximum(x, self.tau.reshape(_V_SHAPE).to(dtype=x_dtype))


class FilterResponseNormAct2d(nn.Module):
    """timm.layers.filter_response_norm.FilterResponseNormAct2d (timm aa4b5850): FRN followed by an
    ordinary activation instead of the TLU:

        y = act(x * rsqrt(mean(x**2 over H, W) + eps) * weight + bias)

    ``act_layer=nn.ReLU`` built with ``inplace=None`` (the class default: not in-place);
    ``nn.Identity`` when ``apply_act=False`` or ``act_layer=None``. eps 1e-5; state
    ``weight``, ``bias``.
    """

    __module__ = "timm.layers.filter_response_norm"

    def __init__(
        self,
        num_features: int,
        apply_act: bool = True,
        act_layer: str | Callable[..., nn.Module] | None = nn.ReLU,
        inplace: bool | None = None,
        rms: bool = True,
        eps: float = 1e-5,
        device=None,
        dtype=None,
        **_,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if act_layer is not None and apply_act:
            self.act = create_act_layer(act_layer, inplace=inplace)
        else:
            self.act = nn.Identity()
        self.rms = rms
        self.eps = eps
        _add_affine(self, num_features, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_affine(self)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x)
        x = _affine(self, x * inv_instance_rms(x, self.eps), x.dtype)
        return self.act(x)


class GlobalResponseNorm(nn.Module):
    """timm.layers.grn.GlobalResponseNorm (timm aa4b5850) (ConvNeXt-V2, Woo et al. 2023):

        g = ||x||_2 over the spatial dims;   n = g / (mean(g over channels) + eps)
        y = x + (weight * (x * n) + bias)

    ``channels_last=True`` (the default) expects (N, H, W, C) and ``False`` (N, C, H, W).
    ``weight`` and ``bias`` start at zero, so a fresh layer is the identity. eps 1e-6,
    outside any square root. Not exported from ``timm.layers``; import it from
    ``timm.layers.grn`` (timm's ConvNeXt uses it through ``GlobalResponseNormMlp``).
    """

    __module__ = "timm.layers.grn"

    def __init__(
        self, dim: int, eps: float = 1e-6, channels_last: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.eps = eps
        if channels_last:
            self.spatial_dim = (1, 2)
            self.channel_dim = -1
            self.wb_shape = (1, 1, 1, -1)
        else:
            self.spatial_dim = (2, 3)
            self.channel_dim = 1
            self.wb_shape = (1, -1, 1, 1)
        self.weight = nn.Parameter(torch.zeros(dim, **factory))
        self.bias = nn.Parameter(torch.zeros(dim, **factory))

    def forward(self, x: Tensor) -> Tensor:
        x_g = x.norm(p=2, dim=self.spatial_dim, keepdim=True)
        x_n = x_g / (x_g.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        response = torch.addcmul(
            self.bias.view(self.wb_shape), self.weight.view(self.wb_shape), x * x_n
        )
        return x + response
