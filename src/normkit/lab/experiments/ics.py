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
from normkit.lab.experiments._common import first_reaching, pct
from normkit.lab.models import copy_init, mlp
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Option, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, derive_seed, eval_steps, train
from normkit.tools import monitor

HIDDEN = (100, 100, 100)
PERCENTILES = (15, 50, 85)
NETWORKS = ("without BN", "with BN")


def _check_unit(unit: int) -> None:
    if not isinstance(unit, int) or not 0 <= unit < HIDDEN[-1]:
        raise LabError(f"--unit must be in [0, {HIDDEN[-1]}), got {unit!r}")


@experiment(
    "ics",
    title="Internal covariate shift: a sigmoid MLP with and without BatchNorm",
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
    headline = (
        f"with BN {pct(bn_c['test_accuracy'][i_early])} test accuracy at step {early}, "
        f"without {pct(plain_c['test_accuracy'][i_early])}; after {cfg.steps} steps "
        f"{pct(bn_c['test_accuracy'][-1])} vs {pct(plain_c['test_accuracy'][-1])}"
    )
    rows = []
    for name in NETWORKS:
        c = curves[name]
        reach = first_reaching(steps, c["test_accuracy"], 0.9)
        rows.append(
            [
                name,
                pct(c["test_accuracy"][i_early]),
                pct(c["test_accuracy"][-1]),
                "never" if reach is None else reach,
                "/".join(f"{c[f'p{p}'][-1]:+.2f}" for p in PERCENTILES),
            ]
        )
    columns = [
        "network",
        f"acc @ step {early}",
        f"acc @ step {cfg.steps}",
        "steps to 90%",
        "input p15/p50/p85",
    ]

    _figure(out_dir / "ics.png", steps, curves, data.name, unit)
    return Result(
        experiment="ics",
        title="Internal covariate shift: a sigmoid MLP with and without BatchNorm",
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
                "(a) test accuracy against training steps; (b, c) the 15th, 50th and 85th "
                f"percentiles of last-hidden-layer unit {unit}'s sigmoid input over the test "
                "set, without and with BatchNorm (the BN paper's Figure 1).",
            )
        ],
        notes=[
            f"Data: {data.summary()}. Model: MLP {in_features}-100-100-100-"
            f"{data.num_classes}, sigmoid, plain SGD lr {lr}, batch {batch_size}; both "
            "networks start from the same weights and see the same mini-batches.",
            "Percentiles are taken over the test set with the network in eval mode (BN "
            "normalises with its running statistics), at every evaluation, recorded with "
            "normkit.tools.monitor.",
            "The paper trains on MNIST for 50,000 steps; this lab-scale run shows the same "
            "shape in seconds.",
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
    acc = Panel("(a) test accuracy", "training step", "test accuracy", percent=True)
    for name in NETWORKS:
        acc.series.append(Series(name, steps, curves[name]["test_accuracy"]))
    bands = []
    values = [v for c in curves.values() for p in PERCENTILES for v in c[f"p{p}"]]
    pad = 0.05 * (max(values) - min(values) + 1e-9)
    ylim = (min(values) - pad, max(values) + pad)
    for letter, name in zip("bc", NETWORKS, strict=True):
        panel = Panel(
            f"({letter}) {name}: unit {unit}'s sigmoid input",
            "training step",
            "percentiles 15 / 50 / 85",
            ylim=ylim,
        )
        c = curves[name]
        panel.series = [
            Series("85th", steps, c["p85"], style="--", color="#888888"),
            Series("50th", steps, c["p50"], band=(c["p15"], c["p85"]), color="#0072B2"),
            Series("15th", steps, c["p15"], style=":", color="#888888"),
        ]
        bands.append(panel)
    save_panels(path, [acc, *bands], suptitle=f"MLP 3x100 sigmoid on {dataset}")
