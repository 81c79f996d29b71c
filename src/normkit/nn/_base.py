"""What the per-channel layers (BatchNorm and InstanceNorm families) add to the torch classes
they subclass: argument checks with normkit's messages, the input check, and torch's
statistics policy as arguments for the functional core.

Parameters, buffers, ``reset_parameters``, ``extra_repr``, ``_version`` and the state-dict
migrations are torch's own (inherited), so a normkit layer *is* the torch layer it replaces
for ``isinstance``, checkpoints and every utility that looks for torch's classes; only
``forward`` (normkit's computation) differs.

Each layer's ``forward`` is one call to a module-level function registered with
``torch.fx.wrap``: FX-based tools (``symbolic_trace``, torchvision's feature extractor)
record one node per layer, with the layer itself as an argument, so a traced model follows
``train()``/``eval()`` exactly as the original does.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from normkit.functional import _validate as v


def check_per_channel_args(
    name: str, num_features: int, eps: float, momentum: float | None
) -> None:
    """Constructor arguments every BatchNorm/InstanceNorm layer validates."""
    v.check_num_features(num_features, name)
    v.check_momentum(momentum, name)
    v.check_eps(eps, False, name)


class PerChannelLayer:
    """Mixin placed before a torch ``_NormBase`` subclass (``BatchNorm2d(PerChannelLayer,
    torch.nn.BatchNorm2d)``)."""

    # Accepted input ranks, set by each concrete class (BatchNorm2d: (4,)).
    _ranks: tuple[int, ...] = ()
    num_features: int

    def _layer_name(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    def _check_input_dim(self, input: Tensor) -> None:
        v.check_rank(input, self._ranks, self._layer_name())

    def _check_input(self, input: Tensor) -> str:
        """Dtype, rank and channel count of ``input``; returns the layer name."""
        name = self._layer_name()
        v.check_layer_input(input, self._ranks, self.num_features, name)
        return name

    def _batch_norm_state(self) -> tuple[Any, Any, bool, Any]:
        """torch's BatchNorm statistics policy: ``(running_mean, running_var, training,
        num_batches_tracked)`` for the functional core.

        Batch statistics in training, and in evaluation when there are no running buffers;
        the buffers are passed only when they are to be read (evaluation) or updated
        (training with ``track_running_stats``), and only then is the batch counted.
        """
        # The buffer dict directly (attribute lookup through Module.__getattr__ costs more
        # than torch's kernel on a small input); a buffer that is not in it (parametrized,
        # deleted) is looked up as an attribute, as torch's forward does.
        buffers = self._buffers
        try:
            running_mean, running_var = buffers["running_mean"], buffers["running_var"]
            num_batches_tracked = buffers["num_batches_tracked"]
        except KeyError:
            running_mean, running_var = self.running_mean, self.running_var
            num_batches_tracked = self.num_batches_tracked
        if self.training:
            if self.track_running_stats:
                return running_mean, running_var, True, num_batches_tracked
            return None, None, True, None
        return running_mean, running_var, running_mean is None and running_var is None, None

    def _affine(self) -> tuple[Any, Any]:
        """``(weight, bias)``, from the parameter dict like the buffers above."""
        parameters = self._parameters
        try:
            return parameters["weight"], parameters["bias"]
        except KeyError:
            return self.weight, self.bias
