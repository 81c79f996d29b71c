"""Shared state handling of the normalization layers (parameters, buffers, reset, repr,
state-dict versioning), mirroring torch.nn's ``_NormBase`` so state dicts are interchangeable."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import init

from normkit.functional import _validate as v


def make_affine(
    module: nn.Module,
    shape: tuple[int, ...],
    weight: bool,
    bias: bool,
    factory_kwargs: dict[str, Any],
) -> None:
    """Register ``weight``/``bias`` parameters of ``shape`` (or ``None`` when disabled)."""
    if weight:
        module.weight = nn.Parameter(torch.empty(shape, **factory_kwargs))
    else:
        module.register_parameter("weight", None)
    if weight and bias:
        module.bias = nn.Parameter(torch.empty(shape, **factory_kwargs))
    else:
        module.register_parameter("bias", None)


def reset_affine(module: nn.Module) -> None:
    """gamma = 1, beta = 0."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class _NormBase(nn.Module):
    """Parameters and running-statistics buffers of BatchNorm and InstanceNorm.

    Buffers (when ``track_running_stats``): ``running_mean`` (zeros), ``running_var``
    (ones), ``num_batches_tracked`` (0-d long). Parameters (when ``affine``): ``weight``
    (ones) and ``bias`` (zeros, unless ``bias=False``). Names, shapes, dtypes and the
    state-dict ``_version`` (2) are torch's, so checkpoints load both ways.
    """

    _version = 2
    __constants__ = ["track_running_stats", "momentum", "eps", "num_features", "affine"]
    num_features: int
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        v.check_num_features(num_features, name)
        v.check_momentum(momentum, name)
        v.check_eps(eps, False, name)
        factory_kwargs = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        make_affine(self, (num_features,), affine, bias, factory_kwargs)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("running_var", torch.ones(num_features, **factory_kwargs))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    running_mean: Tensor | None
    running_var: Tensor | None
    num_batches_tracked: Tensor | None

    def reset_running_stats(self) -> None:
        """running_mean = 0, running_var = 1, num_batches_tracked = 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics and set gamma = 1, beta = 0."""
        self.reset_running_stats()
        reset_affine(self)

    def _layer_name(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    # Accepted input ranks, set by each concrete class (BatchNorm2d: (4,)).
    _ranks: tuple[int, ...] = ()

    def _check_input_dim(self, input: Tensor) -> None:
        v.check_rank(input, self._ranks, self._layer_name())

    def _check_input(self, input: Tensor) -> str:
        """Rank and channel count of ``input``; returns the layer name for messages."""
        self._check_input_dim(input)
        name = self._layer_name()
        v.check_channels(input, self.num_features, name)
        return name

    def _batch_norm_state(self) -> dict[str, Any]:
        """torch's BatchNorm statistics policy, as keyword arguments for the functionals.

        Batch statistics in training, and in evaluation when there are no running buffers;
        the buffers are passed only when they are to be read (evaluation) or updated
        (training with ``track_running_stats``), and only then is the batch counted.
        """
        training = self.training
        pass_buffers = not training or self.track_running_stats
        return {
            "running_mean": self.running_mean if pass_buffers else None,
            "running_var": self.running_var if pass_buffers else None,
            "training": training or (self.running_mean is None and self.running_var is None),
            "num_batches_tracked": self.num_batches_tracked if training and pass_buffers else None,
        }

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

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
        # Version 2 added num_batches_tracked: old checkpoints without it load with 0.
        if (version is None or version < 2) and self.track_running_stats:
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                current = self.num_batches_tracked
                state_dict[key] = (
                    current
                    if current is not None and current.device.type != "meta"
                    else torch.tensor(0, dtype=torch.long)
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
