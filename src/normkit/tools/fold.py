"""Fold eval-mode BatchNorm into the preceding Conv / ConvTranspose / Linear, for inference.

In eval mode a BatchNorm is a per-channel affine map, so it merges into the layer before it:

.. math::
    s = \\frac{\\gamma}{\\sqrt{\\sigma^2_{\\text{running}} + \\epsilon}}, \\qquad
    W' = s \\odot_{\\text{out}} W, \\qquad b' = s \\, (b - \\mu_{\\text{running}}) + \\beta

(``gamma = 1, beta = 0`` when ``affine=False``; ``b = 0`` for a layer without bias). Three
levels, as in ``torch.nn.utils.fusion``: :func:`fold_bn_weights` on tensors,
:func:`fold_conv_bn` / :func:`fold_linear_bn` on modules (new module, inputs untouched) and
:func:`fold` on a whole model, which finds the pairs by torch.fx tracing (falling back to
``nn.Sequential`` adjacency) and replaces each folded BN by ``nn.Identity`` (or, for a
norm+activation layer such as ``BatchNormAct2d``, by its activation). The patterns: Conv /
ConvTranspose (grouped, depthwise) -> BN wherever the two are called, in Sequential or in a
block's forward, and Linear -> BatchNorm1d, also on tokens flattened between the two
(``bn(linear(x).flatten(0, 1))``, LeViT). The model keeps its class and structure; it is for
inference only (train it again and the BN is gone).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from normkit.tools._graph import module_graph
from normkit.tools._report import text_table
from normkit.tools._walk import (
    has_running_stats,
    is_batch_norm,
    is_frozen_batch_norm,
    replace_modules,
)


class FoldError(ValueError):
    """The model or a Conv/BN pair cannot be folded (and why)."""


def fold_bn_weights(
    weight: Tensor,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    gamma: Tensor | None = None,
    beta: Tensor | None = None,
    *,
    transpose: bool = False,
    groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """The weight and bias of ``bn(layer(x))`` as one layer (computed in float64).

    Args:
        weight: ``(C_out, C_in/groups, *k)`` for Conv and Linear (``(C_out, C_in)``);
            ``(C_in, C_out/groups, *k)`` for ConvTranspose (``transpose=True``).
        bias: ``(C_out,)`` or None.
        running_mean, running_var: ``(C_out,)`` BN statistics.
        eps: BN epsilon.
        gamma, beta: ``(C_out,)`` BN affine parameters or None (1 and 0).
        transpose: the weight is a ConvTranspose's. Default: False
        groups: the ConvTranspose's groups (the output channels are grouped). Default: 1

    Returns:
        ``(weight', bias')`` in ``weight``'s dtype: ``weight' = s * weight`` per output
        channel and ``bias' = s * (bias - running_mean) + beta`` with
        ``s = gamma / sqrt(running_var + eps)``.
    """
    dtype = weight.dtype
    w = weight.detach().double()
    mean, var = running_mean.detach().double(), running_var.detach().double()
    channels = mean.shape[0]
    g = gamma.detach().double() if gamma is not None else torch.ones_like(mean)
    bt = beta.detach().double() if beta is not None else torch.zeros_like(mean)
    b = bias.detach().double() if bias is not None else torch.zeros_like(mean)
    scale = g * torch.rsqrt(var + eps)
    kernel = [1] * (w.dim() - 2)
    if transpose:
        c_in = w.shape[0]
        out_per_group = w.shape[1]
        if out_per_group * groups != channels:
            raise FoldError(
                f"fold_bn_weights: a ConvTranspose weight {tuple(weight.shape)} with groups="
                f"{groups} has {out_per_group * groups} output channels, the BN has {channels}"
            )
        w = w.reshape(groups, c_in // groups, out_per_group, *w.shape[2:])
        w = w * scale.reshape(groups, 1, out_per_group, *kernel)
        w = w.reshape(weight.shape)
    else:
        if w.shape[0] != channels:
            raise FoldError(
                f"fold_bn_weights: the weight {tuple(weight.shape)} has {w.shape[0]} output "
                f"channels, the BN has {channels}"
            )
        w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    new_bias = (b - mean) * scale + bt
    return w.to(dtype), new_bias.to(dtype)


_ACTIVATION_MODULES = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
}


def _activation_after(bn: nn.Module) -> nn.Module | None:
    """What stays in the BN's place once it is folded: ``nn.Identity``, or the activation a
    norm+activation layer applies (normkit's by name, timm's ``act`` module); None when
    that activation cannot stand alone (a ``drop`` layer between norm and activation)."""
    act = getattr(bn, "act", None)
    if act is None or (isinstance(act, str) and act == "identity"):
        return nn.Identity()
    if isinstance(act, str):
        if act == "leaky_relu":
            return nn.LeakyReLU(bn.negative_slope)
        return _ACTIVATION_MODULES[act]()
    drop = getattr(bn, "drop", None)
    if isinstance(act, nn.Module) and (drop is None or type(drop) is nn.Identity):
        return copy.deepcopy(act)
    return None


def foldable_reason(bn: nn.Module) -> str | None:
    """Why ``bn`` cannot be folded into a preceding layer, or None when it can."""
    if not (is_batch_norm(bn) or is_frozen_batch_norm(bn)):
        return f"{type(bn).__name__} is not a BatchNorm"
    if _activation_after(bn) is None:
        return f"{type(bn).__name__} has a drop layer between the normalization and its activation"
    if not has_running_stats(bn):
        return "track_running_stats=False: it normalizes with batch statistics in eval too"
    if bn.training and not is_frozen_batch_norm(bn):
        return "it is in training mode (batch statistics); call model.eval() first"
    return None


def _bn_params(bn: nn.Module):
    return bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias


def _check_pair(layer: nn.Module, bn: nn.Module, out_features: int) -> None:
    reason = foldable_reason(bn)
    if reason is not None:
        raise FoldError(f"cannot fold {type(bn).__name__}: {reason}")
    channels = bn.running_mean.shape[0]
    if out_features != channels:
        raise FoldError(
            f"cannot fold {type(bn).__name__}({channels}) into {type(layer).__name__} with "
            f"{out_features} output channels"
        )


def fold_conv_bn(conv: _ConvNd, bn: nn.Module) -> _ConvNd:
    """A new Conv{1,2,3}d or ConvTranspose{1,2,3}d computing ``bn(conv(x))`` (eval mode).

    Grouped and depthwise convolutions, convolutions without bias (one is added) and BN
    with ``affine=False`` are handled. Neither input is modified.
    """
    if not isinstance(conv, _ConvNd):
        raise TypeError(
            f"fold_conv_bn: expected a Conv or ConvTranspose, got {type(conv).__name__}"
        )
    _check_pair(conv, bn, conv.out_channels)
    transpose = isinstance(conv, _ConvTransposeNd)
    weight, bias = fold_bn_weights(
        conv.weight, conv.bias, *_bn_params(bn), transpose=transpose, groups=conv.groups
    )
    return _with_weights(conv, weight, bias)


def fold_linear_bn(linear: nn.Linear, bn: nn.Module) -> nn.Linear:
    """A new Linear computing ``bn(linear(x))`` for 2-D inputs ``(N, features)`` (eval mode).

    The BN normalizes dim 1, the Linear's output features: the MLP pattern
    ``Linear -> BatchNorm1d`` on ``(N, F)`` batches.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fold_linear_bn: expected a Linear, got {type(linear).__name__}")
    _check_pair(linear, bn, linear.out_features)
    weight, bias = fold_bn_weights(linear.weight, linear.bias, *_bn_params(bn))
    return _with_weights(linear, weight, bias)


def _with_weights(layer: nn.Module, weight: Tensor, bias: Tensor) -> nn.Module:
    new = copy.deepcopy(layer)
    new.weight = nn.Parameter(weight, requires_grad=layer.weight.requires_grad)
    new.bias = nn.Parameter(bias, requires_grad=True)
    return new


def _fold_module(layer: nn.Module, bn: nn.Module) -> nn.Module:
    return fold_linear_bn(layer, bn) if isinstance(layer, nn.Linear) else fold_conv_bn(layer, bn)


@dataclass
class FoldReport:
    """Pairs folded, BN layers left in place (with the reason), how pairs were found."""

    method: str
    folded: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    trace_error: str | None = None
    max_rel_error: float | None = None

    def __len__(self) -> int:
        return len(self.folded)

    def __str__(self) -> str:
        lines = [
            f"fold: {len(self.folded)} BatchNorm layer(s) folded (pairs found by {self.method})"
        ]
        rows = [(bn, f"folded into {layer}") for layer, bn in self.folded]
        rows += [(bn, f"kept: {why}") for bn, why in self.skipped]
        if rows:
            lines.append(text_table(["BatchNorm", "result"], rows))
        if self.max_rel_error is not None:
            lines.append(f"max relative output difference on the example: {self.max_rel_error:.2e}")
        return "\n".join(lines)


def _rel_error(a, b) -> float:
    if isinstance(a, Tensor):
        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
    if isinstance(a, (tuple, list)):
        return max((_rel_error(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, dict):
        return max((_rel_error(a[k], b[k]) for k in a), default=0.0)
    return 0.0


def _run(model: nn.Module, example):
    with torch.no_grad():
        if isinstance(example, dict):
            return model(**example)
        if isinstance(example, tuple):
            return model(*example)
        return model(example)


def fold(
    model: nn.Module,
    *,
    inplace: bool = False,
    strict: bool = True,
    example: Tensor | tuple | dict | None = None,
    tolerance: float = 1e-4,
    return_report: bool = False,
) -> nn.Module | tuple[nn.Module, FoldReport]:
    """Merge every eval-mode BatchNorm into the Conv/ConvTranspose/Linear that feeds it.

    Pairs are found by torch.fx tracing (``nn.Sequential`` adjacency when the model does not
    trace); each folded BN becomes ``nn.Identity`` and its producer a new layer with the
    folded weights (float64 arithmetic, so the outputs match the original's to float32
    rounding). BatchNorms not directly after such a layer are kept and reported.

    Args:
        model: a model in eval mode (``model.eval()``).
        inplace: fold ``model`` itself instead of a deep copy. Default: False
        strict: raise on a pair that cannot be folded safely (the producer's output also
            used elsewhere, a shared module); otherwise keep it and report. Default: True
        example: optional input (tensor, tuple of positional inputs or dict of keyword
            inputs); the folded model's output is checked against the original's.
        tolerance: largest accepted relative difference on ``example``. Default: 1e-4
        return_report: also return a :class:`FoldReport`. Default: False

    Raises:
        FoldError: the model is in training mode; an unsafe pair with ``strict``; the outputs
            on ``example`` differ by more than ``tolerance``.

    Examples::

        >>> import torch, normkit as nk
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).eval()
        >>> fast = nk.tools.fold(net)
        >>> fast
        Sequential(
          (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1))
          (1): Identity()
        )
        >>> x = torch.randn(2, 3, 8, 8)
        >>> bool(torch.allclose(fast(x), net(x), atol=1e-5))
        True
    """
    training = [name or "<root>" for name, m in model.named_modules() if m.training]
    if training:
        raise FoldError(
            "fold() is for inference: the model is in training mode (BatchNorm uses batch "
            f"statistics there); call model.eval() first (modules in training mode: "
            f"{', '.join(training[:5])}{', ...' if len(training) > 5 else ''})"
        )
    expected = _run(model, example) if example is not None else None
    root = model if inplace else copy.deepcopy(model)
    graph = module_graph(root)
    modules = dict(root.named_modules())
    report = FoldReport(graph.method, trace_error=graph.trace_error)
    plans: dict[str, nn.Module] = {}  # module name -> replacement
    problems: list[str] = []
    paired: set[str] = set()
    for edge in graph.edges:
        layer, bn = modules.get(edge.producer), modules.get(edge.consumer)
        if bn is None or not (is_batch_norm(bn) or is_frozen_batch_norm(bn)):
            continue
        if not isinstance(layer, (_ConvNd, nn.Linear)):
            continue
        paired.add(edge.consumer)
        reason = foldable_reason(bn)
        if reason is None and len(edge.producer_users) > 1:
            others = [u for u in edge.producer_users if u != edge.consumer]
            reason = f"the output of '{edge.producer}' is also used by {', '.join(others)}"
            problems.append(f"'{edge.consumer}': {reason}")
        elif reason is None and (graph.calls[edge.producer] > 1 or graph.calls[edge.consumer] > 1):
            reason = f"'{edge.producer}' or '{edge.consumer}' is called more than once (shared)"
            problems.append(f"'{edge.consumer}': {reason}")
        if reason is None:
            try:
                plans[edge.producer] = _fold_module(layer, bn)
            except FoldError as exc:  # channel mismatch: not the pattern we fold
                reason = str(exc)
        if reason is None:
            plans[edge.consumer] = _activation_after(bn)
            report.folded.append((edge.producer, edge.consumer))
        else:
            report.skipped.append((edge.consumer, reason))
    if problems and strict:
        raise FoldError(
            "fold() refuses to fold BatchNorm layers whose input is not theirs alone: "
            + "; ".join(problems)
            + " (pass strict=False to fold the others and keep these)"
        )
    for name, module in modules.items():
        if (is_batch_norm(module) or is_frozen_batch_norm(module)) and name not in paired:
            report.skipped.append((name, "not directly after a Conv, ConvTranspose or Linear"))
    root = replace_modules(root, lambda name, m: name in plans, lambda name, m: plans[name])
    if example is not None:
        report.max_rel_error = _rel_error(_run(root, example), expected)
        if not report.max_rel_error <= tolerance:
            raise FoldError(
                f"the folded model's output differs from the original's by "
                f"{report.max_rel_error:.2e} (relative) on the example, above {tolerance:.0e}: "
                "a Linear -> BatchNorm1d pair on inputs with more than 2 dims normalizes "
                "another axis than the Linear's features"
            )
    return (root, report) if return_report else root
