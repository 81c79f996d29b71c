"""Frozen batch normalization: fixed statistics and affine, BatchNorm inference in any mode."""

from __future__ import annotations

from torch import Tensor

from normkit.backends import select
from normkit.functional import _validate as v


def frozen_batch_norm(
    input: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float = 1e-5,
    *,
    act: str = "identity",
    negative_slope: float = 0.01,
    name: str = "frozen_batch_norm",
) -> Tensor:
    r"""BatchNorm inference as one multiply-add per element: ``y = x * scale + shift``.

    .. math::
        \mathrm{scale} = \frac{\gamma}{\sqrt{\mathrm{running\_var} + \epsilon}},\qquad
        \mathrm{shift} = \beta - \mathrm{running\_mean} \cdot \mathrm{scale}

    Computed by the op behind ``batch_norm(input, running_mean, running_var, weight, bias,
    training=False, eps=eps)`` (on CPU float32/float64 the inference kernel: one read and one
    write per element), which equals ``x * scale + shift`` up to rounding. Differentiable in
    ``input`` (``dx = grad * scale``); the statistics and the affine parameters are constants
    (detached, so no gradient reaches them even if they require one).

    ``act`` (one of :data:`normkit._shared.ACTIVATIONS`) is applied to the result, fused
    into the same pass on the numba backend.

    Shape: ``input (N, C, *)``, the four per-channel tensors ``(C,)``; output as ``input``,
    in ``input``'s memory layout.
    """
    v.check_floating(input, name)
    v.check_min_rank(input, 2, name, "(N, C, *)")
    channels = input.shape[1]
    for what, t in (
        ("weight", weight),
        ("bias", bias),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ):
        v.check_vector(t, channels, what, name)
    v.check_eps(eps, False, name)
    v.check_activation(act, negative_slope, name)
    dtype = input.dtype
    mean, var, weight, bias = (
        t.detach().to(dtype) for t in (running_mean, running_var, weight, bias)
    )
    # Validated above: straight to the inference op, not through batch_norm's checks again.
    impl = select("batch_norm_eval", input, None, act)
    return impl(input, weight, bias, mean, var, eps, act, negative_slope)
