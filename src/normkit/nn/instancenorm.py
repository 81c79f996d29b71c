"""InstanceNorm1d/2d/3d: drop-in replacements for torch.nn's, computed by normkit."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from normkit.functional import _validate as v
from normkit.functional.batch_norm import instance_norm
from normkit.nn._base import _NormBase

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


class _InstanceNorm(_NormBase):
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
        super().__init__(
            num_features,
            eps,
            momentum,
            affine,
            track_running_stats,
            device=device,
            dtype=dtype,
            bias=bias,
        )

    def _check_input_dim(self, input: Tensor) -> None:
        ranks = (self._no_batch_dim, self._no_batch_dim + 1)
        v.check_rank(input, ranks, self._layer_name())

    def _load_from_state_dict(
        self,
        state_dict,
        prefix,
        local_metadata,
        strict,
        missing_keys,
        unexpected_keys,
        error_msgs,
    ) -> None:
        version = local_metadata.get("version", None)
        # Checkpoints from before torch 0.4 stored running stats that are no longer tracked.
        if version is None and not self.track_running_stats:
            stale = [
                prefix + k for k in ("running_mean", "running_var") if prefix + k in state_dict
            ]
            if stale:
                error_msgs.append(
                    f"Unexpected running stats buffer(s) {' and '.join(stale)} for "
                    f"{type(self).__name__} with track_running_stats=False: remove them from "
                    "the state_dict, or build the layer with track_running_stats=True to use them."
                )
                for key in stale:
                    state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        name = self._layer_name()
        feature_dim = input.dim() - self._no_batch_dim
        if input.shape[feature_dim] != self.num_features:
            if self.affine:
                v.check_channels(input, self.num_features, name, dim=feature_dim)
            warnings.warn(
                f"{name}: input's size at dim={feature_dim} ({input.shape[feature_dim]}) does "
                f"not match num_features ({self.num_features}); num_features is not used "
                "because affine=False",
                stacklevel=2,
            )
        unbatched = input.dim() == self._no_batch_dim
        x = input.unsqueeze(0) if unbatched else input
        y = instance_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
            name=name,
        )
        return y.squeeze(0) if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    __doc__ = _DOC_TEMPLATE.format(
        rank="2D or 3D", name="InstanceNorm1d", shapes="``(N, C, L)``", example="4, 3, 10"
    )
    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    __doc__ = _DOC_TEMPLATE.format(
        rank="3D or 4D", name="InstanceNorm2d", shapes="``(N, C, H, W)``", example="4, 3, 5, 5"
    )
    _no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    __doc__ = _DOC_TEMPLATE.format(
        rank="4D or 5D",
        name="InstanceNorm3d",
        shapes="``(N, C, D, H, W)``",
        example="2, 3, 2, 4, 4",
    )
    _no_batch_dim = 4
