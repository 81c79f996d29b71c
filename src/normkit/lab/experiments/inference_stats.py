"""``inference-stats``: which statistics a BatchNorm network should use at test time.

In training a BatchNorm layer normalises with the mean and variance of the current batch.
A deployed model sees one example at a time, so it needs stored statistics. The ways to
keep them, all computed here from ONE training run of the lab's CNN (BatchNorm after each
convolution), so every difference below is in the statistics, not in the weights:

- a moving average with momentum m (torch's convention, ``running = (1 - m) * running +
  m * batch``; torch's default m = 0.1 is Keras's ``momentum=0.99``), for several m;
- every batch's mean and variance stored, averaged at the end (what some tutorials
  describe): memory grows with the number of training steps;
- the cumulative average (torch's ``momentum=None``), which computes exactly that average
  on the fly with two vectors per layer;
- recalibration (``normkit.tools.recalibrate``): after training, one pass over the
  training set with the final weights gives the exact population mean and variance.

How: a forward pre-hook on each BatchNorm layer reads the layer's input in every training
step and updates every estimator with that batch's per-channel mean and unbiased variance
(the layers' own ``running_*`` buffers, momentum 0.1, are not used). At each evaluation a
copy of the network is evaluated with each estimator's statistics loaded into its BN
buffers. Memory counts the stored float32 values (every BatchNorm also keeps its
``num_batches_tracked`` counter, whatever the momentum). Averaging every batch's
statistics weighs the early batches, made by weights long gone, as much as the last ones:
so does the cumulative average, which is the same number.

Protocol: the 3-block CNN with BatchNorm, SGD with momentum 0.9 and cosine decay from
``--lr``, batch ``--batch-size`` (default 8, small enough for noisy batch statistics),
moving-average momenta ``--momenta``; every estimator evaluated on the test set every
``--eval-every`` steps.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from normkit.lab.datasets import load_dataset
from normkit.lab.errors import LabError
from normkit.lab.experiments._common import data_summary, parse_list, pct
from normkit.lab.i18n import tr
from normkit.lab.models import cnn, norm_layers
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Option, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, chunks, derive_seed, eval_steps, train
from normkit.tools import recalibrate

SGD_MOMENTUM = 0.9
RECALIBRATION_BATCH = 500
BYTES_PER_VALUE = 4  # float32 buffers
EVERY_BATCH = "every batch, averaged"
CUMULATIVE = "cumulative (momentum=None)"
RECALIBRATED = "recalibrated"


class MovingAverage:
    """``running = (1 - momentum) * running + momentum * batch``, from mean 0 and variance 1
    (torch's initial buffers). Stores two vectors of C values."""

    def __init__(self, channels: int, momentum: float) -> None:
        self.momentum = momentum
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.var = torch.ones(channels, dtype=torch.float64)

    def update(self, mean: Tensor, var: Tensor) -> None:
        self.mean.lerp_(mean, self.momentum)
        self.var.lerp_(var, self.momentum)

    def estimate(self) -> tuple[Tensor, Tensor]:
        return self.mean, self.var

    def values_stored(self) -> int:
        return self.mean.numel() + self.var.numel()


class CumulativeAverage(MovingAverage):
    """torch's ``momentum=None``: the k-th batch enters with weight 1/k, so after k batches
    ``running`` is the plain average of the k batch statistics. Two vectors of C values."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, momentum=0.0)
        self.count = 0

    def update(self, mean: Tensor, var: Tensor) -> None:
        self.count += 1
        self.mean.lerp_(mean, 1.0 / self.count)
        self.var.lerp_(var, 1.0 / self.count)


class EveryBatch:
    """Keeps every batch's mean and variance; the estimate is their average (2C values per
    training step)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.means: list[Tensor] = []
        self.vars: list[Tensor] = []

    def update(self, mean: Tensor, var: Tensor) -> None:
        self.means.append(mean.clone())
        self.vars.append(var.clone())

    def estimate(self) -> tuple[Tensor, Tensor]:
        if not self.means:
            return (
                torch.zeros(self.channels, dtype=torch.float64),
                torch.ones(self.channels, dtype=torch.float64),
            )
        return torch.stack(self.means).mean(0), torch.stack(self.vars).mean(0)

    def values_stored(self) -> int:
        return 2 * self.channels * len(self.means)


def batch_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and unbiased variance of ``x (N, C, *)`` over every axis but 1,
    in float64: what a BatchNorm layer feeds its running estimates."""
    dims = [0, *range(2, x.ndim)]
    x = x.detach().double()
    return x.mean(dims), x.var(dims, correction=1)


def attach(model: nn.Module, make) -> tuple[list[dict[str, object]], list]:
    """One set of estimators per BatchNorm layer of ``model``, updated in every training
    forward by a pre-hook (only of that very layer: copies of the model share the hook
    function but do not update the estimators). ``make(channels) -> {name: estimator}``.
    Returns the estimators (one dict per layer) and the hook handles."""
    per_layer, handles = [], []
    for layer in norm_layers(model):
        estimators = make(layer.num_features)

        def hook(module, args, layer=layer, estimators=estimators) -> None:
            if module is layer and module.training:
                mean, var = batch_statistics(args[0])
                for estimator in estimators.values():
                    estimator.update(mean, var)

        handles.append(layer.register_forward_pre_hook(hook))
        per_layer.append(estimators)
    return per_layer, handles


def with_statistics(model: nn.Module, statistics: list[tuple[Tensor, Tensor]]) -> nn.Module:
    """A copy of ``model`` whose BatchNorm layers hold ``statistics`` (one (mean, var) each)."""
    target = copy.deepcopy(model)
    with torch.no_grad():
        for layer, (mean, var) in zip(norm_layers(target), statistics, strict=True):
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
    return target


def _parse_momenta(text: str) -> tuple[float, ...]:
    return parse_list(text, float, "--momenta")


def _check_momenta(momenta) -> None:
    for m in momenta:
        if not (isinstance(m, int | float) and 0 < m <= 1):
            raise LabError(f"--momenta: each momentum must be in (0, 1], got {m!r}")


def _name(m: float) -> str:
    return f"momentum {m:g}"


@experiment(
    "inference-stats",
    title=tr("inference-stats.title", lang="en"),
    summary="one trained CNN evaluated with moving averages, every batch's stats, cumulative, recalibrated",
    defaults=Config(steps=1500, lr=(0.02,), batch_size=(8,), data="mnist1d", eval_every=100),
    smoke={"steps": 20, "eval_every": 10, "options": {"momenta": (0.01, 0.5)}},
    options=(
        Option(
            "momenta",
            (0.001, 0.01, 0.1, 0.5),
            "comma-separated moving-average momenta (torch convention; Keras's 0.99 is 0.01)",
            _parse_momenta,
            _check_momenta,
        ),
    ),
)
def run(cfg: Config, out_dir: Path) -> Result:
    data = load_dataset(cfg.data)
    momenta = sorted(set(cfg.options["momenta"]))
    batch_size, lr = cfg.batch_size[0], cfg.lr[0]
    steps = eval_steps(cfg.steps, cfg.eval_every)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = cnn(data.input_shape, data.num_classes, norm="bn")

    def make(channels: int) -> dict[str, object]:
        estimators: dict[str, object] = {_name(m): MovingAverage(channels, m) for m in momenta}
        estimators[EVERY_BATCH] = EveryBatch(channels)
        estimators[CUMULATIVE] = CumulativeAverage(channels)
        return estimators

    per_layer, handles = attach(model, make)
    names = [*per_layer[0], RECALIBRATED]
    curves: dict[str, list[float]] = {name: [] for name in names}
    memory: dict[str, list[int]] = {name: [] for name in names}
    train_chunks = [data.x_train[a:b] for a, b in chunks(len(data.y_train), RECALIBRATION_BATCH)]

    def on_eval(step: int, m: nn.Module) -> None:
        for name in names[:-1]:
            stats = [layer[name].estimate() for layer in per_layer]
            curves[name].append(accuracy(with_statistics(m, stats), data.x_test, data.y_test))
            memory[name].append(sum(layer[name].values_stored() for layer in per_layer))
        calibrated = copy.deepcopy(m)
        recalibrate(calibrated, train_chunks, progress=False)
        curves[RECALIBRATED].append(accuracy(calibrated, data.x_test, data.y_test))
        memory[RECALIBRATED].append(2 * sum(bn.num_features for bn in norm_layers(m)))

    try:
        with progress("inference-stats: training", cfg.steps) as update:
            train(
                model,
                data,
                steps=cfg.steps,
                batch_size=batch_size,
                lr=lr,
                momentum=SGD_MOMENTUM,
                schedule="cosine",
                seed=derive_seed(cfg.seed, "batches"),
                eval_every=cfg.eval_every,
                on_eval=on_eval,
                on_step=update,
            )
    finally:
        for handle in handles:
            handle.remove()

    final = {name: curves[name][-1] for name in names}
    stored = {name: memory[name][-1] for name in names}
    half = len(steps) // 2
    records = [
        {
            "estimator": name,
            "step": step,
            "test_accuracy": curves[name][i],
            "values_stored": memory[name][i],
        }
        for name in names
        for i, step in enumerate(steps)
    ]
    rows = [
        [
            _label(name),
            tr(f"inference-stats.stores_{_kind(name)}"),
            f"{stored[name]:,}",
            _bytes(stored[name] * BYTES_PER_VALUE),
            pct(curves[name][half]),
            pct(final[name]),
        ]
        for name in names
    ]
    headline = tr(
        "inference-stats.headline",
        steps=cfg.steps,
        batch=batch_size,
        every=pct(final[EVERY_BATCH]),
        every_memory=_bytes(stored[EVERY_BATCH] * BYTES_PER_VALUE),
        cumulative=pct(final[CUMULATIVE]),
        cumulative_memory=_bytes(stored[CUMULATIVE] * BYTES_PER_VALUE),
        moving=", ".join(f"{m:g} {pct(final[_name(m)])}" for m in momenta),
        recal=pct(final[RECALIBRATED]),
    )
    _figure(out_dir / "inference_stats.png", steps, curves, final, stored, data.name, batch_size)
    return Result(
        experiment="inference-stats",
        title=tr("inference-stats.title"),
        headline=headline,
        columns=[
            tr("inference-stats.col_estimator"),
            tr("inference-stats.col_stores"),
            tr("inference-stats.col_values"),
            tr("inference-stats.col_memory"),
            tr("common.acc_at_step", step=steps[half]),
            tr("common.acc_at_step", step=cfg.steps),
        ],
        rows=rows,
        metrics={
            "steps": steps,
            "momenta": momenta,
            "test_accuracy": curves,
            "values_stored": memory,
            "bytes_per_value": BYTES_PER_VALUE,
            "dataset": data.summary(),
        },
        records=records,
        figures=[
            Figure(
                "inference_stats.png",
                tr("inference-stats.caption"),
                tr("inference-stats.explanation"),
            )
        ],
        notes=[
            tr(
                "inference-stats.note_model",
                data=data_summary(data),
                lr=lr,
                momentum=SGD_MOMENTUM,
                batch=batch_size,
            ),
            tr("inference-stats.note_same_training"),
            tr("inference-stats.note_every_is_cumulative"),
            tr("inference-stats.note_recal", chunk=RECALIBRATION_BATCH),
        ],
    )


def _kind(name: str) -> str:
    if name == EVERY_BATCH:
        return "every"
    if name == CUMULATIVE:
        return "cumulative"
    if name == RECALIBRATED:
        return "recal"
    return "moving"


def _label(name: str) -> str:
    """An estimator's identifier as the report shows it."""
    kind = _kind(name)
    if kind == "moving":
        return tr("inference-stats.moving", momentum=name.removeprefix("momentum "))
    return tr(f"inference-stats.{kind}")


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.2f} MiB"


def _figure(path: Path, steps, curves, final, stored, dataset: str, batch: int) -> None:
    over_time = Panel(
        tr("inference-stats.panel_time"),
        tr("common.training_step"),
        tr("common.test_accuracy"),
        percent=True,
    )
    for name in curves:
        style = {"every": "--", "cumulative": ":"}.get(_kind(name), "-")
        over_time.series.append(Series(_label(name), steps[1:], curves[name][1:], style=style))
    low = min(v for c in curves.values() for v in c[1:])
    over_time.ylim = (max(0.0, low - 0.05), 1.0)
    cost = Panel(
        tr("inference-stats.panel_memory"),
        tr("inference-stats.memory_axis"),
        tr("common.test_accuracy"),
        logx=10,
        percent=True,
        ylim=over_time.ylim,  # same scale as (a): the differences at the end are small
    )
    for name in curves:
        kib = stored[name] * BYTES_PER_VALUE / 1024
        cost.series.append(Series(_label(name), [kib], [final[name]], style="", marker="o"))
    save_panels(
        path,
        [over_time, cost],
        suptitle=tr("inference-stats.suptitle", dataset=dataset, batch=batch),
    )
