"""``ics``: the BatchNorm paper's Figure 1 (Ioffe & Szegedy 2015, https://arxiv.org/abs/1502.03167).

An MLP with three hidden layers of 100 sigmoid units is trained with plain SGD twice from
the same initialisation and on the same mini-batches: once as is, once with BatchNorm
between each Linear layer and its sigmoid. Recorded at every evaluation:

(a) test accuracy (eval mode: BN uses its running statistics);
(b, c) the 15th, 50th and 85th percentiles of one last-hidden-layer unit's sigmoid input
    over the test set, for the network without and with BN. Without BN the distribution
    of that input drifts and widens as the earlier layers change ("internal covariate
    shift"); with BN it stays put.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from normkit.lab.datasets import load_dataset
from normkit.lab.errors import LabError
from normkit.lab.experiments._common import data_summary, first_reaching, never_or, pct
from normkit.lab.i18n import tr
from normkit.lab.models import copy_init, mlp
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Option, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, derive_seed, eval_steps, train
from normkit.tools import monitor

HIDDEN = (100, 100, 100)
PERCENTILES = (15, 50, 85)
NETWORKS = ("without BN", "with BN")  # identifiers in the results; labels via tr()
LABELS = {"without BN": "ics.without_bn", "with BN": "ics.with_bn"}


def _check_unit(unit: int) -> None:
    if not isinstance(unit, int) or not 0 <= unit < HIDDEN[-1]:
        raise LabError(f"--unit must be in [0, {HIDDEN[-1]}), got {unit!r}")


@experiment(
    "ics",
    title=tr("ics.title", lang="en"),
    summary="BN paper Figure 1: test accuracy and a sigmoid input's percentiles vs steps",
    defaults=Config(steps=2000, lr=(0.5,), batch_size=(60,), data="digits", eval_every=20),
    smoke={"steps": 30, "eval_every": 10},
    options=(Option("unit", 0, "which last-hidden-layer unit to follow", int, _check_unit),),
)
def run(cfg: Config, out_dir: Path) -> Result:
    data = load_dataset(cfg.data)
    lr, batch_size, unit = cfg.lr[0], cfg.batch_size[0], cfg.options["unit"]
    in_features = math.prod(data.input_shape)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    plain = mlp(in_features, data.num_classes, HIDDEN, activation="sigmoid", norm="none")
    with_bn = mlp(in_features, data.num_classes, HIDDEN, activation="sigmoid", norm="bn")
    copy_init(plain, with_bn)

    steps = eval_steps(cfg.steps, cfg.eval_every)
    curves: dict[str, dict[str, list[float]]] = {}
    records = []
    for name, model in zip(NETWORKS, (plain, with_bn), strict=True):
        last_sigmoid = [n for n, m in model.named_modules() if isinstance(m, nn.Sigmoid)][-1]
        curve: dict[str, list[float]] = {"test_accuracy": [], "p15": [], "p50": [], "p85": []}

        def on_eval(step: int, model: nn.Module, curve=curve, layer=last_sigmoid) -> None:
            curve["test_accuracy"].append(accuracy(model, data.x_test, data.y_test))
            qs = sigmoid_input_percentiles(model, layer, data.x_test, unit)
            for p, q in zip(PERCENTILES, qs, strict=True):
                curve[f"p{p}"].append(q)

        with progress(f"ics: {name}", cfg.steps) as update:
            train(
                model,
                data,
                steps=cfg.steps,
                batch_size=batch_size,
                lr=lr,
                seed=derive_seed(cfg.seed, "batches"),
                eval_every=cfg.eval_every,
                on_eval=on_eval,
                on_step=update,
            )
        curves[name] = curve
        for i, step in enumerate(steps[: len(curve["test_accuracy"])]):
            records.append({"network": name, "step": step, **{k: v[i] for k, v in curve.items()}})

    # The headline compares the networks at the evaluation closest to step 100.
    early = min(steps, key=lambda s: (abs(s - 100), s))
    i_early = steps.index(early)
    plain_c, bn_c = curves["without BN"], curves["with BN"]
    headline = tr(
        "ics.headline",
        bn_early=pct(bn_c["test_accuracy"][i_early]),
        early=early,
        plain_early=pct(plain_c["test_accuracy"][i_early]),
        steps=cfg.steps,
        bn_final=pct(bn_c["test_accuracy"][-1]),
        plain_final=pct(plain_c["test_accuracy"][-1]),
    )
    rows = []
    for name in NETWORKS:
        c = curves[name]
        reach = first_reaching(steps, c["test_accuracy"], 0.9)
        rows.append(
            [
                tr(LABELS[name]),
                pct(c["test_accuracy"][i_early]),
                pct(c["test_accuracy"][-1]),
                never_or(reach),
                "/".join(f"{c[f'p{p}'][-1]:+.2f}" for p in PERCENTILES),
            ]
        )
    columns = [
        tr("common.network"),
        tr("common.acc_at_step", step=early),
        tr("common.acc_at_step", step=cfg.steps),
        tr("common.steps_to", pct="90%"),
        tr("ics.col_percentiles"),
    ]

    _figure(out_dir / "ics.png", steps, curves, data.name, unit)
    return Result(
        experiment="ics",
        title=tr("ics.title"),
        headline=headline,
        columns=columns,
        rows=rows,
        metrics={
            "steps": steps,
            "unit": unit,
            "headline_step": early,
            "networks": curves,
            "dataset": data.summary(),
        },
        records=records,
        figures=[
            Figure(
                "ics.png",
                tr("ics.caption", unit=unit),
                tr("ics.explanation"),
            )
        ],
        notes=[
            tr(
                "ics.note_model",
                data=data_summary(data),
                inputs=in_features,
                classes=data.num_classes,
                lr=lr,
                batch=batch_size,
            ),
            tr("ics.note_percentiles"),
            tr("ics.note_scale"),
        ],
    )


@torch.no_grad()
def sigmoid_input_percentiles(model: nn.Module, layer: str, x, unit: int) -> list[float]:
    """15th/50th/85th percentiles of ``unit`` of ``layer``'s input over ``x``, eval mode.

    Recorded with :func:`normkit.tools.monitor` (every value, no sampling); the model's
    train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    try:
        with monitor(
            model, layers=[layer], channel=unit, max_samples=len(x), step_on="manual"
        ) as mon:
            model(x)
    finally:
        model.train(was_training)
    (record,) = mon.records
    return [record.p15, record.p50, record.p85]


def _figure(path: Path, steps, curves, dataset: str, unit: int) -> None:
    acc = Panel(
        tr("ics.panel_accuracy"),
        tr("common.training_step"),
        tr("common.test_accuracy"),
        percent=True,
    )
    for name in NETWORKS:
        acc.series.append(Series(tr(LABELS[name]), steps, curves[name]["test_accuracy"]))
    bands = []
    values = [v for c in curves.values() for p in PERCENTILES for v in c[f"p{p}"]]
    pad = 0.05 * (max(values) - min(values) + 1e-9)
    ylim = (min(values) - pad, max(values) + pad)
    for letter, name in zip("bc", NETWORKS, strict=True):
        panel = Panel(
            tr("ics.panel_input", letter=letter, network=tr(LABELS[name]), unit=unit),
            tr("common.training_step"),
            tr("ics.percentiles_axis"),
            ylim=ylim,
        )
        c = curves[name]
        panel.series = [
            Series(tr("ics.p85"), steps, c["p85"], style="--", color="#888888"),
            Series(tr("ics.p50"), steps, c["p50"], band=(c["p15"], c["p85"]), color="#0072B2"),
            Series(tr("ics.p15"), steps, c["p15"], style=":", color="#888888"),
        ]
        bands.append(panel)
    save_panels(path, [acc, *bands], suptitle=tr("ics.suptitle", dataset=dataset))
