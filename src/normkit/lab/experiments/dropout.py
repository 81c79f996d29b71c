"""``dropout``: BatchNorm, dropout, both or neither, and the generalization gap.

The BN paper (section 4.2.1) reports that with BatchNorm dropout could be removed or
reduced, since the noise of batch statistics already regularizes; later work (Li et al.
2019, "Understanding the disharmony between dropout and batch normalization") showed
dropout placed before BatchNorm shifts the variance BN sees between training and test.
This experiment trains an MLP that overfits its data four ways, from the same weights
on the same mini-batches, for several seeds:

- no regularization: ``Linear -> ReLU``;
- dropout alone: ``Linear -> ReLU -> Dropout(p)``;
- BN alone: ``Linear -> BN -> ReLU``;
- BN and dropout: ``Linear -> BN -> ReLU -> Dropout(p)`` (dropout after BN's
  normalization and the activation, the order usually recommended).

Measured over training: accuracy on the whole training set and on the test set (eval
mode: no dropout, BN with its running statistics) and their difference, the
generalization gap. MNIST-1D suits this: an MLP reaches about 99% on its 4,000 training
sequences and about 70% on the test set.

Protocol: MLP 40-512-512-10, SGD with momentum 0.9 and cosine decay from ``--lr``, dropout
probability ``--p`` (default 0.2), ``--seeds`` seeds (default 3; each seed its own initial
weights and batch order, shared by the four variants); train and test accuracy every
``--eval-every`` steps.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch

from normkit.lab.datasets import load_dataset
from normkit.lab.errors import LabError
from normkit.lab.experiments._common import data_summary, pct
from normkit.lab.i18n import tr
from normkit.lab.models import copy_init, mlp
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Option, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, derive_seed, eval_steps, train

HIDDEN = (512, 512)
MOMENTUM = 0.9
VARIANTS = {  # identifier -> (norm, dropout on)
    "none": ("none", False),
    "dropout": ("none", True),
    "BN": ("bn", False),
    "BN + dropout": ("bn", True),
}
LABELS = {
    "none": "dropout.none",
    "dropout": "dropout.dropout",
    "BN": "dropout.bn",
    "BN + dropout": "dropout.both",
}


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LabError(f"--seeds must be a positive integer, got {text!r}") from None


def _check_seeds(seeds: int) -> None:
    if not isinstance(seeds, int) or seeds < 1:
        raise LabError(f"--seeds must be a positive integer, got {seeds!r}")


def _parse_p(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LabError(f"--p must be a number in (0, 1), got {text!r}") from None


def _check_p(p: float) -> None:
    if not isinstance(p, int | float) or not 0 < p < 1:
        raise LabError(f"--p must be a number in (0, 1), got {p!r}")


@experiment(
    "dropout",
    title=tr("dropout.title", lang="en"),
    summary="MLP with neither, dropout, BN, or BN + dropout: train/test accuracy and the gap, several seeds",
    defaults=Config(steps=1500, lr=(0.05,), batch_size=(32,), data="mnist1d", eval_every=100),
    smoke={"steps": 20, "eval_every": 10, "options": {"seeds": 2}},
    options=(
        Option("p", 0.2, "dropout probability", _parse_p, _check_p),
        Option("seeds", 3, "number of seeds (runs per variant)", _parse_int, _check_seeds),
    ),
)
def run(cfg: Config, out_dir: Path) -> Result:
    data = load_dataset(cfg.data)
    p, seeds = cfg.options["p"], cfg.options["seeds"]
    in_features = math.prod(data.input_shape)
    steps = eval_steps(cfg.steps, cfg.eval_every)
    curves: dict[str, dict[str, list[list[float]]]] = {
        v: {"train_accuracy": [], "test_accuracy": []} for v in VARIANTS
    }
    records = []
    for seed in range(seeds):
        torch.manual_seed(derive_seed(cfg.seed, "init", seed))
        models = {
            v: mlp(
                in_features,
                data.num_classes,
                HIDDEN,
                activation="relu",
                norm=norm,
                dropout=p if drop else 0.0,
            )
            for v, (norm, drop) in VARIANTS.items()
        }
        for v, model in models.items():
            if v != "none":
                copy_init(models["none"], model)
        for v, model in models.items():
            train_curve: list[float] = []
            test_curve: list[float] = []

            def on_eval(step: int, m, train_curve=train_curve, test_curve=test_curve) -> None:
                train_curve.append(accuracy(m, data.x_train, data.y_train))
                test_curve.append(accuracy(m, data.x_test, data.y_test))

            with progress(f"dropout: {v} seed {seed}", cfg.steps) as update:
                train(
                    model,
                    data,
                    steps=cfg.steps,
                    batch_size=cfg.batch_size[0],
                    lr=cfg.lr[0],
                    momentum=MOMENTUM,
                    schedule="cosine",
                    seed=derive_seed(cfg.seed, "batches", seed),
                    eval_every=cfg.eval_every,
                    on_eval=on_eval,
                    on_step=update,
                )
            curves[v]["train_accuracy"].append(train_curve)
            curves[v]["test_accuracy"].append(test_curve)
            records += [
                {
                    "variant": v,
                    "seed": seed,
                    "step": s,
                    "train_accuracy": a,
                    "test_accuracy": b,
                    "gap": a - b,
                }
                for s, a, b in zip(steps, train_curve, test_curve, strict=True)
            ]

    summary = {v: _final(c) for v, c in curves.items()}
    rows = [
        [
            tr(LABELS[v]),
            _mean_sd(s["train"]),
            _mean_sd(s["test"]),
            _points(s["gap"]),
        ]
        for v, s in summary.items()
    ]
    headline = tr(
        "dropout.headline",
        seeds=seeds,
        results="; ".join(
            tr(
                "dropout.headline_part",
                variant=tr(LABELS[v]),
                test=pct(statistics.fmean(s["test"])),
                gap=f"{100 * statistics.fmean(s['gap']):.1f}",
            )
            for v, s in summary.items()
        ),
    )
    _figure(out_dir / "dropout.png", steps, curves, data.name, seeds)
    return Result(
        experiment="dropout",
        title=tr("dropout.title"),
        headline=headline,
        columns=[
            tr("common.variant"),
            tr("dropout.col_train"),
            tr("dropout.col_test"),
            tr("dropout.col_gap"),
        ],
        rows=rows,
        metrics={
            "steps": steps,
            "seeds": seeds,
            "p": p,
            "curves": curves,
            "final": summary,
            "dataset": data.summary(),
        },
        records=records,
        figures=[Figure("dropout.png", tr("dropout.caption", p=p), tr("dropout.explanation"))],
        notes=[
            tr(
                "dropout.note_model",
                data=data_summary(data),
                inputs=in_features,
                hidden="-".join(map(str, HIDDEN)),
                classes=data.num_classes,
                p=p,
            ),
            tr(
                "dropout.note_training",
                lr=cfg.lr[0],
                momentum=MOMENTUM,
                batch=cfg.batch_size[0],
                steps=cfg.steps,
            ),
            tr("dropout.note_eval"),
        ],
    )


def _final(c: dict[str, list[list[float]]]) -> dict[str, list[float]]:
    train_acc = [run[-1] for run in c["train_accuracy"]]
    test_acc = [run[-1] for run in c["test_accuracy"]]
    return {
        "train": train_acc,
        "test": test_acc,
        "gap": [a - b for a, b in zip(train_acc, test_acc, strict=True)],
    }


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{pct(statistics.fmean(values))} ± {100 * sd:.1f}"


def _points(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"


def _mean(runs: list[list[float]]) -> list[float]:
    return [statistics.fmean(col) for col in zip(*runs, strict=True)]


def _figure(path: Path, steps, curves, dataset: str, seeds: int) -> None:
    test = Panel(
        tr("dropout.panel_test"),
        tr("common.training_step"),
        tr("common.test_accuracy"),
        percent=True,
    )
    gap = Panel(tr("dropout.panel_gap"), tr("common.training_step"), tr("dropout.gap_axis"))
    for v, c in curves.items():
        runs = c["test_accuracy"]
        low = [min(col) for col in zip(*runs, strict=True)]
        high = [max(col) for col in zip(*runs, strict=True)]
        test.series.append(Series(tr(LABELS[v]), steps, _mean(runs), band=(low, high)))
        gaps = [
            [100 * (a - b) for a, b in zip(tr_run, te_run, strict=True)]
            for tr_run, te_run in zip(c["train_accuracy"], c["test_accuracy"], strict=True)
        ]
        gap.series.append(
            Series(
                tr(LABELS[v]),
                steps,
                _mean(gaps),
                band=(
                    [min(col) for col in zip(*gaps, strict=True)],
                    [max(col) for col in zip(*gaps, strict=True)],
                ),
            )
        )
    save_panels(path, [test, gap], suptitle=tr("dropout.suptitle", dataset=dataset, seeds=seeds))
