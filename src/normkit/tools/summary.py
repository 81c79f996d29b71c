"""A Keras-style model summary, plus the health of each normalization layer.

    s = nk.tools.summary(model, (1, 3, 32, 32))      # input size (with the batch dim)
    s = nk.tools.summary(model, example_batch)        # or an example (tensor, tuple, dict)
    print(s)          # plain text;  s.show(): a rich table in a terminal
    s.total_params, s.trainable_params, s.rows, s.norm_rows, s.to_dict()

Counting follows Keras: *trainable* are parameters with ``requires_grad``; *non-trainable*
are the other parameters plus floating-point buffers, so a BatchNorm over ``C`` channels
shows ``4C`` values of which ``2C`` (gamma, beta) are trainable and ``2C`` (running mean
and variance) are not. Integer buffers (``num_batches_tracked``) are not counted as
parameters (Keras has none) but are in the memory total. The forward pass runs once in
eval mode under ``torch.no_grad()`` (nothing in the model changes); each module's flag is
restored afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from normkit.tools._graph import module_graph
from normkit.tools._inputs import make_inputs
from normkit.tools._report import fmt_bytes, fmt_int, rich_table, text_table, use_rich
from normkit.tools._walk import (
    has_running_stats,
    layer_label,
    norm_kind,
)
from normkit.tools.fold import foldable_reason
from normkit.tools.freeze import is_frozen


class SummaryError(ValueError):
    """The summary's forward pass failed (the message names the layer) or bad arguments."""


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: str
    trainable: int
    non_trainable: int

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable


@dataclass
class NormRow:
    name: str
    type: str
    channels: str
    eps: float | None
    momentum: float | str | None
    num_batches_tracked: int | None
    running_var_min: float | None
    running_var_max: float | None
    mode: str  # "train", "eval" or "frozen(...)"
    foldable: str


@dataclass
class Summary:
    """The result of :func:`summary`: rows as data, printable as a table."""

    model_name: str
    rows: list[LayerRow] = field(default_factory=list)
    norm_rows: list[NormRow] = field(default_factory=list)
    input_shapes: list[str] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    non_trainable_params: int = 0
    state_bytes: int = 0
    input_bytes: int = 0
    activation_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.input_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_bytes"] = self.total_bytes
        return data

    # ------------------------------------------------------------------ rendering
    _HEAD = ("Layer", "Type", "Output shape", "Params", "Trainable", "Non-trainable")
    _NORM_HEAD = (
        "Norm layer",
        "Type",
        "C",
        "eps",
        "momentum",
        "batches",
        "running var",
        "mode",
        "fold",
    )

    def _layer_cells(self):
        return [
            (
                r.name,
                r.type,
                r.output_shape,
                fmt_int(r.params),
                fmt_int(r.trainable),
                fmt_int(r.non_trainable),
            )
            for r in self.rows
        ]

    def _norm_cells(self):
        def var_range(r: NormRow) -> str:
            if r.running_var_min is None:
                return "-"
            return f"{r.running_var_min:.3g} .. {r.running_var_max:.3g}"

        return [
            (
                r.name,
                r.type,
                r.channels,
                "-" if r.eps is None else f"{r.eps:g}",
                "-" if r.momentum == "-" else str(r.momentum),
                "-" if r.num_batches_tracked is None else str(r.num_batches_tracked),
                var_range(r),
                r.mode,
                r.foldable,
            )
            for r in self.norm_rows
        ]

    def _totals(self) -> list[str]:
        return [
            f"Total params: {fmt_int(self.total_params)}",
            f"Trainable params: {fmt_int(self.trainable_params)}",
            f"Non-trainable params: {fmt_int(self.non_trainable_params)}",
            f"Parameters and buffers: {fmt_bytes(self.state_bytes)}",
            f"Input ({', '.join(self.input_shapes) or 'none'}): {fmt_bytes(self.input_bytes)}",
            f"Forward activations: {fmt_bytes(self.activation_bytes)}",
            f"Estimated total: {fmt_bytes(self.total_bytes)}",
        ]

    def __str__(self) -> str:
        parts = [
            f'Model: "{self.model_name}"',
            text_table(self._HEAD, self._layer_cells(), "lllrrr"),
            "\n".join(self._totals()),
        ]
        if self.norm_rows:
            parts.append(
                "Normalization layers\n"
                + text_table(self._NORM_HEAD, self._norm_cells(), "lllrrrlll")
            )
        return "\n\n".join(parts)

    def __rich__(self):
        from rich.console import Group

        items = [
            rich_table(f'Model: "{self.model_name}"', self._HEAD, self._layer_cells(), "lllrrr"),
            "\n".join(self._totals()),
        ]
        if self.norm_rows:
            items.append(
                rich_table("Normalization layers", self._NORM_HEAD, self._norm_cells(), "lllrrrlll")
            )
        return Group(*items)

    def show(self, file=None) -> None:
        """Print as a rich table in a terminal (if rich is installed), else as plain text."""
        if use_rich(file):
            from rich.console import Console

            Console(file=file).print(self)
        else:
            print(self, file=file)


# ---------------------------------------------------------------------- building


def _shape_str(value: Any) -> str:
    if isinstance(value, Tensor):
        return "(" + ", ".join(str(s) for s in value.shape) + ")"
    if isinstance(value, (tuple, list)):
        inner = [_shape_str(v) for v in value if v is not None]
        return "[" + ", ".join(inner) + "]" if len(inner) != 1 else inner[0]
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shape_str(v)}" for k, v in value.items()) + "}"
    return "-" if value is None else type(value).__name__


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    return 0


def _count(module: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters(recurse=False) if not p.requires_grad)
    buffers = sum(b.numel() for b in module.buffers(recurse=False) if b.is_floating_point())
    return trainable, frozen + buffers


def _norm_rows(model: nn.Module) -> list[NormRow]:
    modules = dict(model.named_modules())
    graph = module_graph(model)
    rows = []
    for name, module in modules.items():
        kind = norm_kind(module)
        if kind is None:
            continue
        channels = (
            getattr(module, "num_features", None)
            or getattr(module, "num_channels", None)
            or tuple(getattr(module, "normalized_shape", ()))
        )
        stats = has_running_stats(module)
        var = module.running_var.detach().float() if stats else None
        tracked = getattr(module, "num_batches_tracked", None)
        frozen = is_frozen(module)
        mode = "train" if module.training else "eval"
        if frozen:
            mode = "frozen(" + "+".join(k for k, v in frozen.items() if v) + ")"
        fold = "-"
        if kind in ("batch", "frozen"):
            edge = graph.producer_of(name)
            reason = foldable_reason(module)
            producer = modules.get(edge.producer) if edge else None
            if reason and "training mode" not in reason:
                fold = "no"
            elif edge is None or not isinstance(producer, (nn.Linear, nn.modules.conv._ConvNd)):
                fold = "no (no Conv/Linear before)"
            elif len(edge.producer_users) > 1:
                fold = "no (input shared)"
            else:
                fold = f"into {edge.producer}"
        momentum = getattr(module, "momentum", "-") if kind in ("batch", "instance") else "-"
        rows.append(
            NormRow(
                name or "<root>",
                type(module).__name__,
                str(channels),
                getattr(module, "eps", None),
                momentum,
                int(tracked) if isinstance(tracked, Tensor) else None,
                var.min().item() if var is not None and var.numel() else None,
                var.max().item() if var is not None and var.numel() else None,
                mode,
                fold,
            )
        )
    return rows


def summary(
    model: nn.Module,
    input: Any = None,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
) -> Summary:
    """Summarize ``model``: per-layer output shape and parameter counts, totals, memory, and
    one health row per normalization layer.

    Args:
        model: any module.
        input: an input size with the batch dim (``(1, 3, 32, 32)``), a list of sizes for
            several inputs, an example tensor, a tuple of tensors, a dict of keyword inputs,
            or None (no forward pass: output shapes are not shown).
        dtypes: dtypes of the inputs made from sizes (e.g. ``[torch.long]`` for token
            ids). Default: the model's floating dtype

    Returns:
        A :class:`Summary` (``print`` it, ``.show()`` it, or read ``.rows``).

    Raises:
        SummaryError: bad ``input``; the forward pass failed (the message names the layer).

    Examples::

        >>> import torch, normkit as nk
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3), nk.nn.BatchNorm2d(32))
        >>> s = nk.tools.summary(net, (1, 1, 28, 28))
        >>> [(r.type, r.output_shape, r.params, r.trainable) for r in s.rows]
        [('Conv2d', '(1, 32, 26, 26)', 320, 320), ('BatchNorm2d', '(1, 32, 26, 26)', 128, 64)]
    """
    if not isinstance(model, nn.Module):
        raise SummaryError(f"summary: expected a torch.nn.Module, got {type(model).__name__}")
    result = Summary(type(model).__name__)
    listed = [
        (name, m)
        for name, m in model.named_modules()
        if not m._modules
        or any(True for _ in m.parameters(recurse=False))
        or any(True for _ in m.buffers(recurse=False))
    ]
    if not listed:
        listed = [("", model)]
    outputs: dict[int, Any] = {}
    inputs = make_inputs(input, model, dtypes, SummaryError, "summary")
    if inputs is not None:
        _run_forward(model, inputs, {id(m) for _, m in listed}, outputs, result)
    for name, module in listed:
        trainable, non_trainable = _count(module)
        shape = _shape_str(outputs[id(module)]) if id(module) in outputs else "-"
        result.rows.append(
            LayerRow(name or "<root>", type(module).__name__, shape, trainable, non_trainable)
        )
        result.trainable_params += trainable
        result.non_trainable_params += non_trainable
        result.activation_bytes += _tensor_bytes(outputs.get(id(module)))
    result.total_params = result.trainable_params + result.non_trainable_params
    result.state_bytes = sum(_tensor_bytes(t) for t in (*model.parameters(), *model.buffers()))
    result.norm_rows = _norm_rows(model)
    return result


def _run_forward(model, inputs, wanted: set[int], outputs: dict[int, Any], result: Summary) -> None:
    args, kwargs = inputs
    result.input_shapes = [_shape_str(a) for a in args] + [
        f"{k}={_shape_str(v)}" for k, v in kwargs.items()
    ]
    result.input_bytes = _tensor_bytes(list(args)) + _tensor_bytes(kwargs)
    names = {id(m): n for n, m in model.named_modules()}
    stack: list[nn.Module] = []
    handles = []

    def pre_hook(module, _args):
        stack.append(module)

    def post_hook(module, _args, output):
        if stack and stack[-1] is module:
            stack.pop()
        if id(module) in wanted and id(module) not in outputs:
            outputs[id(module)] = output

    modes = {id(m): m.training for m in model.modules()}
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
            module.training = False
        with torch.no_grad():
            model(*args, **kwargs)
    except Exception as exc:
        where = layer_label(names.get(id(stack[-1]), "?"), stack[-1]) if stack else "the model"
        raise SummaryError(
            f"summary: the forward pass failed in layer {where} on input "
            f"{', '.join(result.input_shapes)}: {exc}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module in model.modules():
            module.training = modes.get(id(module), module.training)


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(trainable, non_trainable)`` as in :func:`summary` (Keras's counting)."""
    totals = [0, 0]
    for module in model.modules():
        t, n = _count(module)
        totals[0] += t
        totals[1] += n
    return totals[0], totals[1]


__all__ = ["LayerRow", "NormRow", "Summary", "SummaryError", "count_params", "summary"]
