"""Batch normalization and instance normalization, stateless (torch.nn.functional's API)."""

from __future__ import annotations

from torch import Tensor

from normkit.backends import select
from normkit.functional import _validate as v
from normkit.functional import single_sample as one
from normkit.functional.masked import normalize_instances_masked, normalize_per_channel_masked


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    *,
    mask: Tensor | None = None,
    num_batches_tracked: Tensor | None = None,
    single_sample: str = "error",
    backend: str | None = None,
    name: str = "batch_norm",
) -> Tensor:
    r"""Batch normalization over ``input (N, C, *)``, per channel (`Ioffe & Szegedy 2015
    <https://arxiv.org/abs/1502.03167>`__).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    In training the statistics are the batch's, over ``(N, *)``, with the **biased**
    variance; ``running_mean``/``running_var`` (if given) are updated in place with
    ``running = (1 - momentum) * running + momentum * batch`` where the batch variance is
    the **unbiased** one. Not training, the running statistics are used instead.

    Args:
        input: ``(N, C)`` or ``(N, C, *)`` floating tensor (any memory layout).
        running_mean, running_var: ``(C,)`` buffers or None.
        weight, bias: ``(C,)`` affine parameters :math:`\gamma, \beta` or None.
        training: use batch statistics (and update the running ones). Default: False
        momentum: update factor. ``None`` gives the cumulative average and needs
            ``num_batches_tracked``. Default: 0.1
        eps: added to the variance. Default: 1e-5
        mask: bool ``(N, *)`` tensor, True at valid positions of a padded batch (normkit
            extension): statistics from the valid positions only, counted with the number
            of valid values ``n`` in the running update; padded positions output 0 and get
            0 gradient. The result equals BatchNorm over the valid frames gathered into one
            ``(n, C)`` batch. Default: None (every position is valid)
        num_batches_tracked: 0-d long buffer counting updates (normkit extension).
        single_sample: a training batch with one value per channel (``N * prod(spatial)
            == 1``, without ``mask``): ``"error"`` (torch's), ``"running_stats"`` (the
            ``training=False`` output, nothing updated) or ``"skip_update"`` (batch
            statistics, nothing updated, a :class:`~normkit.functional.SingleSampleWarning`
            at each call; see :mod:`normkit.functional.single_sample`). Default: "error"
        backend: force a backend (``"torch"``, ``"numba"``); default automatic.
        name: layer name used in error messages and warnings.

    Returns a new tensor of ``input``'s shape (channels_last stays channels_last).

    Same signature and semantics as :func:`torch.nn.functional.batch_norm`, except that a
    batch with non-finite statistics does not update the running statistics (see
    :mod:`normkit.functional._running`).
    """
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, training, name
    )
    if single_sample != "error" and one.applies(single_sample, training, mask, input, name):
        return one.single_sample_call(
            input, running_mean, running_var, weight, bias, single_sample, eps, backend, name
        )
    return normalize_per_channel(
        input, running_mean, running_var, weight, bias, training, momentum, eps,
        num_batches_tracked, backend, name, mask=mask,
    )  # fmt: skip


def normalize_per_channel(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float | None,
    eps: float,
    num_batches_tracked: Tensor | None,
    backend: str | None,
    name: str,
    act: str = "identity",
    negative_slope: float = 0.01,
    mask: Tensor | None = None,
) -> Tensor:
    """BatchNorm (optionally followed by ``act``) on arguments whose shapes are validated:
    the checks that depend on the mode, then straight to the backend. Layers call this.
    With ``mask``, the masked core (:mod:`normkit.functional.masked`)."""
    if mask is not None:
        return normalize_per_channel_masked(
            input, mask, running_mean, running_var, weight, bias, training, momentum, eps,
            num_batches_tracked, backend, name, act, negative_slope,
        )  # fmt: skip
    if training:
        v.check_more_than_one_value_per_channel(input, name)
        v.check_cumulative_average(momentum, running_mean, running_var, num_batches_tracked, name)
        impl = select("batch_norm_train", input, backend, act)
        return impl(
            input, weight, bias, running_mean, running_var, num_batches_tracked, momentum, eps,
            act, negative_slope, name,
        )  # fmt: skip
    v.check_running_stats_for_eval(running_mean, running_var, name)
    impl = select("batch_norm_eval", input, backend, act)
    return impl(input, weight, bias, running_mean, running_var, eps, act, negative_slope)


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    mask: Tensor | None = None,
    backend: str | None = None,
    name: str = "instance_norm",
) -> Tensor:
    r"""Instance normalization: each ``(n, c)`` plane of ``input (N, C, *)`` normalized on its own
    (`Ulyanov et al. 2016 <https://arxiv.org/abs/1607.08022>`__).

    .. math::
        y_{nc} = \frac{x_{nc} - \mathrm{E}[x_{nc}]}{\sqrt{\mathrm{Var}[x_{nc}] + \epsilon}}
                 \cdot \gamma_c + \beta_c

    With ``use_input_stats`` the statistics are the plane's own (biased variance) and the
    running statistics, if given, move towards the batch average of the per-plane mean and
    **unbiased** variance (torch's rule). Otherwise the running statistics normalize, per
    channel, exactly like :func:`batch_norm` in inference.

    Equivalence: ``instance_norm(x) == group_norm(x, num_groups=C)``.

    ``mask`` (keyword, normkit extension): bool ``(N, *)``, True at valid positions; each
    plane is normalized over its own valid positions (a sample with valid positions needs
    more than one), padded positions output 0; the running statistics move towards the
    average, over the samples with valid positions, of the per-plane mean and unbiased
    variance.

    Shape: ``(N, C, *)`` with at least one spatial dim; output the same (contiguous, as
    torch's).
    """
    v.check_per_channel_arguments(
        input, running_mean, running_var, weight, bias, eps, use_input_stats, name, min_rank=3
    )
    return normalize_instances(
        input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps, backend,
        name, mask,
    )  # fmt: skip


def normalize_instances(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_input_stats: bool,
    momentum: float,
    eps: float,
    backend: str | None,
    name: str,
    mask: Tensor | None = None,
) -> Tensor:
    """InstanceNorm on arguments whose shapes are validated (what the layers call)."""
    if mask is not None:
        return normalize_instances_masked(
            input, mask, running_mean, running_var, weight, bias, use_input_stats, momentum,
            eps, backend, name,
        )  # fmt: skip
    if not use_input_stats:
        v.check_running_stats_for_eval(running_mean, running_var, name)
        x = input.contiguous()  # torch's instance norm returns contiguous outputs
        impl = select("batch_norm_eval", x, backend)
        return impl(x, weight, bias, running_mean, running_var, eps, "identity", 0.01)
    v.check_more_than_one_spatial_element(input, name)
    impl = select("instance_norm_train", input, backend)
    return impl(input, weight, bias, running_mean, running_var, momentum, eps, name)
