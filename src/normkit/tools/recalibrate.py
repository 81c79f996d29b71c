"""Recompute BatchNorm running statistics from data: exact population statistics
(fvcore's PreciseBN idea), the cumulative mean of ``torch.optim.swa_utils.update_bn``, or
a plain EMA; also for domain adaptation (AdaBN: recalibrate on target-domain batches).

During the pass the model runs as at inference (``eval()``: Dropout off), except the
BatchNorm layers, which normalize with batch statistics as in training; a forward pre-hook
on each BN reads its input and feeds a per-layer *estimator*. The layers' momentum, every
module's train/eval flag and the hooks are restored in ``finally``; if the pass fails, the
running statistics are restored too. Weights are never touched.

Strategies (``strategy=``), for batches ``b`` of ``n_b`` values per channel:

* ``"population"`` (:class:`PopulationVariance`, default): the mean and unbiased variance of
  all values seen, as if the batches were concatenated, whatever their sizes::

      running_mean = sum_b n_b mean_b / n,   running_var = M2 / (n - 1),   n = sum_b n_b
      M2 = sum_b [M2_b + n_b (mean_b - running_mean)^2]      (Chan et al. merge)

* ``"cumulative"`` (:class:`CumulativeMean`): the unweighted average over batches of the
  batch means and unbiased batch variances (what ``update_bn`` / ``momentum=None`` gives).
* ``"ema"`` (:class:`EMA`): torch's moving average from the current statistics,
  ``running = (1 - m) running + m batch`` (``m`` = the layer's momentum, or ``momentum=``).

Any callable ``strategy(layer) -> Estimator`` works too, e.g.
``functools.partial(EMA, momentum=0.01)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from normkit._progress import track
from normkit.tools._report import text_table
from normkit.tools._walk import (
    first_input,
    has_running_stats,
    is_batch_norm,
    iter_norm_layers,
    model_device_dtype,
)


class Estimator:
    """Per-layer accumulator of batch statistics (float64).

    ``update(count, mean, m2)`` receives one batch's values per channel ``count``, its
    per-channel mean and sum of squared deviations ``m2``; ``result()`` returns the new
    ``(running_mean, running_var)`` with the unbiased variance (torch's convention).
    """

    def __init__(self, layer: nn.Module) -> None:
        self.batches = 0
        self.count = 0

    def update(self, count: int, mean: Tensor, m2: Tensor) -> None:
        self.batches += 1
        self.count += count

    def result(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class PopulationVariance(Estimator):
    """Exact mean and unbiased variance of all values seen (batch sizes may differ)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__(layer)
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def update(self, count: int, mean: Tensor, m2: Tensor) -> None:
        previous = self.count
        super().update(count, mean, m2)
        if self.mean is None:
            self.mean, self.m2 = mean.clone(), m2.clone()
            return
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / self.count)
        self.m2 = self.m2 + m2 + delta.square() * (previous * count / self.count)

    def result(self) -> tuple[Tensor, Tensor]:
        return self.mean, self.m2 / max(self.count - 1, 1)


class CumulativeMean(Estimator):
    """Average over batches of batch means and unbiased batch variances (``update_bn``)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__(layer)
        self.sum_mean: Tensor | Any = 0.0
        self.sum_var: Tensor | Any = 0.0

    def update(self, count: int, mean: Tensor, m2: Tensor) -> None:
        super().update(count, mean, m2)
        self.sum_mean = self.sum_mean + mean
        self.sum_var = self.sum_var + m2 / max(count - 1, 1)

    def result(self) -> tuple[Tensor, Tensor]:
        return self.sum_mean / self.batches, self.sum_var / self.batches


class EMA(Estimator):
    """torch's exponential moving average from the layer's current running statistics."""

    def __init__(self, layer: nn.Module, momentum: float | None = None) -> None:
        super().__init__(layer)
        momentum = momentum if momentum is not None else layer.momentum
        if momentum is None or not 0.0 < momentum <= 1.0:
            raise ValueError(
                f"EMA: momentum must be in (0, 1] (the layer has momentum={layer.momentum}); "
                "pass functools.partial(EMA, momentum=...)"
            )
        self.momentum = float(momentum)
        self.mean = layer.running_mean.detach().double().clone()
        self.var = layer.running_var.detach().double().clone()

    def update(self, count: int, mean: Tensor, m2: Tensor) -> None:
        super().update(count, mean, m2)
        m = self.momentum
        self.mean = (1 - m) * self.mean + m * mean
        self.var = (1 - m) * self.var + m * m2 / max(count - 1, 1)

    def result(self) -> tuple[Tensor, Tensor]:
        return self.mean, self.var


STRATEGIES: dict[str, Callable[[nn.Module], Estimator]] = {
    "population": PopulationVariance,
    "cumulative": CumulativeMean,
    "ema": EMA,
}


@dataclass
class LayerRecalibration:
    """One layer's outcome: batches and values per channel seen, how far the statistics moved
    (max |new - old mean| in old standard deviations; range of new / old variance)."""

    name: str
    type: str
    batches: int
    values_per_channel: int
    mean_shift: float
    var_ratio_min: float
    var_ratio_max: float


class NothingToRecalibrateWarning(UserWarning):
    """The model has no BatchNorm layer with running statistics: recalibrate did nothing."""


@dataclass
class RecalibrationReport:
    strategy: str
    layers: list[LayerRecalibration] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)
    skipped_batches: int = 0

    def __str__(self) -> str:
        head = f"recalibrate(strategy={self.strategy!r}): {len(self.layers)} layer(s) updated"
        rows = [
            (
                r.name,
                r.type,
                r.batches,
                r.values_per_channel,
                f"{r.mean_shift:.3g}",
                f"{r.var_ratio_min:.3g} .. {r.var_ratio_max:.3g}",
            )
            for r in self.layers
        ]
        lines = [head]
        if rows:
            headers = [
                "layer",
                "type",
                "batches",
                "values/channel",
                "mean shift (std)",
                "var new/old",
            ]
            lines.append(text_table(headers, rows, "llrrrr"))
        if self.not_reached:
            lines.append(f"not reached by the data (unchanged): {', '.join(self.not_reached)}")
        if self.skipped_batches:
            lines.append(f"batch inputs with NaN/Inf statistics ignored: {self.skipped_batches}")
        return "\n".join(lines)


def recalibratable(module: nn.Module) -> bool:
    """A BatchNorm (torch's or normkit's) with running statistics."""
    return is_batch_norm(module) and has_running_stats(module)


class recalibration:
    """Context manager: inside it, every forward call of ``model`` feeds the estimators; on
    normal exit the new running statistics are written, on an exception the old ones are
    restored. ``report`` is filled on exit.

        with nk.tools.recalibration(model) as rec, torch.no_grad():
            for x in loader:
                model(x)
        print(rec.report)
    """

    def __init__(
        self,
        model: nn.Module,
        strategy: str | Callable[[nn.Module], Estimator] = "population",
        include: Callable[[str, nn.Module], bool] | None = None,
    ) -> None:
        if isinstance(strategy, str):
            if strategy not in STRATEGIES:
                raise ValueError(
                    f"recalibrate: unknown strategy {strategy!r}; expected one of "
                    f"{sorted(STRATEGIES)} or a callable layer -> Estimator"
                )
            self.strategy_name = strategy
            strategy = STRATEGIES[strategy]
        else:
            self.strategy_name = getattr(strategy, "__name__", type(strategy).__name__)
        self.model = model
        self.strategy = strategy
        self.layers = [
            (name, m)
            for name, m in model.named_modules()
            if recalibratable(m) and (include is None or include(name, m))
        ]
        if not self.layers:  # nothing to do: say so, change nothing
            found = sorted({type(m).__name__ for _, m in iter_norm_layers(model)})
            warnings.warn(
                "recalibrate: the model has no BatchNorm layer with running statistics to "
                f"recalibrate (normalization layers found: {', '.join(found) or 'none'}); "
                "the model is left as it is",
                NothingToRecalibrateWarning,
                stacklevel=3,
            )
        self.report = RecalibrationReport(self.strategy_name)
        self._estimators: dict[int, Estimator] = {}
        self._handles: list = []

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = first_input(args, kwargs)
        if x is None:
            return
        x = x.detach()
        channels = x.shape[1]
        flat = x.transpose(0, 1).reshape(channels, -1).double()
        count = flat.shape[1]
        if count == 0:
            return
        var, mean = torch.var_mean(flat, dim=1, correction=0)
        if not (torch.isfinite(mean).all() and torch.isfinite(var).all()):
            self.report.skipped_batches += 1
            warnings.warn(
                f"recalibrate: a batch input of {type(module).__name__} has NaN/Inf "
                "statistics; it was left out",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self._estimators[id(module)].update(count, mean, var * count)

    def __enter__(self) -> recalibration:
        self._modes = {id(m): m.training for m in self.model.modules()}
        self._saved = {}
        try:
            for _, layer in self.layers:
                self._saved[id(layer)] = (
                    layer.momentum,
                    layer.running_mean.detach().clone(),
                    layer.running_var.detach().clone(),
                    None
                    if layer.num_batches_tracked is None
                    else layer.num_batches_tracked.clone(),
                )
                self._estimators[id(layer)] = self.strategy(layer)
            for module in self.model.modules():  # eval(), without calling train() overrides
                module.training = False
            for _, layer in self.layers:
                layer.training = True  # batch statistics, as in training
                layer.momentum = 0.0  # the layer's own update leaves the buffers as they are
                self._handles.append(layer.register_forward_pre_hook(self._hook, with_kwargs=True))
        except BaseException:
            self._restore(failed=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore(failed=exc_type is not None)

    @torch.no_grad()
    def _restore(self, failed: bool) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for module in self.model.modules():
            if id(module) in self._modes:
                module.training = self._modes[id(module)]
        for name, layer in self.layers:
            if id(layer) not in self._saved:
                continue
            momentum, mean, var, tracked = self._saved[id(layer)]
            layer.momentum = momentum
            estimator = self._estimators.get(id(layer))
            if failed or estimator is None or estimator.batches == 0:
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
                if tracked is not None:
                    layer.num_batches_tracked.copy_(tracked)
                if not failed:
                    self.report.not_reached.append(name)
                continue
            new_mean, new_var = estimator.result()
            old_std = var.double().clamp_min(1e-12).sqrt()
            ratio = new_var / var.double().clamp_min(1e-12)
            self.report.layers.append(
                LayerRecalibration(
                    name,
                    type(layer).__name__,
                    estimator.batches,
                    estimator.count,
                    ((new_mean - mean.double()).abs() / old_std).max().item(),
                    ratio.min().item(),
                    ratio.max().item(),
                )
            )
            layer.running_mean.copy_(new_mean.to(layer.running_mean.dtype))
            layer.running_var.copy_(new_var.to(layer.running_var.dtype))
            if tracked is not None:
                layer.num_batches_tracked.copy_(tracked + estimator.batches)


def _default_forward(model: nn.Module, batch: Any, device: torch.device) -> None:
    def move(t):
        return t.to(device) if isinstance(t, Tensor) else t

    if isinstance(batch, Tensor):
        model(move(batch))
    elif isinstance(batch, (tuple, list)) and batch:
        model(move(batch[0]))  # (input, target) pairs, as from a DataLoader
    elif isinstance(batch, dict):
        model(**{k: move(v) for k, v in batch.items()})
    else:
        raise TypeError(
            "recalibrate: a batch must be a tensor, an (input, target, ...) tuple/list or a "
            f"dict of keyword inputs, got {type(batch).__name__}; pass forward=callable"
        )


def recalibrate(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int | None = None,
    *,
    strategy: str | Callable[[nn.Module], Estimator] = "population",
    forward: Callable[[nn.Module, Any], Any] | None = None,
    include: Callable[[str, nn.Module], bool] | None = None,
    progress: bool | None = None,
    return_report: bool = False,
) -> nn.Module | tuple[nn.Module, RecalibrationReport]:
    """Recompute the running statistics of every BatchNorm in ``model`` from ``batches``.

    Args:
        model: the model (torch.nn and normkit.nn BatchNorm layers), updated in place.
        batches: iterable of tensors, ``(input, target, ...)`` tuples or keyword dicts
            (a DataLoader works); moved to the model's device.
        num_batches: use at most this many batches. Default: all
        strategy: ``"population"`` (exact, default), ``"cumulative"``, ``"ema"`` or a
            callable ``layer -> Estimator``.
        forward: ``forward(model, batch)`` for batches of another shape.
        include: ``include(name, layer) -> bool`` limits the layers recalibrated.
        progress: progress bar (``None``: when stderr is a terminal). Default: None
        return_report: also return the :class:`RecalibrationReport`. Default: False

    Returns:
        ``model`` (and the report). With the default strategy, each layer's
        ``running_mean`` is the mean of all its input values seen and ``running_var`` their
        unbiased variance; ``num_batches_tracked`` grows by the batches seen.

    Examples::

        >>> import torch, normkit as nk
        >>> bn = nk.nn.BatchNorm1d(2)
        >>> data = [torch.randn(n, 2) * 3 + 1 for n in (5, 17, 9)]
        >>> _ = nk.tools.recalibrate(bn, data)
        >>> bool(torch.allclose(bn.running_var, torch.cat(data).var(0), atol=1e-5))
        True
    """
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"recalibrate: num_batches must be >= 1 or None, got {num_batches}")
    device, _ = model_device_dtype(model)
    total = num_batches
    if total is None and hasattr(batches, "__len__"):
        total = len(batches)
    seen = 0
    with recalibration(model, strategy, include) as rec, torch.no_grad():
        if not rec.layers:  # nothing to recalibrate (the context warned): no forward passes
            return (model, rec.report) if return_report else model
        for batch in track(batches, total, "recalibrating BatchNorm", progress):
            if forward is not None:
                forward(model, batch)
            else:
                _default_forward(model, batch, device)
            seen += 1
            if num_batches is not None and seen >= num_batches:
                break
    if seen == 0:
        raise ValueError("recalibrate: no batches were given (the iterable was empty)")
    return (model, rec.report) if return_report else model
