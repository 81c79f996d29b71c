"""``lr``: final test accuracy against the learning rate, with and without BatchNorm.

The BN paper's practical claim (Ioffe & Szegedy 2015, section 3.3): with BatchNorm a
network tolerates much larger learning rates, because the normalization undoes a change
of scale in the weights below it. Here the same small CNN, with and without BN, starts
from the same weights and sees the same mini-batches at each learning rate of a log grid
(SGD, momentum 0.9, cosine decay from the given rate). A run whose loss becomes NaN/Inf
is reported as diverged.
"""

from __future__ import annotations

from pathlib import Path

import torch

from normkit.lab.datasets import load_dataset
from normkit.lab.experiments._common import data_summary, pct
from normkit.lab.i18n import tr
from normkit.lab.models import cnn, copy_init
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, derive_seed, train

MOMENTUM = 0.9
NETWORKS = {"without BN": "none", "with BN": "bn"}  # identifier -> norm kind
LABELS = {"without BN": "ics.without_bn", "with BN": "ics.with_bn"}
USABLE = 0.9  # a rate is "usable" when it reaches this fraction of the network's best accuracy


@experiment(
    "lr",
    title=tr("lr.title", lang="en"),
    summary="CNN final accuracy vs learning rate with and without BN (BN tolerates larger rates)",
    defaults=Config(
        steps=1000,
        lr=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
        batch_size=(32,),
        data="mnist1d",
    ),
    smoke={"steps": 10, "lr": (0.01, 1.0)},
    sweeps=("lr",),
)
def run(cfg: Config, out_dir: Path) -> Result:
    data = load_dataset(cfg.data)
    rates = sorted(set(cfg.lr))
    batch_size = cfg.batch_size[0]
    acc: dict[str, dict[float, float]] = {name: {} for name in NETWORKS}
    diverged: dict[str, dict[float, bool]] = {name: {} for name in NETWORKS}
    records = []
    for lr in rates:
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        models = {
            name: cnn(data.input_shape, data.num_classes, norm=k) for name, k in NETWORKS.items()
        }
        copy_init(models["without BN"], models["with BN"])
        for name, model in models.items():
            with progress(f"lr: {name} lr={lr:g}", cfg.steps) as update:
                info = train(
                    model,
                    data,
                    steps=cfg.steps,
                    batch_size=batch_size,
                    lr=lr,
                    momentum=MOMENTUM,
                    schedule="cosine",
                    seed=derive_seed(cfg.seed, "batches"),
                    on_step=update,
                )
            acc[name][lr] = accuracy(model, data.x_test, data.y_test)
            diverged[name][lr] = bool(info["diverged"])
            records.append(
                {
                    "network": name,
                    "lr": lr,
                    "test_accuracy": acc[name][lr],
                    "final_loss": info["loss"],
                    "diverged": info["diverged"],
                    "updates": info["steps"],
                }
            )

    def cell(name: str, lr: float) -> str:
        return tr("common.diverged") if diverged[name][lr] else pct(acc[name][lr])

    rows = [[f"{lr:g}", *(cell(name, lr) for name in NETWORKS)] for lr in rates]
    summary = {name: _usable(acc[name], rates) for name in NETWORKS}
    headline = "; ".join(
        tr(
            "lr.headline_part",
            network=tr(LABELS[name]),
            best=pct(s["best"]),
            best_lr=f"{s['best_lr']:g}",
            usable=f"{USABLE:.0%}",
            low=f"{s['low']:g}",
            high=f"{s['high']:g}",
        )
        for name, s in reversed(list(summary.items()))
    )
    panel = Panel(
        tr("lr.panel", dataset=data.name, steps=cfg.steps, batch=batch_size),
        tr("lr.xlabel"),
        tr("common.test_accuracy"),
        logx=10,
        percent=True,
        ylim=(0, 1.02),
    )
    for name in NETWORKS:
        panel.series.append(
            Series(tr(LABELS[name]), rates, [acc[name][lr] for lr in rates], marker="o")
        )
    save_panels(out_dir / "lr.png", [panel])
    return Result(
        experiment="lr",
        title=tr("lr.title"),
        headline=headline,
        columns=[tr("lr.col_rate"), *(tr(LABELS[name]) for name in NETWORKS)],
        rows=rows,
        metrics={
            "learning_rates": rates,
            "test_accuracy": {n: [acc[n][lr] for lr in rates] for n in NETWORKS},
            "diverged": {n: [diverged[n][lr] for lr in rates] for n in NETWORKS},
            "usable_range": summary,
            "dataset": data.summary(),
        },
        records=records,
        figures=[
            Figure("lr.png", tr("lr.caption"), tr("lr.explanation")),
        ],
        notes=[
            tr("lr.note_model", data=data_summary(data), steps=cfg.steps, batch=batch_size),
            tr("lr.note_usable", usable=f"{USABLE:.0%}"),
        ],
    )


def _usable(acc: dict[float, float], rates: list[float]) -> dict[str, float]:
    """Best rate, and the contiguous range of rates around it reaching USABLE x best."""
    best = max(range(len(rates)), key=lambda i: acc[rates[i]])
    threshold = USABLE * acc[rates[best]]
    low = high = best
    while low > 0 and acc[rates[low - 1]] >= threshold:
        low -= 1
    while high < len(rates) - 1 and acc[rates[high + 1]] >= threshold:
        high += 1
    return {
        "best": acc[rates[best]],
        "best_lr": rates[best],
        "low": rates[low],
        "high": rates[high],
    }
