"""InstanceNorm1d/2d/3d: drop-in replacements for torch.nn's, computed by normkit."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from normkit.functional import _validate as v
from normkit.functional.batch_norm import normalize_instances
from normkit.nn._base import PerChannelLayer, check_per_channel_args

_DOC_TEMPLATE = r"""Instance normalization over a {rank} input (`Ulyanov et al. 2016
    <https://arxiv.org/abs/1607.08022>`__), a drop-in for :class:`torch.nn.{name}`.

    .. math::
        y_{{nc}} = \frac{{x_{{nc}} - \mathrm{{E}}[x_{{nc}}]}}{{\sqrt{{\mathrm{{Var}}[x_{{nc}}] + \epsilon}}}}
                 \cdot \gamma_c + \beta_c

    Each sample's each channel is normalized over its own spatial positions (biased
    variance), in training and, unless ``track_running_stats=True``, in evaluation too.
    With ``track_running_stats=True`` training moves the running estimates towards the
    batch average of the per-instance mean and unbiased variance (factor ``momentum``;
    ``momentum=None`` leaves them unchanged, as in torch) and evaluation uses them.
    Defaults differ from BatchNorm, as in torch: ``affine=False``,
    ``track_running_stats=False``. Equivalent to ``GroupNorm(C, C)`` (with affine).

    Padded batches: ``layer(x, mask=m)``, ``m`` bool ``(N, *spatial)`` (True = valid
    position): each sample's channel over its own valid positions (a sample with valid
    positions needs more than one); padded positions output exactly 0 and get 0 gradient.

    Args:
        num_features: number of channels ``C``.
        eps: added to the variance. Default: 1e-5
        momentum: running-statistics update factor. Default: 0.1
        affine: learnable per-channel ``weight`` and ``bias``. Default: False
        track_running_stats: keep running estimates for evaluation. Default: False

    Shape:
        Input and output: {shapes} (the unbatched form without ``N`` is accepted too).

    Examples::

        >>> import torch, normkit as nk
        >>> y = nk.nn.{name}(3)(torch.randn({example}))
        >>> y.shape
        torch.Size([{example}])
"""


def instance_norm_forward(
    layer: _InstanceNorm, input: Tensor, mask: Tensor | None = None
) -> Tensor:
    """The forward of the InstanceNorm layers (one FX node; see :mod:`normkit.nn._base`);
    ``mask``: a padded batch's valid positions."""
    name = layer._layer_name()
    v.check_floating(input, name)
    layer._check_input_dim(input)
    feature_dim = input.dim() - layer._no_batch_dim
    if input.shape[feature_dim] != layer.num_features:
        if layer.affine:
            v.check_channels(input, layer.num_features, name, dim=feature_dim)
        warnings.warn(
            f"{name}: input's size at dim={feature_dim} ({input.shape[feature_dim]}) does "
            f"not match num_features ({layer.num_features}); num_features is not used "
            "because affine=False",
            stacklevel=3,
        )
    unbatched = input.dim() == layer._no_batch_dim
    x = input.unsqueeze(0) if unbatched else input
    if unbatched and isinstance(mask, Tensor) and mask.dim() == input.dim() - 1:
        mask = mask.unsqueeze(0)
    y = normalize_instances(
        x,
        layer.running_mean,
        layer.running_var,
        layer.weight,
        layer.bias,
        layer.training or not layer.track_running_stats,
        layer.momentum if layer.momentum is not None else 0.0,
        layer.eps,
        None,
        name,
        mask,
    )
    return y.squeeze(0) if unbatched else y


torch.fx.wrap("instance_norm_forward")


class _InstanceNorm(PerChannelLayer):
    """Constructor (torch's InstanceNorm defaults) and forward, mixed into torch's classes."""

    _no_batch_dim: int = 0

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        check_per_channel_args(type(self).__name__, num_features, eps, momentum)
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )

    def _check_input_dim(self, input: Tensor) -> None:
        ranks = (self._no_batch_dim, self._no_batch_dim + 1)
        v.check_rank(input, ranks, self._layer_name())

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        return instance_norm_forward(self, input, mask)


class InstanceNorm1d(_InstanceNorm, nn.InstanceNorm1d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="2D or 3D", name="InstanceNorm1d", shapes="``(N, C, L)``", example="4, 3, 10"
    )
    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm, nn.InstanceNorm2d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="3D or 4D", name="InstanceNorm2d", shapes="``(N, C, H, W)``", example="4, 3, 5, 5"
    )
    _no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm, nn.InstanceNorm3d):
    __doc__ = _DOC_TEMPLATE.format(
        rank="4D or 5D",
        name="InstanceNorm3d",
        shapes="``(N, C, D, H, W)``",
        example="2, 3, 2, 4, 4",
    )
    _no_batch_dim = 4
