"""The batch-free and response norms written as the formulas read, in NumPy.

Companion of :mod:`normkit.reference`: FilterResponseNorm (Singh & Krishnan 2020), EvoNorm
B0 and S0 (Liu et al. 2020), GlobalResponseNorm (ConvNeXt-V2, Woo et al. 2023) and the
channel RMS norm of NCHW maps, with timm's conventions (where ``eps`` goes, what
``apply_act=False`` leaves). The page to read for what each layer computes, and the oracle
the layers are tested against. Nothing is optimised; inputs are never modified; arrays are
``(N, C, *)`` with per-channel ``(C,)`` parameters (GlobalResponseNorm also takes
``(N, *, C)``), computed in the input dtype (timm computes some statistics in float32 even
for float64 inputs; normkit does not).

Notation: a *plane* is one ``(n, c)`` slice over the spatial positions (``L`` values); a
*group* is one sample's ``C / G`` consecutive channels with their planes; ``var`` is always
the biased variance; ``w``, ``b`` the per-channel weight and bias. Every backward returns
the gradients in the order of the forward's differentiable arguments, ``None`` for an
absent one.

Where two inputs of a ``max`` are equal, the gradient is split in half between them (torch's
rule for ``torch.maximum``, which timm's layers use).
"""

from __future__ import annotations

import numpy as np

from normkit.reference import _channel_axes, _per_channel
from normkit.reference_variants import activation as _basic_activation
from normkit.reference_variants import activation_derivative as _basic_derivative

Array = np.ndarray


def _spatial(x: Array) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def _vec(v: Array | None, x: Array, fill: float) -> Array:
    """``v`` shaped to broadcast over ``x (N, C, *)``, or the constant ``fill``."""
    return _per_channel(v, x) if v is not None else np.asarray(fill, dtype=x.dtype)


def _channel_sum(t: Array) -> Array:
    return t.sum(axis=_channel_axes(t))


def _max_split(a: Array, b: Array) -> tuple[Array, Array]:
    """The share of ``max(a, b)``'s gradient that goes to ``a`` and to ``b``."""
    to_a = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))
    return to_a, 1.0 - to_a


def activation(x: Array, act: str, negative_slope: float = 0.01) -> Array:
    """The fused activations: those of :func:`normkit.reference_variants.activation` and
    relu6 ``min(max(x, 0), 6)``, hardswish ``x * min(max(x + 3, 0), 6) / 6``."""
    if act == "relu6":
        return np.clip(x, 0.0, 6.0)
    if act == "hardswish":
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
    return _basic_activation(x, act, negative_slope)


def activation_derivative(x: Array, act: str, negative_slope: float = 0.01) -> Array:
    """``act'(x)``; relu6: 1 on ``(0, 6)``; hardswish: ``x / 3 + 1/2`` on ``[-3, 3]``, 1 above."""
    if act == "relu6":
        return ((x > 0) & (x < 6)).astype(x.dtype)
    if act == "hardswish":
        return np.where(x < -3.0, 0.0, np.where(x <= 3.0, x / 3.0 + 0.5, 1.0))
    return _basic_derivative(x, act, negative_slope)


# ---------------------------------------------------------------------------------------
# FilterResponseNorm: each plane divided by its root mean square, then TLU or activation.


def filter_response_norm(
    x: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    tau: Array | None = None,
    eps: float = 1e-5,
    act: str = "identity",
    negative_slope: float = 0.01,
) -> Array:
    """``x (N, C, *)``, per plane::

        nu2 = mean(x**2)                          # over the spatial positions
        z   = x / sqrt(nu2 + eps) * w + b
        y   = max(z, tau)        with tau (the TLU: FilterResponseNormTlu2d)
        y   = act(z)             without (FilterResponseNormAct2d; identity: no TLU)

    Returns ``y``, x's shape.
    """
    nu2 = (x * x).mean(axis=_spatial(x), keepdims=True)
    z = x / np.sqrt(nu2 + eps) * _vec(weight, x, 1.0) + _vec(bias, x, 0.0)
    if tau is not None:
        return np.maximum(z, _per_channel(tau, x))
    return activation(z, act, negative_slope)


def filter_response_norm_backward(
    g: Array,
    x: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    tau: Array | None = None,
    eps: float = 1e-5,
    act: str = "identity",
    negative_slope: float = 0.01,
):
    """``(dx, dweight, dbias, dtau)``. With ``r = 1 / sqrt(nu2 + eps)``, ``dz`` the
    gradient reaching ``z``, per plane of ``L`` values::

        dz  = g * [z > tau] (+ g / 2 where z == tau)      or  g * act'(z)
        dx  = r * w * (dz - x * r**2 * mean(dz * x))
        dw  = sum(dz * x * r);  db = sum(dz);  dtau = sum(g * [tau > z]) (+ halves)
    """
    axes = _spatial(x)
    r = 1.0 / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    w = _vec(weight, x, 1.0)
    z = x * r * w + _vec(bias, x, 0.0)
    dtau = None
    if tau is not None:
        to_z, to_tau = _max_split(z, _per_channel(tau, x))
        dz = g * to_z
        dtau = _channel_sum(g * to_tau)
    else:
        dz = g * activation_derivative(z, act, negative_slope)
    dx = r * w * (dz - x * r**2 * (dz * x).mean(axis=axes, keepdims=True))
    dw = _channel_sum(dz * x * r) if weight is not None else None
    db = _channel_sum(dz) if bias is not None else None
    return dx, dw, db, dtau


# ---------------------------------------------------------------------------------------
# EvoNorm-B0: batch std against instance std, inside a max.


def _instance_std(x: Array, eps: float) -> tuple[Array, Array]:
    """``(sqrt(var + eps), mean)`` of each plane (keepdims)."""
    axes = _spatial(x)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return np.sqrt(var + eps), mean


def evo_norm_b0_batch_var(x: Array) -> Array:
    """The batch variance of each channel over ``(N, *)`` (biased), ``(C,)``."""
    mean = x.mean(axis=_channel_axes(x), keepdims=True)
    return ((x - mean) ** 2).mean(axis=_channel_axes(x))


def evo_norm_b0(
    x: Array,
    var: Array,
    v: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-3,
) -> Array:
    """``x (N, C, *)``; ``var (C,)`` is the batch variance in training
    (:func:`evo_norm_b0_batch_var` of ``x``), ``running_var`` in evaluation::

        d = max(sqrt(var + eps), v * x + sqrt(var_i + eps))    # var_i: the plane's variance
        y = x / d * w + b

    (timm's EvoNorm2dB0 with ``apply_act=True``; with ``apply_act=False`` it is only
    ``x * w + b``.)
    """
    left = np.sqrt(_per_channel(var, x) + eps)
    right = _per_channel(v, x) * x + _instance_std(x, eps)[0]
    return x / np.maximum(left, right) * _vec(weight, x, 1.0) + _vec(bias, x, 0.0)


def evo_norm_b0_backward(
    g: Array,
    x: Array,
    var: Array,
    v: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-3,
    training: bool = True,
):
    """``(dx, dv, dweight, dbias)``; in training ``var`` is ``x``'s batch variance and is
    differentiated through, in evaluation it is a constant. With ``h = g * w``,
    ``e = -h * x / d**2`` (the gradient reaching ``d``), split by the max into ``e_l``
    (towards the batch std ``s_b``) and ``e_r`` (towards ``v * x + s_i``)::

        dx = h / d + v * e_r + sum_plane(e_r) / s_i * (x - mean_i) / L
                             + sum_channel(e_l) / s_b * (x - mean_b) / (N * L)   # training
        dv = sum(e_r * x);  dw = sum(g * x / d);  db = sum(g)
    """
    n_plane = np.prod([x.shape[a] for a in _spatial(x)])
    n_channel = x.shape[0] * n_plane
    s_b = np.sqrt(_per_channel(var, x) + eps)
    s_i, mean_i = _instance_std(x, eps)
    right = _per_channel(v, x) * x + s_i
    d = np.maximum(s_b, right)
    to_left, to_right = _max_split(s_b * np.ones_like(x), right)
    h = g * _vec(weight, x, 1.0)
    e = -h * x / d**2
    e_l, e_r = e * to_left, e * to_right
    dx = h / d + _per_channel(v, x) * e_r
    dx = dx + e_r.sum(axis=_spatial(x), keepdims=True) / s_i * (x - mean_i) / n_plane
    if training:
        mean_b = x.mean(axis=_channel_axes(x), keepdims=True)
        dx = dx + _per_channel(_channel_sum(e_l), x) / s_b * (x - mean_b) / n_channel
    dv = _channel_sum(e_r * x)
    dw = _channel_sum(g * x / d) if weight is not None else None
    db = _channel_sum(g) if bias is not None else None
    return dx, dv, dw, db


def evo_norm_b0_running_var(running_var: Array, var: Array, n: int, momentum: float) -> Array:
    """timm's rule (the variance only, no ``num_batches_tracked``, a number ``momentum``)::

    running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    """
    return (1 - momentum) * running_var + momentum * var * n / (n - 1)


# ---------------------------------------------------------------------------------------
# EvoNorm-S0 (and S0a): a SiLU-style gate over the group std.


def _group_std(x: Array, groups: int, eps: float) -> tuple[Array, Array]:
    """``(sqrt(var_g + eps), mean_g)`` of each group, ``(N, G, 1)``, on ``x`` seen as
    ``(N, G, K * L)``."""
    grouped = x.reshape(x.shape[0], groups, -1)
    mean = grouped.mean(axis=2, keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=2, keepdims=True)
    return np.sqrt(var + eps), mean


def _sigmoid(t: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-t))


def evo_norm_s0(
    x: Array,
    groups: int,
    v: Array | None = None,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
) -> Array:
    """``x (N, C, *)``, ``C = G * K``; per group of ``m = K * L`` values::

        y = x * sigmoid(v * x) / sqrt(var_g + eps) * w + b     (EvoNorm2dS0, S0a)
        y = x / sqrt(var_g + eps) * w + b                      (v None: S0a, apply_act=False)

    ``var_g`` is the group's variance of ``x`` itself (before the gate). timm's EvoNorm2dS0
    with ``apply_act=False`` is only ``x * w + b``.
    """
    s_g, _ = _group_std(x, groups, eps)
    gated = x * _sigmoid(_per_channel(v, x) * x) if v is not None else x
    y = (gated.reshape(s_g.shape[0], groups, -1) / s_g).reshape(x.shape)
    return y * _vec(weight, x, 1.0) + _vec(bias, x, 0.0)


def evo_norm_s0_backward(
    g: Array,
    x: Array,
    groups: int,
    v: Array | None = None,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
):
    """``(dx, dv, dweight, dbias)``. With ``s = sigmoid(v * x)``, ``a = x * s`` (``a = x``
    without ``v``), ``q = g * w / s_g`` (the gradient reaching ``a``)::

        dx = q * (s + v * x * s * (1 - s)) - sum_group(q * a) / s_g**2 * (x - mean_g) / m
        dv = sum(q * x**2 * s * (1 - s));  dw = sum(g * a / s_g);  db = sum(g)
    """
    n = x.shape[0]
    m = x.size // (n * groups)
    s_g, mean_g = _group_std(x, groups, eps)

    def grouped(t):
        return t.reshape(n, groups, -1)

    def full(t):  # a (N, G, 1) statistic broadcast to x's shape
        return np.broadcast_to(t, (n, groups, m)).reshape(x.shape)

    if v is not None:
        s = _sigmoid(_per_channel(v, x) * x)
        a = x * s
        da_dx = s + _per_channel(v, x) * x * s * (1.0 - s)
    else:
        a, da_dx = x, 1.0
    q = g * _vec(weight, x, 1.0) / full(s_g)
    pull = grouped(q * a).sum(axis=2, keepdims=True) / s_g**2
    dx = q * da_dx - full(pull) * (x - full(mean_g)) / m
    dv = _channel_sum(q * x * x * s * (1.0 - s)) if v is not None else None
    dw = _channel_sum(g * a / full(s_g)) if weight is not None else None
    db = _channel_sum(g) if bias is not None else None
    return dx, dv, dw, db


# ---------------------------------------------------------------------------------------
# GlobalResponseNorm (ConvNeXt-V2): each channel's L2 norm over the spatial positions,
# relative to the mean over the channels.


def _channels_first(x: Array, channels_last: bool) -> Array:
    return np.moveaxis(x, -1, 1) if channels_last else x


def global_response_norm(
    x: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-6,
    channels_last: bool = False,
) -> Array:
    """``x (N, C, *)``, or ``(N, *, C)`` with ``channels_last``; per sample::

        gx = sqrt(sum(x**2))              # each channel's L2 norm over the spatial positions
        nx = gx / (mean_c(gx) + eps)      # eps outside any square root
        y  = x + (w * (x * nx) + b)

    Returns ``y``, x's shape.
    """
    x = _channels_first(x, channels_last)
    gx = np.sqrt((x * x).sum(axis=_spatial(x), keepdims=True))
    nx = gx / (gx.mean(axis=1, keepdims=True) + eps)
    y = x + (_vec(weight, x, 0.0) * (x * nx) + _vec(bias, x, 0.0))
    return np.moveaxis(y, 1, -1) if channels_last else y


def global_response_norm_backward(
    g: Array,
    x: Array,
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-6,
    channels_last: bool = False,
):
    """``(dx, dweight, dbias)``. With ``D = mean_c(gx) + eps``, ``A = sum(g * x)`` per
    plane, and the gradient reaching ``gx``::

        dgx = w * A / D - sum_c(w * A * gx) / (C * D**2)
        dx  = g * (1 + w * nx) + x * dgx / gx          (0 where gx == 0, as torch's norm)
        dw  = sum_n(A * nx);  db = sum(g)
    """
    x = _channels_first(x, channels_last)
    g = _channels_first(g, channels_last)
    axes = _spatial(x)
    w = _vec(weight, x, 0.0)
    gx = np.sqrt((x * x).sum(axis=axes, keepdims=True))
    big_d = gx.mean(axis=1, keepdims=True) + eps
    nx = gx / big_d
    a = (g * x).sum(axis=axes, keepdims=True)
    dgx = w * a / big_d - (w * a * gx).sum(axis=1, keepdims=True) / (x.shape[1] * big_d**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        through_norm = np.where(gx > 0, dgx / gx, 0.0)
    dx = g * (1.0 + w * nx) + x * through_norm
    dw = _channel_sum(a * nx) if weight is not None else None
    db = _channel_sum(g) if bias is not None else None
    return (np.moveaxis(dx, 1, -1) if channels_last else dx), dw, db


# ---------------------------------------------------------------------------------------
# RmsNorm2d: RMS over the channels at each spatial position of an NCHW map.


def rms_norm2d(x: Array, weight: Array | None = None, eps: float = 1e-6) -> Array:
    """``x (N, C, *)``, per ``(n, position)``: ``y = x / sqrt(mean_c(x**2) + eps) * w``."""
    r = 1.0 / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps)
    return x * r * _vec(weight, x, 1.0)


def rms_norm2d_backward(g: Array, x: Array, weight: Array | None = None, eps: float = 1e-6):
    """``(dx, dweight)`` with ``r = 1 / sqrt(mean_c(x**2) + eps)``, ``x_hat = x * r``,
    ``g_hat = g * w``::

        dx = r * (g_hat - x_hat * mean_c(g_hat * x_hat));   dw = sum(g * x_hat)
    """
    r = 1.0 / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps)
    x_hat = x * r
    g_hat = g * _vec(weight, x, 1.0)
    dx = r * (g_hat - x_hat * (g_hat * x_hat).mean(axis=1, keepdims=True))
    dw = _channel_sum(g * x_hat) if weight is not None else None
    return dx, dw
