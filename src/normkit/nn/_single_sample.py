"""``single_sample``: the BatchNorm-family layers' policy for a training batch with one value
per channel (``"error"``, ``"running_stats"``, ``"skip_update"``; the rules are in
:mod:`normkit.functional.single_sample`).

It is constructor configuration, like ``momentum``: a plain attribute, not in the state dict
(torch's checkpoints load strictly both ways), shown in ``repr`` only when it is not the
default, kept by deepcopy, pickle and ``nk.tools.convert``. The layers' forward functions
test ``layer._single_sample != "error"`` and the input's shape, both constants under
``torch.compile``; only then does :func:`single_sample_forward` take over.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.functional import single_sample as one

_WARNED = "_single_sample_warned"


class SingleSamplePolicy:
    """Mixed into the BatchNorm-family layers: the validated ``single_sample`` attribute."""

    # The class default serves layers built without this __init__ argument (e.g. unpickled
    # from an older normkit): they keep torch's error.
    _single_sample: str = one.DEFAULT
    num_features: int
    track_running_stats: bool

    def _single_sample_owner(self) -> str:
        features = getattr(self, "num_features", 0)
        return f"{type(self).__name__}({features})" if features else type(self).__name__

    @property
    def single_sample(self) -> str:
        """What a training batch with one value per channel does: ``"error"`` (torch's),
        ``"running_stats"`` or ``"skip_update"``; see :mod:`normkit.functional.single_sample`."""
        return self._single_sample

    @single_sample.setter
    def single_sample(self, policy: str) -> None:
        name = self._single_sample_owner()
        one.check_policy(policy, name)
        one.check_policy_applies(policy, self.track_running_stats, name)
        self._single_sample = policy

    def _single_sample_repr(self) -> str:
        """``", single_sample='running_stats'"`` for ``extra_repr``; empty for the default."""
        policy = self._single_sample
        return "" if policy == one.DEFAULT else f", single_sample={policy!r}"


def single_sample_forward(
    layer: SingleSamplePolicy,
    input: Tensor,
    name: str,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """A BatchNorm layer's output for a batch with one value per channel, under the layer's
    policy (not ``"error"``); updates nothing; ``"skip_update"`` warns once per layer."""
    policy = layer._single_sample
    if policy == "skip_update":
        warn_once(layer, input, name)
    return one.single_sample_batch_norm(
        input, layer.running_mean, layer.running_var, layer.weight, layer.bias, policy,
        layer.eps, None, name, act, negative_slope,
    )  # fmt: skip


def warn_once(layer: SingleSamplePolicy, input: Tensor, name: str) -> None:
    """The ``"skip_update"`` warning, the first time ``layer`` meets such a batch (under
    ``torch.compile``: when the graph is traced, once per compiled graph)."""
    message = one.skip_update_message(name, input, once=True)
    if torch.compiler.is_compiling():
        one.warn(message)
    elif not layer.__dict__.get(_WARNED, False):
        object.__setattr__(layer, _WARNED, True)
        one.warn(message)
