"""Batch renormalization (Ioffe 2017), stateless."""

from __future__ import annotations

import torch
from torch import Tensor

from normkit.autograd.batch_norm_variants import batch_stats, bn_apply
from normkit.autograd.masked_variants import masked_batch_stats, masked_bn_apply
from normkit.backends.torch_masked import masked_running_stats_update
from normkit.functional import _validate as v
from normkit.functional import single_sample as one
from normkit.functional._running import update_running_stats
from normkit.functional.batch_norm import batch_norm
from normkit.functional.masked import valid_count

Limit = float | Tensor


def renorm_limits(step: int | Tensor, rmax: float, dmax: float, warmup_steps: int):
    """The ``(rmax, dmax)`` in force at training step ``step`` (0-based).

    ``warmup_steps = 0``: the fixed ``(rmax, dmax)``. Otherwise both ramp linearly from the
    plain-BatchNorm values ``(1, 0)`` at step 0 to ``(rmax, dmax)`` at ``warmup_steps``::

        t = min(step / warmup_steps, 1);  rmax_t = 1 + (rmax - 1) * t;  dmax_t = dmax * t

    ``step`` may be a 0-d tensor (then the limits are 0-d float64 tensors, which keeps
    ``torch.compile`` graphs free of data-dependent Python values).
    """
    if warmup_steps <= 0:
        return rmax, dmax
    if isinstance(step, Tensor):
        t = (step.to(torch.float64) / warmup_steps).clamp(max=1.0)
    else:
        t = min(step / warmup_steps, 1.0)
    return 1.0 + (rmax - 1.0) * t, dmax * t


@torch.no_grad()
def renorm_correction(
    mean: Tensor,
    var: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    rmax: Limit,
    dmax: Limit,
) -> tuple[Tensor, Tensor]:
    r"""Batch renorm's stop-gradient correction ``(r, d)``, per channel.

    .. math::
        \sigma_B = \sqrt{\mathrm{var}_B + \epsilon},\quad
        \sigma = \sqrt{\mathrm{running\_var} + \epsilon},\quad
        r = \mathrm{clip}(\sigma_B / \sigma, 1/r_{max}, r_{max}),\quad
        d = \mathrm{clip}((\mu_B - \mathrm{running\_mean}) / \sigma, -d_{max}, d_{max})

    Shapes: all ``(C,)``; computed in ``mean``'s dtype. Under ``torch.compile`` this runs
    as the opaque custom op ``normkit::renorm_correction``, so that the compiled backward
    keeps ``r, d`` rather than recomputing them from the running buffers, which the same
    forward updates in place.
    """
    if torch.compiler.is_compiling():
        acc, device = mean.dtype, mean.device
        return _correction_op(
            mean, var, running_mean, running_var, eps,
            torch.as_tensor(rmax, dtype=acc, device=device),
            torch.as_tensor(dmax, dtype=acc, device=device),
        )  # fmt: skip
    return _correction(mean, var, running_mean, running_var, eps, rmax, dmax)


def _correction(mean, var, running_mean, running_var, eps, rmax, dmax):
    acc = mean.dtype
    sigma = torch.sqrt(running_var.to(acc) + eps)
    ratio = torch.sqrt(var + eps) / sigma
    shift = (mean - running_mean.to(acc)) / sigma
    if isinstance(rmax, Tensor) or isinstance(dmax, Tensor):
        rmax_t = torch.as_tensor(rmax, dtype=acc, device=mean.device)
        dmax_t = torch.as_tensor(dmax, dtype=acc, device=mean.device)
        return (
            torch.minimum(torch.maximum(ratio, 1.0 / rmax_t), rmax_t),
            torch.minimum(torch.maximum(shift, -dmax_t), dmax_t),
        )
    return ratio.clamp(1.0 / rmax, rmax), shift.clamp(-dmax, dmax)


@torch.library.custom_op("normkit::renorm_correction", mutates_args=())
def _correction_op(
    mean: Tensor,
    var: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    rmax: Tensor,
    dmax: Tensor,
) -> tuple[Tensor, Tensor]:
    return _correction(mean, var, running_mean, running_var, eps, rmax, dmax)


@_correction_op.register_fake
def _(mean, var, running_mean, running_var, eps, rmax, dmax):
    return torch.empty_like(mean), torch.empty_like(mean)


def fold_correction(
    weight: Tensor | None, bias: Tensor | None, r: Tensor, d: Tensor
) -> tuple[Tensor, Tensor]:
    """``gamma * (x_hat * r + d) + beta == x_hat * (gamma * r) + (beta + gamma * d)``: the
    effective affine parameters, differentiable in ``weight``/``bias`` with ``r, d`` constant."""
    if weight is None:
        return r, d if bias is None else bias + d
    w = weight * r
    b = weight * d if bias is None else bias + weight * d
    return w, b


def batch_renorm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    rmax: Limit = 3.0,
    dmax: Limit = 5.0,
    *,
    mask: Tensor | None = None,
    num_batches_tracked: Tensor | None = None,
    single_sample: str = "error",
    backend: str | None = None,
    name: str = "batch_renorm",
) -> Tensor:
    r"""Batch renormalization over ``input (N, C, *)`` (`Ioffe 2017
    <https://arxiv.org/abs/1702.03275>`__).

    Training, per channel, with the batch mean :math:`\mu_B` and
    :math:`\sigma_B = \sqrt{\mathrm{Var}_B[x] + \epsilon}` (biased variance):

    .. math::
        y = \gamma \left(\frac{x - \mu_B}{\sigma_B}\, r + d\right) + \beta

    where ``r, d`` (:func:`renorm_correction`) compare the batch statistics with the running
    ones and are constants for the backward (stop-gradient). With ``rmax=1, dmax=0`` this is
    exactly :func:`~normkit.functional.batch_norm`. The running statistics are then updated
    with BatchNorm's rule (unbiased variance; see :mod:`normkit.functional._running`).
    Inference (``training=False``) is BatchNorm's inference.

    Args:
        input: ``(N, C)`` or ``(N, C, *)``.
        running_mean, running_var: ``(C,)`` buffers; required in training.
        weight, bias: ``(C,)`` or None.
        training: batch statistics with correction (and running update) or inference.
        momentum: running-statistics factor, ``None`` for the cumulative average.
        eps: added to the variances.
        rmax, dmax: clipping limits (floats, or 0-d tensors from a schedule).
        num_batches_tracked: 0-d long buffer counting updates.
        mask: bool ``(N, *)``, True at valid positions of a padded batch (keyword): batch
            statistics, ``r``/``d`` and the running update from the valid positions only
            (count ``n`` valid values), padded positions output 0.
        single_sample: a training batch with one value per channel (keyword):
            ``"error"`` (BatchNorm's error), ``"running_stats"`` (the inference output,
            nothing updated) or ``"skip_update"`` (the training output above, with its
            ``r, d``, nothing updated; a warning at each call). Default: "error"

    Departure from the paper: the paper keeps a moving average of :math:`\sigma`; here the
    running variance follows BatchNorm's rule and :math:`\sigma = \sqrt{\mathrm{running\_var}
    + \epsilon}`, so inference and the state dict are exactly BatchNorm's.
    """
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, training, name
    )
    if not isinstance(rmax, Tensor) and not isinstance(dmax, Tensor):
        v.check_renorm_limits(rmax, dmax, name)
    if not training:
        return batch_norm(
            input, running_mean, running_var, weight, bias, False, momentum, eps, mask=mask,
            backend=backend, name=name,
        )  # fmt: skip
    v.check_running_stats_for_renorm(running_mean, running_var, name)
    if single_sample != "error" and one.applies(single_sample, training, mask, input, name):
        if single_sample == "skip_update":
            one.warn(one.skip_update_message(name, input, once=False))
        return renorm_single_sample(
            input, running_mean, running_var, weight, bias, eps, rmax, dmax, single_sample,
            backend, name,
        )  # fmt: skip
    if not isinstance(rmax, Tensor) and not isinstance(dmax, Tensor) and rmax == 1 and dmax == 0:
        # r = 1 and d = 0 whatever the batch: the layer is BatchNorm, bit for bit, on every
        # backend (the backends' fused BatchNorm may round differently from stats + elemt).
        return batch_norm(
            input, running_mean, running_var, weight, bias, True, momentum, eps, mask=mask,
            num_batches_tracked=num_batches_tracked, backend=backend, name=name,
        )  # fmt: skip
    if mask is not None:
        return _masked_training(
            input, mask, running_mean, running_var, weight, bias, momentum, eps, rmax, dmax,
            num_batches_tracked, backend, name,
        )  # fmt: skip
    v.check_more_than_one_value_per_channel(input, name)
    y, mean, var = _renormalize(input, running_mean, running_var, weight, bias, eps, rmax, dmax,
                                backend)  # fmt: skip
    count = input.numel() // input.shape[1]
    update_running_stats(
        running_mean, running_var, mean, var, count, momentum, num_batches_tracked, name
    )
    return y


def _renormalize(
    input: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    rmax: Limit,
    dmax: Limit,
    backend: str | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The training output ``gamma * (x_hat * r + d) + beta`` and the batch ``(mean, var)``."""
    mean, var = batch_stats(input, backend)
    invstd = torch.rsqrt(var + eps)
    r, d = renorm_correction(mean, var, running_mean, running_var, eps, rmax, dmax)
    w, b = fold_correction(weight, bias, r, d)
    return bn_apply(input, mean, invstd, w, b, eps, backend=backend), mean, var


def renorm_single_sample(
    input: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    rmax: Limit,
    dmax: Limit,
    policy: str,
    backend: str | None,
    name: str,
) -> Tensor:
    """A training batch with one value per channel under ``policy``; updates nothing, warns
    not (:mod:`normkit.functional.single_sample`). ``"running_stats"``: the inference
    output (BatchNorm's). ``"skip_update"``: the training output; the batch variance is 0,
    so ``x_hat = 0`` and ``y = gamma * d + beta`` with ``d`` the clipped shift of the
    value from the running mean."""
    if policy == "running_stats":
        return one.single_sample_batch_norm(
            input, running_mean, running_var, weight, bias, policy, eps, backend, name
        )
    return _renormalize(input, running_mean, running_var, weight, bias, eps, rmax, dmax, backend)[0]


def _masked_training(
    input: Tensor,
    mask: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    momentum: float | None,
    eps: float,
    rmax: Limit,
    dmax: Limit,
    num_batches_tracked: Tensor | None,
    backend: str | None,
    name: str,
) -> Tensor:
    """Batch renorm's training step over the valid positions of a padded batch."""
    v.check_mask(input, mask, name)
    v.check_cumulative_average(momentum, running_mean, running_var, num_batches_tracked, name)
    count = valid_count(mask, name)
    mean, var = masked_batch_stats(input, mask, count, backend)
    invstd = torch.rsqrt(var + eps)
    r, d = renorm_correction(mean, var, running_mean, running_var, eps, rmax, dmax)
    w, b = fold_correction(weight, bias, r, d)
    y = masked_bn_apply(input, mask, count, mean, invstd, w, b, eps, backend=backend)
    masked_running_stats_update(
        running_mean, running_var, num_batches_tracked, mean, var, count, momentum, name
    )
    return y
