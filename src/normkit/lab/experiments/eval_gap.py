"""``eval-gap``: train-mode versus eval-mode accuracy over training, per BN momentum.

In training a BatchNorm layer normalises with the statistics of the current batch; in
evaluation with its running estimates, an exponential moving average updated with
``momentum`` (torch's convention: ``running = (1 - momentum) * running + momentum *
batch``). When those estimates are off (a small momentum lags behind the changing
weights, a large one follows the noise of small batches), the eval-mode network is worse
than the one training optimised: the train/eval gap. Recalibration (exact population
statistics of the training set, computed after training) closes it.

The momentum does not change training at all (only the running estimates), so the
train-mode curves of all momenta coincide: every difference is in the estimates.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from normkit.lab.datasets import load_dataset
from normkit.lab.errors import LabError
from normkit.lab.experiments._common import parse_list, pct
from normkit.lab.models import cnn
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Option, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, chunks, derive_seed, eval_steps, train
from normkit.tools import recalibrate

SGD_MOMENTUM = 0.9
RECALIBRATION_BATCH = 500
MODES = (
    "train mode (batch statistics)",
    "eval mode (running estimates)",
    "eval mode, recalibrated",
)


def _parse_momenta(text: str) -> tuple[float | None, ...]:
    def convert(item: str) -> float | None:
        return None if item.lower() == "none" else float(item)

    return parse_list(text, convert, "--momenta")


def _check_momenta(momenta) -> None:
    for m in momenta:
        if m is not None and not (isinstance(m, int | float) and 0 < m <= 1):
            raise LabError(f"--momenta: each momentum must be in (0, 1] or 'none', got {m!r}")


def _name(m: float | None) -> str:
    return "None (cumulative)" if m is None else f"{m:g}"


@experiment(
    "eval-gap",
    title="Train-mode vs eval-mode accuracy for several BN momenta, and recalibration",
    summary="train- vs eval-mode accuracy over training per BN momentum; gap closed by recalibration",
    defaults=Config(steps=1500, lr=(0.02,), batch_size=(8,), data="mnist1d", eval_every=100),
    smoke={"steps": 20, "eval_every": 10, "options": {"momenta": (0.01, 0.5)}},
    options=(
        Option(
            "momenta",
            (0.001, 0.01, 0.1, 0.5),
            "comma-separated BN momenta (torch convention; 'none' = cumulative average)",
            _parse_momenta,
            _check_momenta,
        ),
    ),
)
def run(cfg: Config, out_dir: Path) -> Result:
    data = load_dataset(cfg.data)
    momenta = list(cfg.options["momenta"])
    batch_size, lr = cfg.batch_size[0], cfg.lr[0]
    steps = eval_steps(cfg.steps, cfg.eval_every)
    curves: dict[str, dict[str, list[float]]] = {}
    records = []
    train_chunks = [data.x_train[a:b] for a, b in chunks(len(data.y_train), RECALIBRATION_BATCH)]
    for m in momenta:
        torch.manual_seed(derive_seed(cfg.seed, "init"))  # same weights for every momentum
        model = cnn(data.input_shape, data.num_classes, norm="bn", momentum=m)
        curve: dict[str, list[float]] = {mode: [] for mode in MODES}

        def on_eval(step: int, model, curve=curve) -> None:
            curve[MODES[0]].append(
                accuracy(model, data.x_test, data.y_test, train_mode=True, batch_size=batch_size)
            )
            curve[MODES[1]].append(accuracy(model, data.x_test, data.y_test))
            calibrated = copy.deepcopy(model)
            recalibrate(calibrated, train_chunks, progress=False)
            curve[MODES[2]].append(accuracy(calibrated, data.x_test, data.y_test))

        with progress(f"eval-gap: momentum {_name(m)}", cfg.steps) as update:
            train(
                model,
                data,
                steps=cfg.steps,
                batch_size=batch_size,
                lr=lr,
                momentum=SGD_MOMENTUM,
                seed=derive_seed(cfg.seed, "batches"),
                eval_every=cfg.eval_every,
                on_eval=on_eval,
                on_step=update,
            )
        curves[_name(m)] = curve
        for i, step in enumerate(steps):
            records.append(
                {
                    "bn_momentum": _name(m),
                    "step": step,
                    "train_mode_accuracy": curve[MODES[0]][i],
                    "eval_mode_accuracy": curve[MODES[1]][i],
                    "recalibrated_accuracy": curve[MODES[2]][i],
                }
            )

    rows, largest = [], {}
    for name, curve in curves.items():
        train_acc, eval_acc, recal = (curve[mode] for mode in MODES)
        gap = [t - e for t, e in zip(train_acc, eval_acc, strict=True)][1:]  # after step 0
        largest[name] = max(gap, default=0.0)
        rows.append(
            [
                name,
                pct(train_acc[-1]),
                pct(eval_acc[-1]),
                f"{100 * (train_acc[-1] - eval_acc[-1]):+.1f}",
                f"{100 * largest[name]:+.1f}",
                pct(recal[-1]),
            ]
        )
    worst = max(largest, key=lambda k: largest[k])
    c = curves[worst]
    headline = (
        f"BN momentum {worst}: eval-mode accuracy up to {100 * largest[worst]:.1f} points "
        f"below train mode during training, {pct(c[MODES[1]][-1])} vs "
        f"{pct(c[MODES[0]][-1])} at step {cfg.steps}; recalibrated {pct(c[MODES[2]][-1])}"
    )
    if "0.1" in curves and worst != "0.1":
        d = curves["0.1"]
        headline += (
            f" (torch's default 0.1: largest gap {100 * largest['0.1']:.1f} points, "
            f"{pct(d[MODES[1]][-1])} at the end, recalibrated {pct(d[MODES[2]][-1])})"
        )
    panels = []
    for name, curve in curves.items():
        panel = Panel(f"BN momentum {name}", "training step", "test accuracy", percent=True)
        styles = ("-", "--", ":")
        for mode, style in zip(MODES, styles, strict=True):
            panel.series.append(Series(mode, steps, curve[mode], style=style))
        panels.append(panel)
    low = min(v for c in curves.values() for mode in MODES for v in c[mode][1:])
    for panel in panels:
        panel.ylim = (max(0.0, low - 0.05), 1.0)
    save_panels(out_dir / "eval_gap.png", panels, suptitle=f"{data.name}, batch {batch_size}")
    return Result(
        experiment="eval-gap",
        title="Train-mode vs eval-mode accuracy for several BN momenta, and recalibration",
        headline=headline,
        columns=[
            "BN momentum",
            "train-mode acc",
            "eval-mode acc",
            "gap (points)",
            "largest gap in training",
            "recalibrated acc",
        ],
        rows=rows,
        metrics={
            "steps": steps,
            "curves": curves,
            "largest_gap": largest,
            "dataset": data.summary(),
        },
        records=records,
        figures=[
            Figure(
                "eval_gap.png",
                "Test accuracy during training, one panel per BN momentum: with batch "
                "statistics (train mode), with the running estimates (eval mode), and with "
                "recalibrated population statistics.",
            )
        ],
        notes=[
            "Gap = train-mode minus eval-mode accuracy, in percentage points (negative: eval "
            "mode is better, which happens when the batch statistics of small batches are "
            "noisier than good running estimates).",
            f"Data: {data.summary()}. Model: the 3-block CNN with BatchNorm; SGD lr {lr}, "
            f"momentum {SGD_MOMENTUM}, constant rate, batch {batch_size}.",
            f"Train-mode accuracy normalises each chunk of {batch_size} test examples with its "
            "own statistics (what training optimises), on a copy of the model.",
            "Recalibration: normkit.tools.recalibrate with its default 'population' "
            "strategy, on a copy of the model at each evaluation: the exact mean and unbiased "
            f"variance of every BN layer's input over the whole training set (chunks of "
            f"{RECALIBRATION_BATCH}).",
        ],
    )
