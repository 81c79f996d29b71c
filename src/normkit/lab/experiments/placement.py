"""``placement``: BatchNorm before the activation versus after it, same budget.

The BN paper normalises the pre-activation (Conv -> BN -> ReLU); many tutorials and some
practitioners put BN after the nonlinearity (Conv -> ReLU -> BN). Both variants, and a
network without normalization for reference, are trained from the same initial weights on
the same mini-batches, for several seeds; test accuracy is recorded during training.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from normkit.lab.datasets import load_dataset
from normkit.lab.errors import LabError
from normkit.lab.experiments._common import data_summary, first_reaching, never_or, pct
from normkit.lab.i18n import tr
from normkit.lab.models import cnn, copy_init
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Option, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, derive_seed, eval_steps, train

MOMENTUM = 0.9
VARIANTS = {  # identifier -> (norm, placement)
    "BN before ReLU": ("bn", "before"),
    "BN after ReLU": ("bn", "after"),
    "no norm": ("none", "before"),
}
LABELS = {
    "BN before ReLU": "placement.before",
    "BN after ReLU": "placement.after",
    "no norm": "norm.none",
}


def _check_seeds(seeds: int) -> None:
    if not isinstance(seeds, int) or seeds < 1:
        raise LabError(f"--seeds must be a positive integer, got {seeds!r}")


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LabError(f"--seeds must be a positive integer, got {text!r}") from None


@experiment(
    "placement",
    title=tr("placement.title", lang="en"),
    summary="CNN with BN before vs after ReLU (and no norm), same budget, several seeds",
    defaults=Config(steps=1500, lr=(0.05,), batch_size=(32,), data="mnist1d", eval_every=50),
    smoke={"steps": 20, "eval_every": 10},
    options=(Option("seeds", 3, "number of seeds (runs per variant)", _parse_int, _check_seeds),),
)
def run(cfg: Config, out_dir: Path) -> Result:
    data = load_dataset(cfg.data)
    seeds = cfg.options["seeds"]
    steps = eval_steps(cfg.steps, cfg.eval_every)
    curves: dict[str, list[list[float]]] = {label: [] for label in VARIANTS}
    records = []
    for i in range(seeds):
        torch.manual_seed(derive_seed(cfg.seed, "init", i))
        models = {
            label: cnn(data.input_shape, data.num_classes, norm=norm, placement=where)
            for label, (norm, where) in VARIANTS.items()
        }
        for label, model in models.items():  # before any training: shared initial weights
            if label != "BN before ReLU":
                copy_init(models["BN before ReLU"], model)
        for label, model in models.items():
            curve: list[float] = []

            def on_eval(step: int, m, curve=curve) -> None:
                curve.append(accuracy(m, data.x_test, data.y_test))

            with progress(f"placement: {label} seed {i}", cfg.steps) as update:
                train(
                    model,
                    data,
                    steps=cfg.steps,
                    batch_size=cfg.batch_size[0],
                    lr=cfg.lr[0],
                    momentum=MOMENTUM,
                    schedule="cosine",
                    seed=derive_seed(cfg.seed, "batches", i),
                    eval_every=cfg.eval_every,
                    on_eval=on_eval,
                    on_step=update,
                )
            curves[label].append(curve)
            records += [
                {"variant": label, "seed": i, "step": s, "test_accuracy": a}
                for s, a in zip(steps, curve, strict=True)
            ]

    mean = {
        k: [statistics.fmean(col) for col in zip(*runs, strict=True)] for k, runs in curves.items()
    }
    early = steps[max(1, len(steps) // 10)] if len(steps) > 1 else steps[0]
    i_early = steps.index(early)
    rows, finals = [], {}
    for label, runs in curves.items():
        final = [run[-1] for run in runs]
        finals[label] = final
        spread = statistics.stdev(final) if len(final) > 1 else 0.0
        reach = first_reaching(steps, mean[label], 0.9)
        rows.append(
            [
                tr(LABELS[label]),
                f"{pct(statistics.fmean(final))} ± {100 * spread:.1f}",
                f"{pct(min(final))} - {pct(max(final))}",
                pct(mean[label][i_early]),
                never_or(reach),
            ]
        )
    headline = tr(
        "placement.headline",
        results=", ".join(
            f"{tr(LABELS[label])} {pct(statistics.fmean(finals[label]))}" for label in VARIANTS
        ),
        seeds=seeds,
        plural="s" if seeds > 1 else "",
        steps=cfg.steps,
    )

    panel = Panel(
        tr("placement.panel", dataset=data.name, seeds=seeds),
        tr("common.training_step"),
        tr("common.test_accuracy"),
        percent=True,
    )
    for label, runs in curves.items():
        low = [min(col) for col in zip(*runs, strict=True)]
        high = [max(col) for col in zip(*runs, strict=True)]
        panel.series.append(Series(tr(LABELS[label]), steps, mean[label], band=(low, high)))
    zoom = Panel(
        tr("placement.panel_zoom"),
        tr("common.training_step"),
        tr("common.test_accuracy"),
        percent=True,
    )
    half = len(steps) // 2
    for label in VARIANTS:
        zoom.series.append(Series(tr(LABELS[label]), steps[half:], mean[label][half:], marker="."))
    save_panels(out_dir / "placement.png", [panel, zoom])
    return Result(
        experiment="placement",
        title=tr("placement.title"),
        headline=headline,
        columns=[
            tr("common.variant"),
            tr("placement.col_final"),
            tr("placement.col_range"),
            tr("common.acc_at_step", step=early),
            tr("placement.col_reach"),
        ],
        rows=rows,
        metrics={
            "steps": steps,
            "seeds": seeds,
            "test_accuracy": curves,
            "mean_test_accuracy": mean,
            "dataset": data.summary(),
        },
        records=records,
        figures=[
            Figure("placement.png", tr("placement.caption"), tr("placement.explanation")),
        ],
        notes=[
            tr("placement.note_model", data=data_summary(data)),
            tr(
                "placement.note_training",
                lr=cfg.lr[0],
                momentum=MOMENTUM,
                batch=cfg.batch_size[0],
            ),
        ],
    )
