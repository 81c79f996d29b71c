"""FrozenBatchNorm1d/2d/3d: BatchNorm with fixed statistics and affine, as buffers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normkit.functional import _validate as v
from normkit.functional.frozen_batch_norm import frozen_batch_norm

_DOC_TEMPLATE = r"""BatchNorm with frozen statistics and affine parameters over a {rank} input
    (torchvision's and detectron2's ``FrozenBatchNorm2d``): the standard layer for
    fine-tuning detectors with small per-device batches.

    .. math::
        y = x \cdot \mathrm{{scale}} + \mathrm{{shift}},\quad
        \mathrm{{scale}} = \frac{{\mathrm{{weight}}}}{{\sqrt{{\mathrm{{running\_var}} + \epsilon}}}},\quad
        \mathrm{{shift}} = \mathrm{{bias}} - \mathrm{{running\_mean}} \cdot \mathrm{{scale}}

    That is BatchNorm's inference, in both ``train()`` and ``eval()`` mode: nothing is
    learned or updated. ``weight``, ``bias``, ``running_mean`` and ``running_var`` are
    **buffers** (torchvision's state dict layout); loading a BatchNorm state dict works, its
    ``num_batches_tracked`` is ignored. The input gradient is ``grad * scale``.

    Args:
        num_features: number of channels ``C``.
        eps: added to the running variance. Default: 1e-5

    Shape:
        Input and output: {shapes}.

    Examples::

        >>> import torch, normkit as nk
        >>> bn = nk.nn.{bn}(3).eval()
        >>> frozen = nk.nn.{name}.from_batch_norm(bn)
        >>> x = torch.randn({example})
        >>> torch.allclose(frozen(x), bn(x), atol=1e-6)
        True
"""


def frozen_batch_norm_forward(layer: _FrozenBatchNorm, input: Tensor) -> Tensor:
    """The forward of the FrozenBatchNorm layers (one FX node)."""
    name = layer._layer_name()
    v.check_rank(input, layer._ranks, name)
    v.check_channels(input, layer.num_features, name)
    return frozen_batch_norm(
        input, layer.weight, layer.bias, layer.running_mean, layer.running_var, layer.eps,
        act=layer.act, negative_slope=layer.negative_slope, name=name,
    )  # fmt: skip


torch.fx.wrap("frozen_batch_norm_forward")


class _FrozenBatchNorm(nn.Module):
    _ranks: tuple[int, ...] = ()
    num_features: int
    eps: float
    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        v.check_num_features(num_features, name)
        v.check_eps(eps, False, name)
        self.num_features = num_features
        self.eps = eps
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("weight", torch.ones(num_features, **factory))
        self.register_buffer("bias", torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))

    @classmethod
    def from_batch_norm(cls, module: nn.Module) -> _FrozenBatchNorm:
        """A frozen copy of a BatchNorm-like ``module`` (torch's or normkit's): its running
        statistics, ``eps`` and affine parameters (``1``/``0`` when ``affine=False``)."""
        name = cls.__name__
        mean = getattr(module, "running_mean", None)
        var = getattr(module, "running_var", None)
        if mean is None or var is None:
            raise v.NormInputError(
                f"{name}.from_batch_norm: expected a module with running_mean and "
                f"running_var (track_running_stats=True), got {module!r}"
            )
        frozen = cls(mean.shape[0], eps=module.eps, device=mean.device, dtype=mean.dtype)
        with torch.no_grad():
            frozen.running_mean.copy_(mean)
            frozen.running_var.copy_(var)
            if getattr(module, "weight", None) is not None:
                frozen.weight.copy_(module.weight)
            if getattr(module, "bias", None) is not None:
                frozen.bias.copy_(module.bias)
        return frozen

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
        error_msgs,
    ) -> None:  # fmt: skip
        state_dict.pop(prefix + "num_batches_tracked", None)  # BatchNorm checkpoints
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _layer_name(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    def forward(self, input: Tensor) -> Tensor:
        return frozen_batch_norm_forward(self, input)

    act = "identity"
    negative_slope = 0.01

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class FrozenBatchNorm1d(_FrozenBatchNorm):
    __doc__ = _DOC_TEMPLATE.format(
        rank="2D or 3D", name="FrozenBatchNorm1d", bn="BatchNorm1d",
        shapes="``(N, C)`` or ``(N, C, L)``", example="4, 3",
    )  # fmt: skip
    _ranks = (2, 3)


class FrozenBatchNorm2d(_FrozenBatchNorm):
    __doc__ = _DOC_TEMPLATE.format(
        rank="4D", name="FrozenBatchNorm2d", bn="BatchNorm2d", shapes="``(N, C, H, W)``",
        example="2, 3, 4, 4",
    )  # fmt: skip
    _ranks = (4,)


class FrozenBatchNorm3d(_FrozenBatchNorm):
    __doc__ = _DOC_TEMPLATE.format(
        rank="5D", name="FrozenBatchNorm3d", bn="BatchNorm3d", shapes="``(N, C, D, H, W)``",
        example="2, 3, 2, 4, 4",
    )  # fmt: skip
    _ranks = (5,)


class FrozenBatchNormAct2d(FrozenBatchNorm2d):
    r"""``act(FrozenBatchNorm2d(x))``, fused: timm's ``FrozenBatchNormAct2d`` (same buffers:
    ``weight``, ``bias``, ``running_mean``, ``running_var``), the activation given by name as
    in :class:`normkit.nn.BatchNormAct2d`.

    Args:
        num_features: number of channels ``C``.
        eps: added to the running variance. Default: 1e-5
        act: ``"identity"``, ``"relu"``, ``"leaky_relu"``, ``"silu"``, ``"gelu"``,
            ``"relu6"`` or ``"hardswish"``. Default: ``"relu"``
        negative_slope: leaky_relu's slope. Default: 0.01

    Shape:
        Input and output: ``(N, C, H, W)``.

    Examples::

        >>> import torch, normkit as nk
        >>> bool((nk.nn.FrozenBatchNormAct2d(3)(torch.randn(2, 3, 4, 4)) >= 0).all())
        True
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        act: str = "relu",
        negative_slope: float = 0.01,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        v.check_activation(act, negative_slope, type(self).__name__)
        super().__init__(num_features, eps, device, dtype)
        self.act = act
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f"{super().extra_repr()}, act={self.act!r}{slope}"
