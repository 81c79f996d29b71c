"""A training batch with one value per channel: the BatchNorm family's opt-in policies.

torch refuses it ("Expected more than 1 value per channel when training", pytorch#4534):
with ``n = N * prod(spatial) = 1`` value per channel the batch variance is 0 and the
unbiased estimate the running variance is updated with, ``var * n / (n - 1)``, is undefined.
It happens to a ``(1, C)`` input of a BatchNorm1d (a global pool, then a head) at the last,
smaller batch of an epoch, in a summary pass, or in eval mode when the layer keeps no
running statistics (``track_running_stats=False``, pytorch#156051). ``single_sample``
chooses what such a batch does; the condition is the input's shape alone, so the choice is
made at trace time under ``torch.compile``:

``"error"`` (default)
    torch's error, its message starting with the layer's name.
``"running_stats"``
    normalize the batch with the running statistics, exactly as in eval mode (output and
    gradients), and leave ``running_mean``, ``running_var`` and ``num_batches_tracked`` as
    they are. Needs running statistics: a layer without them refuses this policy.
``"skip_update"``
    normalize the batch with its own statistics, as training does, and skip the update of
    the running statistics (``num_batches_tracked`` included); warn once per layer
    (:class:`SingleSampleWarning`). With one value per channel the mean is that value and
    the variance 0, so BatchNorm's output is ``act(beta)`` (``act(0)`` without affine)
    whatever the input, the input gets a zero gradient and ``beta`` its usual one;
    BatchRenorm's output keeps its stop-gradient correction ``gamma * d + beta``. In eval
    mode without running statistics this is the only policy that computes anything.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor

from normkit._shared import constant_under_compile
from normkit.backends import select
from normkit.functional import _validate as v

POLICIES = ("error", "running_stats", "skip_update")
DEFAULT = "error"


class SingleSampleWarning(UserWarning):
    """A layer with ``single_sample="skip_update"`` met a batch of one value per channel."""


def check_policy(policy: object, name: str) -> None:
    """``policy`` is one of :data:`POLICIES`."""
    if not isinstance(policy, str) or policy not in POLICIES:
        raise v.NormInputError(
            f"{name}: single_sample must be one of {', '.join(repr(p) for p in POLICIES)} "
            f"(what a training batch with one value per channel does), got {policy!r}"
        )


def check_policy_applies(policy: str, track_running_stats: bool, name: str) -> None:
    """``"running_stats"`` needs running statistics to normalize with."""
    if policy == "running_stats" and not track_running_stats:
        raise v.NormInputError(
            f"{name}: single_sample='running_stats' needs running statistics, and this layer "
            "keeps none (track_running_stats=False); use single_sample='skip_update' (batch "
            "statistics, output beta) or 'error'"
        )


def one_value_per_channel(input: Tensor) -> bool:
    """torch's condition, from the shape alone: ``N * prod(spatial) == 1``."""
    return input.dim() >= 2 and input.shape[0] * math.prod(input.shape[2:]) == 1


def skip_update_message(name: str, input: Tensor, once: bool) -> str:
    return (
        f"{name}: a batch with one value per channel (input size {v.shape_str(input.shape)}) "
        "was normalized with its own statistics (each value is its channel's mean, so the "
        "normalized value is 0 whatever the input) and did not update the running statistics "
        f"(single_sample='skip_update'{'; warned once per layer' if once else ''})"
    )


# Frames a warning skips to point at the user's line: normkit's and torch's (Module.__call__,
# containers, Dynamo while it traces).
_LIBRARY_DIRS = tuple(
    str(path) + os.sep for path in (Path(__file__).parents[1], Path(torch.__file__).parent)
)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes ``warnings.warn``, called in the caller of this
    function, point at the first frame outside normkit and torch: the user's line."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


@constant_under_compile
def _warn_while_tracing(message: str) -> bool:
    # Under torch.compile the branch is chosen while Dynamo traces, which cannot trace
    # warnings.warn; this runs then, once per compiled graph, outside the graph.
    warnings.warn(message, SingleSampleWarning, stacklevel=_user_stacklevel())
    return True


def warn(message: str) -> None:
    """:class:`SingleSampleWarning`, eagerly or while ``torch.compile`` traces, attributed
    to the user's line."""
    if torch.compiler.is_compiling():
        _warn_while_tracing(message)
    else:
        warnings.warn(message, SingleSampleWarning, stacklevel=_user_stacklevel())


def single_sample_batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    policy: str,
    eps: float,
    backend: str | None,
    name: str,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """BatchNorm (+ ``act``) of a batch with one value per channel under ``policy``
    (``"running_stats"`` or ``"skip_update"``); never updates a running statistic and never
    warns (the callers do, once per layer or per call).

    ``running_stats``: ``act(gamma * (x - running_mean) / sqrt(running_var + eps) + beta)``.
    ``skip_update``: ``act(gamma * (x - x) / sqrt(0 + eps) + beta)``, the batch-statistics
    formula (torch's own kernel computes it without complaint; only its running update
    would divide by ``n - 1 = 0``).
    """
    if policy == "running_stats":
        if running_mean is None or running_var is None:
            raise v.NormInputError(
                f"{name}: single_sample='running_stats' cannot normalize this batch of one "
                f"value per channel (input size {v.shape_str(input.shape)}): there are no "
                "running statistics (track_running_stats=False, or running_mean/running_var "
                "None); use single_sample='skip_update' or 'error'"
            )
        impl = select("batch_norm_eval", input, backend, act)
        return impl(input, weight, bias, running_mean, running_var, eps, act, negative_slope)
    impl = select("batch_norm_train", input, backend, act)
    return impl(input, weight, bias, None, None, None, None, eps, act, negative_slope, name)


def applies(policy: str, training: bool, mask: Tensor | None, input: Tensor, name: str) -> bool:
    """For the functional forms: check ``policy``; True when it decides this call (a training
    call, without a mask, on a batch of one value per channel)."""
    check_policy(policy, name)
    return policy != DEFAULT and training and mask is None and one_value_per_channel(input)


def single_sample_call(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    policy: str,
    eps: float,
    backend: str | None,
    name: str,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Tensor:
    """:func:`single_sample_batch_norm` for a functional call: stateless, so
    ``"skip_update"`` warns at every call (Python's default filter shows each distinct
    message once per call site)."""
    if policy == "skip_update":
        warn(skip_update_message(name, input, once=False))
    return single_sample_batch_norm(
        input, running_mean, running_var, weight, bias, policy, eps, backend, name, act,
        negative_slope,
    )  # fmt: skip
