"""Scalar activation math for the fused kernels: silu, gelu and their derivatives.

The four entry points, ``silu(v)``, ``silu_grad(v)``, ``gelu(v)`` and ``gelu_grad(v)``, are
typed by the element type of ``v`` at compile time (Numba ``@overload``, inlined into the
calling loop)::

    silu(v)      = v * sigmoid(v) = v / (1 + exp(-v))
    silu_grad(v) = s * (1 + v * (1 - s)),            s = sigmoid(v)
    gelu(v)      = v * Phi(v),                        Phi(v) = (1 + erf(v / sqrt 2)) / 2
    gelu_grad(v) = Phi(v) + v * phi(v),               phi(v) = exp(-v**2 / 2) / sqrt(2 pi)

**float64** calls libm (``exp``, ``erf``): accurate to a few ulps.

**float32** uses pure arithmetic that LLVM vectorizes (libm calls are scalar and block
vectorization without Intel SVML; measured 9x (silu) and 35x (gelu) slower per element):

* ``exp_f32(x)``: ``x = k ln2 + r`` with ``k = round(x / ln2)`` and ``|r| <= ln2 / 2``;
  ``r`` computed with ln 2 split in two (Cody-Waite) so it stays exact near the ends of the
  range; ``e^r`` by a degree-6 polynomial (least-squares/minimax fit on that interval, relative
  error 2e-9 before float32 rounding); ``2^k`` is added to the exponent field of the
  polynomial's float bits (one integer add, exact while the result is a normal float).
  ``x`` is clamped to ``[-87.33, 88.7228]`` before the reduction, so no float-to-int
  conversion ever sees an out-of-range value or NaN; outside that range the result
  saturates: ``+inf`` above ``log(FLT_MAX)``, ``0`` below ``log(FLT_MIN)`` (results that
  would be subnormal are flushed to 0); NaN gives NaN.
* ``Phi(v)`` through ``erfc``: with ``z = |v| / sqrt 2`` and ``t = 1 / (1 + 0.4 z)``,
  ``erfc(z) = t exp(-z**2) P(t)`` where ``P`` is a degree-9 polynomial fitted (relative
  least squares, Lawson iterations) to ``erfc(z) exp(z**2) / t`` for ``z`` in ``[0, 10]``;
  ``Phi(v) = erfc(z) / 2`` for ``v < 0`` and ``1 - erfc(z) / 2`` otherwise. The same
  ``exp(-z**2) = exp(-v**2 / 2)`` gives ``phi(v)``, so ``gelu_grad`` costs one exp.
  ``Phi`` is accurate relative to its own size for ``v < 0`` (no ``1 + erf`` cancellation).

Measured float32 errors against float64 torch on [-20, 20] (tests/kernels/test_activations.py
checks bounds): silu 1.3e-6 absolute (1.5e-7 relative), silu_grad 9.8e-7, gelu 3.8e-7,
gelu_grad 1.9e-7 absolute; torch's own float32 ops measured 1.3e-6, 9.8e-7, 1.1e-6 and
2.6e-7 on the same grid. ``exp_f32`` is within 3.1e-7 relative (about 3 ulps).

NaN and +-inf follow IEEE evaluation of the formulas above, which is what torch's float64
ops give:
``silu(+inf) = +inf``, ``silu(-inf) = NaN``, ``gelu(+inf) = +inf``, ``gelu(-inf) = NaN``,
both derivatives NaN at +-inf, NaN in -> NaN out. (torch's vectorized float32 ``gelu``
returns NaN at ``+inf``; its scalar path and float64 return ``+inf``.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from normkit.kernels._jit import FASTMATH, kernel

_JIT = {"fastmath": FASTMATH, "error_model": "numpy"}

_f = np.float32
_SQRT1_2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_PDF_F32 = _f(_INV_SQRT_2PI)

# exp_f32: range reduction constants and the e^r polynomial (coefficients of r^0..r^6).
_LOG2E = _f(1.4426950408889634)
# ln 2 split in two (Cody-Waite): _LN2_HI has 9 significant bits, so k * _LN2_HI is exact for
# |k| <= 128 and the reduction loses nothing near the ends of the range.
_LN2_HI = _f(0.693359375)
_LN2_LO = _f(-2.12194440e-4)
_EXP_HI = _f(88.7228)  # just below log(FLT_MAX) = 88.72284
_EXP_LO = _f(-87.33)  # just above log(FLT_MIN) = -87.33654
_E0, _E1, _E2, _E3, _E4, _E5, _E6 = (
    _f(1.0),
    _f(1.0),
    _f(0.49999991059303284),
    _f(0.16666416823863983),
    _f(0.04166824370622635),
    _f(0.008375054225325584),
    _f(0.0013836545404046774),
)

# erfc(z) = t * exp(-z*z) * P(t), t = 1 / (1 + _ERFC_A * z); coefficients of t^0..t^9.
_ERFC_A = _f(0.4)
_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8, _P9 = (
    _f(0.22570775070624957),
    _f(0.22493440976873513),
    _f(0.21507626623801956),
    _f(0.1288946197492794),
    _f(0.27448680949297966),
    _f(-0.2891529704095243),
    _f(0.5535162014212154),
    _f(-0.5036084953668379),
    _f(0.2001504361445896),
    _f(-0.03000502108578718),
)


# ---------------------------------------------------------------------------------------
# float32 building blocks.


@kernel
def _exp_f32(x):
    xc = x if x > _EXP_LO else _EXP_LO  # NaN -> _EXP_LO: the conversion below stays defined
    xc = xc if xc < _EXP_HI else _EXP_HI
    kf = np.floor(xc * _LOG2E + _f(0.5))  # in [-126, 128]
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    p = _E6
    p = _E5 + r * p
    p = _E4 + r * p
    p = _E3 + r * p
    p = _E2 + r * p
    p = _E1 + r * p
    p = _E0 + r * p
    bits = np.int32(np.float32(p).view(np.int32) + (np.int32(kf) << np.int32(23)))
    out = np.int32(bits).view(np.float32)
    out = out if x <= _EXP_HI else np.float32(np.inf)
    out = out if x >= _EXP_LO else _f(0.0)
    return out if x == x else x


@kernel
def _half_erfc_f32(v):
    """``(Phi(-|v|), exp(-v**2 / 2))`` for float32 ``v``."""
    z = abs(v) * _f(_SQRT1_2)
    t = _f(1.0) / (_f(1.0) + _ERFC_A * z)
    e = _exp_f32(-(z * z))
    p = _P9
    p = _P8 + t * p
    p = _P7 + t * p
    p = _P6 + t * p
    p = _P5 + t * p
    p = _P4 + t * p
    p = _P3 + t * p
    p = _P2 + t * p
    p = _P1 + t * p
    p = _P0 + t * p
    return _f(0.5) * t * e * p, e


def _silu_f32(v):
    return v / (_f(1.0) + _exp_f32(-v))


def _silu_grad_f32(v):
    s = _f(1.0) / (_f(1.0) + _exp_f32(-v))
    return s * (_f(1.0) + v * (_f(1.0) - s))


def _gelu_f32(v):
    q, _ = _half_erfc_f32(v)
    return v * (q if v < _f(0.0) else _f(1.0) - q)


def _gelu_grad_f32(v):
    q, e = _half_erfc_f32(v)
    return (q if v < _f(0.0) else _f(1.0) - q) + v * (_PDF_F32 * e)


# ---------------------------------------------------------------------------------------
# float64: libm, with the same formulas as torch (so parity holds at the 1e-10 level).


def _exp_f64(v):
    return np.exp(v)


def _silu_f64(v):
    return v / (1.0 + np.exp(-v))


def _silu_grad_f64(v):
    s = 1.0 / (1.0 + np.exp(-v))
    return s * (1.0 + v * (1.0 - s))


def _gelu_f64(v):
    return 0.5 * v * (1.0 + math.erf(v * _SQRT1_2))


def _gelu_grad_f64(v):
    return 0.5 * (1.0 + math.erf(v * _SQRT1_2)) + v * np.exp(-0.5 * v * v) * _INV_SQRT_2PI


# ---------------------------------------------------------------------------------------
# Typed entry points (compile-time stubs; the overloads pick the implementation by type).


def _typed(name, f32, f64, doc):
    def stub(v):  # pragma: no cover - compile-time stub
        raise NotImplementedError("normkit activation stubs run only inside Numba kernels")

    stub.__name__ = stub.__qualname__ = name
    stub.__doc__ = doc

    @overload(stub, inline="always", jit_options=_JIT)
    def _impl(v):
        if v == types.float32:
            return f32
        if v == types.float64:
            return f64
        return None

    return stub


exp_fast = _typed(
    "exp_fast",
    lambda v: _exp_f32(v),
    _exp_f64,
    "``exp(x)``: vectorizable approximation for float32.",
)
silu = _typed("silu", _silu_f32, _silu_f64, "``v * sigmoid(v)``.")
silu_grad = _typed("silu_grad", _silu_grad_f32, _silu_grad_f64, "``d silu / dv``.")
gelu = _typed(
    "gelu", _gelu_f32, _gelu_f64, "``v * Phi(v)`` (exact erf form, approximated for f32)."
)
gelu_grad = _typed(
    "gelu_grad", _gelu_grad_f32, _gelu_grad_f64, "``d gelu / dv = Phi(v) + v * phi(v)``."
)
