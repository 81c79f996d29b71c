"""The layers under test, paired with the zoo's timm stand-ins, and the NumPy reference of
each (what the layer must compute, gradients and running variance included).

``CASES[name] = Case(ours, theirs, kwargs, channels_last_input, f32_stats)``: the normkit
class, the stand-in class, constructor keyword arguments, whether the input is
``(N, H, W, C)``, and whether timm reduces in float32 (then a float64 comparison against
the stand-in holds only to float32 rounding of the statistics: ``STANDIN_F32_STATS_RTOL``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import normkit as nk
from normkit import reference_batch_free as R
from normkit.nn.batch_free import fused_activation
from tests.zoo.ecosystem import timm_norm
from tests.zoo.ecosystem import timm_response_norm as timm

#: float64 input, timm's float32 statistics: a relative error of a few float32 ulps.
STANDIN_F32_STATS_RTOL = 1e-6


@dataclass(frozen=True)
class Case:
    ours: type[nn.Module]
    theirs: type[nn.Module]
    kwargs: dict = field(default_factory=dict)
    channels_last_input: bool = False
    f32_stats: bool = True


CASES: dict[str, Case] = {
    "frn_tlu": Case(nk.nn.FilterResponseNormTlu2d, timm.FilterResponseNormTlu2d),
    "frn_tlu_no_act": Case(
        nk.nn.FilterResponseNormTlu2d, timm.FilterResponseNormTlu2d, {"apply_act": False}
    ),
    "frn_relu": Case(nk.nn.FilterResponseNormAct2d, timm.FilterResponseNormAct2d),
    "frn_silu": Case(
        nk.nn.FilterResponseNormAct2d, timm.FilterResponseNormAct2d, {"act_layer": nn.SiLU}
    ),
    "frn_leaky": Case(
        nk.nn.FilterResponseNormAct2d, timm.FilterResponseNormAct2d, {"act_layer": "leaky_relu"}
    ),
    "frn_gelu": Case(
        nk.nn.FilterResponseNormAct2d, timm.FilterResponseNormAct2d, {"act_layer": nn.GELU}
    ),
    "frn_no_act": Case(
        nk.nn.FilterResponseNormAct2d, timm.FilterResponseNormAct2d, {"apply_act": False}
    ),
    "evo_b0": Case(nk.nn.EvoNorm2dB0, timm.EvoNorm2dB0),
    "evo_b0_m3": Case(nk.nn.EvoNorm2dB0, timm.EvoNorm2dB0, {"momentum": 0.3, "eps": 1e-5}),
    "evo_b0_no_act": Case(nk.nn.EvoNorm2dB0, timm.EvoNorm2dB0, {"apply_act": False}),
    "evo_s0": Case(nk.nn.EvoNorm2dS0, timm.EvoNorm2dS0, {"groups": 4}),
    "evo_s0_group_size": Case(nk.nn.EvoNorm2dS0, timm.EvoNorm2dS0, {"group_size": 4}),
    "evo_s0_no_act": Case(nk.nn.EvoNorm2dS0, timm.EvoNorm2dS0, {"groups": 4, "apply_act": False}),
    "evo_s0a": Case(nk.nn.EvoNorm2dS0a, timm.EvoNorm2dS0a, {"groups": 2}),
    "evo_s0a_no_act": Case(
        nk.nn.EvoNorm2dS0a, timm.EvoNorm2dS0a, {"groups": 4, "apply_act": False}
    ),
    "grn_nhwc": Case(nk.nn.GlobalResponseNorm, timm.GlobalResponseNorm, {}, True, False),
    "grn_nchw": Case(
        nk.nn.GlobalResponseNorm, timm.GlobalResponseNorm, {"channels_last": False}, False, False
    ),
    "rms2d": Case(nk.nn.RmsNorm2d, timm_norm.RmsNorm2d, {}, False, False),
    "rms2d_no_affine": Case(nk.nn.RmsNorm2d, timm_norm.RmsNorm2d, {"affine": False}, False, False),
}

CHANNELS = 8


def make_pair(name: str, dtype: torch.dtype = torch.float64, seed: int = 0):
    """``(ours, theirs)`` with the same random state (weights away from their init)."""
    case = CASES[name]
    theirs = case.theirs(CHANNELS, **case.kwargs).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, t in [*theirs.named_parameters(), *theirs.named_buffers()]:
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float64)
            if pname == "running_var":
                value = torch.rand(t.shape, generator=gen, dtype=torch.float64) + 0.5
            elif pname in ("weight", "v"):
                value = 1.0 + 0.4 * noise
            else:
                value = 0.3 * noise
            t.copy_(value.to(dtype))
    ours = case.ours(CHANNELS, **case.kwargs).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def input_shape(name: str, nchw: tuple[int, int, int, int]) -> tuple[int, ...]:
    n, c, h, w = nchw
    return (n, h, w, c) if CASES[name].channels_last_input else (n, c, h, w)


def _np(t):
    return None if t is None else t.detach().to(torch.float64).numpy()


def _affine_reference(x, g, w, b):
    y = x * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)
    return (
        y,
        g * w.reshape(1, -1, 1, 1),
        {"weight": (g * x).sum((0, 2, 3)), "bias": g.sum((0, 2, 3))},
    )


def reference(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> dict:
    """What ``layer`` (in its current mode and state) computes on ``x``, in float64 NumPy:
    ``y``, ``dx`` for the output gradient ``g``, parameter gradients by name, and the
    running variance after the step (EvoNorm-B0 in training)."""
    xn, gn = _np(x), _np(g)
    p = {name: _np(t) for name, t in layer.named_parameters()}
    w, b = p.get("weight"), p.get("bias")
    out: dict = {"params": {}}
    if isinstance(layer, nk.nn.FilterResponseNormAct2d | nk.nn.FilterResponseNormTlu2d):
        tau = p.get("tau")
        tlu = isinstance(layer, nk.nn.FilterResponseNormTlu2d)
        act, slope = ("identity", 0.01) if tlu else fused_activation(layer.act)
        args = (w, b, tau, layer.eps, act, slope)
        out["y"] = R.filter_response_norm(xn, *args)
        dx, dw, db, dtau = R.filter_response_norm_backward(gn, xn, *args)
        out["dx"], out["params"] = dx, {"weight": dw, "bias": db, "tau": dtau}
    elif isinstance(layer, nk.nn.EvoNorm2dB0):
        if layer.v is None:
            out["y"], out["dx"], out["params"] = _affine_reference(xn, gn, w, b)
            return out
        v = p["v"]
        running = _np(layer.running_var)
        if layer.training:
            var = R.evo_norm_b0_batch_var(xn)
            n = xn.size // xn.shape[1]
            out["running_var"] = R.evo_norm_b0_running_var(running, var, n, layer.momentum)
        else:
            var = running
        out["y"] = R.evo_norm_b0(xn, var, v, w, b, layer.eps)
        dx, dv, dw, db = R.evo_norm_b0_backward(gn, xn, var, v, w, b, layer.eps, layer.training)
        out["dx"], out["params"] = dx, {"v": dv, "weight": dw, "bias": db}
    elif isinstance(layer, nk.nn.EvoNorm2dS0):
        v = p.get("v")
        if v is None and not isinstance(layer, nk.nn.EvoNorm2dS0a):
            out["y"], out["dx"], out["params"] = _affine_reference(xn, gn, w, b)
            return out
        out["y"] = R.evo_norm_s0(xn, layer.groups, v, w, b, layer.eps)
        dx, dv, dw, db = R.evo_norm_s0_backward(gn, xn, layer.groups, v, w, b, layer.eps)
        out["dx"], out["params"] = dx, {"v": dv, "weight": dw, "bias": db}
    elif isinstance(layer, nk.nn.GlobalResponseNorm):
        last = layer.channel_dim == -1
        out["y"] = R.global_response_norm(xn, w, b, layer.eps, last)
        dx, dw, db = R.global_response_norm_backward(gn, xn, w, b, layer.eps, last)
        out["dx"], out["params"] = dx, {"weight": dw, "bias": db}
    elif isinstance(layer, nk.nn.RmsNorm2d):
        out["y"] = R.rms_norm2d(xn, w, layer.eps)
        dx, dw = R.rms_norm2d_backward(gn, xn, w, layer.eps)
        out["dx"], out["params"] = dx, {"weight": dw}
    else:
        raise TypeError(type(layer))
    out["params"] = {k: val for k, val in out["params"].items() if k in p}
    return out


def as_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` with the same values in a memory layout: contiguous, channels_last (4-D),
    or strided (every other element of a wider buffer)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    raise ValueError(layout)


def numpy_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))
