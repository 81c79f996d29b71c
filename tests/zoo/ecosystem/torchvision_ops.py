"""Stand-ins for torchvision's layer classes (torchvision 0.28.0, git 8fb87713; unchanged in
0.29.1): ``torchvision.ops.misc`` (FrozenBatchNorm2d, ConvNormActivation,
Conv2dNormActivation, SqueezeExcitation, Permute), ``torchvision.ops.stochastic_depth``
(StochasticDepth) and ``torchvision.models.convnext.LayerNorm2d``.

torchvision's ``_log_api_usage_once`` telemetry calls are left out; nothing else differs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from tests.zoo.ecosystem._functional import (
    drop_num_batches_tracked,
    frozen_batch_norm,
    layer_norm_channels_first,
)

__all__ = [
    "Conv2dNormActivation",
    "ConvNormActivation",
    "FrozenBatchNorm2d",
    "LayerNorm2d",
    "Permute",
    "SqueezeExcitation",
    "StochasticDepth",
    "stochastic_depth",
]


class FrozenBatchNorm2d(nn.Module):
    """torchvision.ops.misc.FrozenBatchNorm2d (torchvision 0.28.0): BatchNorm2d inference with fixed
    statistics.

        y = x * scale + (bias - running_mean * scale),  scale = weight / sqrt(running_var + eps)

    ``weight``, ``bias``, ``running_mean``, ``running_var`` are all buffers (no parameters,
    no ``num_batches_tracked``; loading a BatchNorm checkpoint drops that key). ``eps``
    defaults to 1e-5 (it was 0.0 in torchvision <= 0.8). The buffers are created in the
    default dtype: the constructor takes no ``device``/``dtype``. Input (N, C, H, W).
    """

    __module__ = "torchvision.ops.misc"

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        drop_num_batches_tracked(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        return frozen_batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.eps
        )

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.weight.shape[0]}, eps={self.eps})"


class ConvNormActivation(nn.Sequential):
    """torchvision.ops.misc.ConvNormActivation (torchvision 0.28.0): ``Sequential(conv, norm?,
    act?)``.

    Children are numbered ``0`` (conv), ``1`` (norm, if ``norm_layer``), then the activation,
    so a checkpoint reads ``features.0.0.weight``, ``features.0.1.running_mean``.
    ``padding=None`` gives ``(kernel_size - 1) // 2 * dilation``; ``bias=None`` gives a bias
    only without a norm layer; the activation is built with ``inplace=True`` by default
    (``inplace=None`` leaves the class default). Use the 2d subclass, as torchvision warns.
    """

    __module__ = "torchvision.ops.misc"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...] = 3,
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str | None = None,
        groups: int = 1,
        norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
        activation_layer: Callable[..., nn.Module] | None = nn.ReLU,
        dilation: int | tuple[int, ...] = 1,
        inplace: bool | None = True,
        bias: bool | None = None,
        conv_layer: Callable[..., nn.Module] = nn.Conv2d,
    ) -> None:
        if padding is None:
            if isinstance(kernel_size, int) and isinstance(dilation, int):
                padding = (kernel_size - 1) // 2 * dilation
            else:
                ndim = len(kernel_size) if isinstance(kernel_size, Sequence) else len(dilation)
                ks = (kernel_size,) * ndim if isinstance(kernel_size, int) else tuple(kernel_size)
                dil = (dilation,) * ndim if isinstance(dilation, int) else tuple(dilation)
                padding = tuple((k - 1) // 2 * d for k, d in zip(ks, dil, strict=True))
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            conv_layer(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer(**({} if inplace is None else {"inplace": inplace})))
        super().__init__(*layers)
        self.out_channels = out_channels
        if self.__class__ is ConvNormActivation:
            warnings.warn(
                "Don't use ConvNormActivation directly, please use Conv2dNormActivation and "
                "Conv3dNormActivation instead.",
                stacklevel=2,
            )


class Conv2dNormActivation(ConvNormActivation):
    """torchvision.ops.misc.Conv2dNormActivation (torchvision 0.28.0): ConvNormActivation with
    ``nn.Conv2d``."""

    __module__ = "torchvision.ops.misc"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str | None = None,
        groups: int = 1,
        norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
        activation_layer: Callable[..., nn.Module] | None = nn.ReLU,
        dilation: int | tuple[int, int] = 1,
        inplace: bool | None = True,
        bias: bool | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            groups,
            norm_layer,
            activation_layer,
            dilation,
            inplace,
            bias,
            nn.Conv2d,
        )


class SqueezeExcitation(nn.Module):
    """torchvision.ops.misc.SqueezeExcitation (torchvision 0.28.0) (Hu et al. 2018, eq. 3):

        y = x * scale_activation(fc2(activation(fc1(avgpool(x)))))

    with 1x1 convolutions ``fc1``/``fc2`` (biased), ``avgpool`` an AdaptiveAvgPool2d(1).
    """

    __module__ = "torchvision.ops.misc"

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return self.scale_activation(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self._scale(x) * x


class Permute(nn.Module):
    """torchvision.ops.misc.Permute (torchvision 0.28.0): ``torch.permute(x, dims)`` (a view, not a
    copy)."""

    __module__ = "torchvision.ops.misc"

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


def stochastic_depth(x: Tensor, p: float, mode: str, training: bool = True) -> Tensor:
    """torchvision.ops.stochastic_depth (Huang et al. 2016): zero the input with probability
    ``p`` per sample (``mode="row"``) or for the whole batch (``"batch"``), scaling what is
    kept by ``1 / (1 - p)``; identity when not training or ``p == 0``."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ("batch", "row"):
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return x
    survival_rate = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return x * noise


stochastic_depth.__module__ = "torchvision.ops.stochastic_depth"


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth (torchvision 0.28.0) (defined in
    ``torchvision.ops.stochastic_depth``)."""

    __module__ = "torchvision.ops.stochastic_depth"

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        return stochastic_depth(x, self.p, self.mode, self.training)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p}, mode={self.mode})"


class LayerNorm2d(nn.LayerNorm):
    """torchvision.models.convnext.LayerNorm2d (torchvision 0.28.0): LayerNorm over the channels of
    (N, C, H, W).

        y = permute(layer_norm(permute(x, (0, 2, 3, 1)), (C,)), (0, 3, 1, 2))

    Constructor and defaults are nn.LayerNorm's (eps 1e-5; torchvision's ConvNeXt passes
    ``eps=1e-6``); the output is a permuted (channels-last-strided) view.
    """

    __module__ = "torchvision.models.convnext"

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm_channels_first(x, self.normalized_shape, self.weight, self.bias, self.eps)
