"""Stand-ins for ``timm.layers.norm_act`` (huggingface/pytorch-image-models aa4b5850):
BatchNormAct2d, FrozenBatchNormAct2d, GroupNormAct, GroupNorm1Act, LayerNormAct,
LayerNormAct2d and ``freeze_batch_norm_2d``.

Every class is "norm, then ``self.drop``, then ``self.act``": the norm is the base class's
own (timm subclasses the torch norm so that checkpoints of a separate norm + activation load
unchanged: keys are the norm's, ``drop`` and ``act`` hold no state). ``drop`` is
``drop_layer()`` or ``nn.Identity``; ``act`` is built by timm's ``create_act_layer`` with
``inplace=True`` by default (``nn.ReLU(inplace=True)``), or ``nn.Identity`` when
``apply_act=False``. Note the eps defaults: 1e-5 for all of these, including the LayerNorm
ones (timm's plain ``LayerNorm``/``LayerNorm2d`` default to 1e-6).

timm's "fast norm" option (off by default) is not reproduced; ``_fast_norm`` stays False.
timm's ``_create_act`` fills ``inplace`` into the caller's ``act_kwargs`` dict in place;
here a copy is filled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.zoo.ecosystem._functional import (
    drop_num_batches_tracked,
    frozen_batch_norm,
    layer_norm_channels_first,
)
from tests.zoo.ecosystem.timm_create_act import create_act_layer
from tests.zoo.ecosystem.torchvision_ops import FrozenBatchNorm2d

__all__ = [
    "BatchNormAct2d",
    "FrozenBatchNormAct2d",
    "GroupNorm1Act",
    "GroupNormAct",
    "LayerNormAct",
    "LayerNormAct2d",
    "freeze_batch_norm_2d",
]

_MODULE = "timm.layers.norm_act"

ActLayer = str | Callable[..., nn.Module] | None


def _create_act(
    act_layer: ActLayer,
    act_kwargs: dict[str, Any] | None = None,
    inplace: bool | None = False,
    apply_act: bool = True,
) -> nn.Module:
    kwargs = dict(act_kwargs or {})
    kwargs.setdefault("inplace", inplace)
    act = create_act_layer(act_layer, **kwargs) if apply_act else None
    return nn.Identity() if act is None else act


def _drop(drop_layer: Callable[[], nn.Module] | None) -> nn.Module:
    return drop_layer() if drop_layer is not None else nn.Identity()


def _init_drop_act(
    module: nn.Module,
    drop_layer: Callable[[], nn.Module] | None,
    act_layer: ActLayer,
    act_kwargs: dict[str, Any] | None,
    inplace: bool,
    apply_act: bool,
) -> None:
    """The ``drop`` and ``act`` children and timm's ``_fast_norm`` flag (always False here)."""
    module.drop = _drop(drop_layer)
    module.act = _create_act(act_layer, act_kwargs, inplace, apply_act)
    module._fast_norm = False


class BatchNormAct2d(nn.BatchNorm2d):
    """timm.layers.norm_act.BatchNormAct2d (timm aa4b5850): ``act(drop(BatchNorm2d(x)))``.

    A torch.nn.BatchNorm2d subclass (so ``isinstance(m, nn.BatchNorm2d)`` holds and a
    BatchNorm2d checkpoint loads): training uses batch statistics and updates the running
    ones exactly as nn.BatchNorm2d (timm's forward is a copy of torch's), evaluation uses
    the running ones. Extra constructor arguments: ``apply_act=True``,
    ``act_layer=nn.ReLU``, ``act_kwargs=None``, ``inplace=True``, ``drop_layer=None``.
    Like timm's, forward calls ``F.batch_norm`` itself rather than ``nn.BatchNorm2d.forward``.
    """

    __module__ = _MODULE

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        apply_act: bool = True,
        act_layer: ActLayer = nn.ReLU,
        act_kwargs: dict[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: Callable[[], nn.Module] | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
        )
        self.drop = _drop(drop_layer)
        self.act = _create_act(act_layer, act_kwargs, inplace, apply_act)

    def forward(self, x: Tensor) -> Tensor:
        # timm re-states nn.BatchNorm2d.forward around F.batch_norm instead of calling it
        torch._assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        update = not self.training or self.track_running_stats
        x = F.batch_norm(
            x,
            self.running_mean if update else None,
            self.running_var if update else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )
        return self.act(self.drop(x))


class FrozenBatchNormAct2d(nn.Module):
    """timm.layers.norm_act.FrozenBatchNormAct2d (timm aa4b5850): torchvision's FrozenBatchNorm2d,
    then ``drop`` and ``act``:

        y = act(drop(x * scale + (bias - running_mean * scale))),
        scale = weight * rsqrt(running_var + eps)

    Buffers ``weight``, ``bias``, ``running_mean``, ``running_var`` (no parameters, no
    ``num_batches_tracked``, dropped on load); eps 1e-5. Unlike torchvision's class the
    constructor takes ``device``/``dtype``.
    """

    __module__ = _MODULE

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        apply_act: bool = True,
        act_layer: ActLayer = nn.ReLU,
        act_kwargs: dict[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: Callable[[], nn.Module] | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features, **factory))
        self.register_buffer("bias", torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.drop = _drop(drop_layer)
        self.act = _create_act(act_layer, act_kwargs, inplace, apply_act)

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
        x = frozen_batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.eps
        )
        return self.act(self.drop(x))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.weight.shape[0]}, eps={self.eps}, act={self.act})"


def _num_groups(num_channels: int, num_groups: int, group_size: int | None) -> int:
    if group_size:
        if num_channels % group_size:
            raise ValueError(
                f"GroupNormAct: num_channels={num_channels} is not a multiple of "
                f"group_size={group_size}"
            )
        return num_channels // group_size
    return num_groups


class GroupNormAct(nn.GroupNorm):
    """timm.layers.norm_act.GroupNormAct (timm aa4b5850): ``act(drop(GroupNorm(x)))``, an
    nn.GroupNorm subclass.

    Channels come first: ``GroupNormAct(num_channels, num_groups=32, eps=1e-5, affine=True,
    group_size=None, ...)``; ``group_size`` overrides ``num_groups`` with
    ``num_channels // group_size``. Activation arguments as BatchNormAct2d.
    """

    __module__ = _MODULE

    def __init__(
        self,
        num_channels: int,
        num_groups: int = 32,
        eps: float = 1e-5,
        affine: bool = True,
        group_size: int | None = None,
        apply_act: bool = True,
        act_layer: ActLayer = nn.ReLU,
        act_kwargs: dict[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: Callable[[], nn.Module] | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            _num_groups(num_channels, num_groups, group_size),
            num_channels,
            eps=eps,
            affine=affine,
            device=device,
            dtype=dtype,
        )
        _init_drop_act(self, drop_layer, act_layer, act_kwargs, inplace, apply_act)

    def forward(self, x: Tensor) -> Tensor:
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return self.act(self.drop(x))


class GroupNorm1Act(nn.GroupNorm):
    """timm.layers.norm_act.GroupNorm1Act (timm aa4b5850): GroupNormAct with a single group."""

    __module__ = _MODULE

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        apply_act: bool = True,
        act_layer: ActLayer = nn.ReLU,
        act_kwargs: dict[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: Callable[[], nn.Module] | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(1, num_channels, eps=eps, affine=affine, device=device, dtype=dtype)
        _init_drop_act(self, drop_layer, act_layer, act_kwargs, inplace, apply_act)

    def forward(self, x: Tensor) -> Tensor:
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return self.act(self.drop(x))


class LayerNormAct(nn.LayerNorm):
    """timm.layers.norm_act.LayerNormAct (timm aa4b5850): ``act(drop(LayerNorm(x)))`` over the last
    dimension(s), an nn.LayerNorm subclass; first argument ``normalization_shape`` (timm's
    spelling), eps 1e-5, ``affine`` for ``elementwise_affine``."""

    __module__ = _MODULE

    def __init__(
        self,
        normalization_shape: int | list[int] | torch.Size,
        eps: float = 1e-5,
        affine: bool = True,
        apply_act: bool = True,
        act_layer: ActLayer = nn.ReLU,
        act_kwargs: dict[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: Callable[[], nn.Module] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(normalization_shape, eps=eps, elementwise_affine=affine, **kwargs)
        _init_drop_act(self, drop_layer, act_layer, act_kwargs, inplace, apply_act)

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return self.act(self.drop(x))


class LayerNormAct2d(nn.LayerNorm):
    """timm.layers.norm_act.LayerNormAct2d (timm aa4b5850): LayerNorm over the channels of (N, C,
    H, W) (permute to NHWC, layer_norm, permute back), then ``drop`` and ``act``; eps 1e-5."""

    __module__ = _MODULE

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        apply_act: bool = True,
        act_layer: ActLayer = nn.ReLU,
        act_kwargs: dict[str, Any] | None = None,
        inplace: bool = True,
        drop_layer: Callable[[], nn.Module] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine, **kwargs)
        _init_drop_act(self, drop_layer, act_layer, act_kwargs, inplace, apply_act)

    def forward(self, x: Tensor) -> Tensor:
        x = layer_norm_channels_first(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return self.act(self.drop(x))


def freeze_batch_norm_2d(module: nn.Module) -> nn.Module:
    """timm.layers.norm_act.freeze_batch_norm_2d: BatchNormAct2d -> FrozenBatchNormAct2d and
    BatchNorm2d (or SyncBatchNorm) -> torchvision's FrozenBatchNorm2d, recursively; returns
    the replacement for ``module`` itself (children are replaced in place).

    As in timm, the frozen layer gets ``num_features`` and ``affine`` attributes, a clone of
    the affine parameters, the *same* running-statistics storage, ``eps``, and (for the
    Act variant) the original ``drop`` and ``act`` modules.
    """
    if isinstance(module, BatchNormAct2d):
        frozen: nn.Module = FrozenBatchNormAct2d(module.num_features)
    elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = FrozenBatchNorm2d(module.num_features)
    else:
        for name, child in module.named_children():
            new_child = freeze_batch_norm_2d(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module
    frozen.num_features = module.num_features
    frozen.affine = module.affine
    if module.affine:
        frozen.weight.data = module.weight.data.clone().detach()
        frozen.bias.data = module.bias.data.clone().detach()
    frozen.running_mean.data = module.running_mean.data
    frozen.running_var.data = module.running_var.data
    frozen.eps = module.eps
    if isinstance(frozen, FrozenBatchNormAct2d):
        frozen.drop = module.drop
        frozen.act = module.act
    return frozen


freeze_batch_norm_2d.__module__ = _MODULE
