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
from normkit.lab.experiments._common import data_summary, parse_list, pct
from normkit.lab.i18n import tr
from normkit.lab.models import cnn
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Option, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, chunks, derive_seed, eval_steps, train
from normkit.tools import recalibrate

SGD_MOMENTUM = 0.9
RECALIBRATION_BATCH = 500
MODES = (  # identifiers in the results; labels via tr()
    "train mode (batch statistics)",
    "eval mode (running estimates)",
    "eval mode, recalibrated",
)
MODE_LABELS = dict(
    zip(MODES, ("eval-gap.train_mode", "eval-gap.eval_mode", "eval-gap.recal"), strict=True)
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
    """The momentum as an identifier in the results."""
    return "None (cumulative)" if m is None else f"{m:g}"


def _label(name: str) -> str:
    """The momentum's identifier as the report shows it."""
    return tr("eval-gap.cumulative") if name == "None (cumulative)" else name


@experiment(
    "eval-gap",
    title=tr("eval-gap.title", lang="en"),
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
                _label(name),
                pct(train_acc[-1]),
                pct(eval_acc[-1]),
                f"{100 * (train_acc[-1] - eval_acc[-1]):+.1f}",
                f"{100 * largest[name]:+.1f}",
                pct(recal[-1]),
            ]
        )
    worst = max(largest, key=lambda k: largest[k])
    c = curves[worst]
    headline = tr(
        "eval-gap.headline",
        momentum=_label(worst),
        gap=f"{100 * largest[worst]:.1f}",
        eval_acc=pct(c[MODES[1]][-1]),
        train_acc=pct(c[MODES[0]][-1]),
        steps=cfg.steps,
        recal=pct(c[MODES[2]][-1]),
    )
    if "0.1" in curves and worst != "0.1":
        d = curves["0.1"]
        headline += tr(
            "eval-gap.headline_default",
            gap=f"{100 * largest['0.1']:.1f}",
            eval_acc=pct(d[MODES[1]][-1]),
            recal=pct(d[MODES[2]][-1]),
        )
    panels = []
    for name, curve in curves.items():
        panel = Panel(
            tr("eval-gap.panel", momentum=_label(name)),
            tr("common.training_step"),
            tr("common.test_accuracy"),
            percent=True,
        )
        styles = ("-", "--", ":")
        for mode, style in zip(MODES, styles, strict=True):
            panel.series.append(Series(tr(MODE_LABELS[mode]), steps, curve[mode], style=style))
        panels.append(panel)
    low = min(v for c in curves.values() for mode in MODES for v in c[mode][1:])
    for panel in panels:
        panel.ylim = (max(0.0, low - 0.05), 1.0)
    save_panels(
        out_dir / "eval_gap.png",
        panels,
        suptitle=tr("eval-gap.suptitle", dataset=data.name, batch=batch_size),
    )
    return Result(
        experiment="eval-gap",
        title=tr("eval-gap.title"),
        headline=headline,
        columns=[
            tr(f"eval-gap.col_{c}")
            for c in ("momentum", "train", "eval", "gap", "largest", "recal")
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
            Figure("eval_gap.png", tr("eval-gap.caption"), tr("eval-gap.explanation")),
        ],
        notes=[
            tr("eval-gap.note_gap"),
            tr(
                "eval-gap.note_model",
                data=data_summary(data),
                lr=lr,
                momentum=SGD_MOMENTUM,
                batch=batch_size,
            ),
            tr("eval-gap.note_train_mode", batch=batch_size),
            tr("eval-gap.note_recal", chunk=RECALIBRATION_BATCH),
        ],
    )
