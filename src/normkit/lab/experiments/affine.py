"""``affine``: what BatchNorm's learnable scale and shift (gamma, beta) do.

BatchNorm computes ``y = gamma * (x - mean) / sqrt(var + eps) + beta``. Normalizing alone
would pin every unit's input to mean 0 and variance 1, the nearly linear middle of a
sigmoid; gamma and beta, learned like weights, let each unit move away from that (up to
undoing the normalization, gamma = sqrt(var + eps), beta = mean). Every framework starts
them at gamma = 1, beta = 0, so that a fresh BN layer is a plain normalization.

The ics network (MLP 3 x 100 sigmoid with BN between each Linear and its sigmoid) is
trained from the same weights on the same mini-batches four times:

- ``learnable``: gamma and beta learned, starting at 1 and 0 (what every framework does);
- ``no affine``: BatchNorm(affine=False), no gamma and beta at all;
- ``gamma 0, beta 1``: learned, but starting at gamma = 0, beta = 1 (what one widely read
  tutorial states as the initial values);
- ``gamma fixed at 0``: gamma held at 0 (not learned), beta learned from 1.

Recorded: test accuracy over training (eval mode), and, after training, every layer's
learned gamma and beta (median and 15th-85th percentiles over its units, mean distance
from 1 and from 0).

With gamma = 0 everywhere, training cannot start: a BN layer with gamma = 0 outputs beta
for every example, so the next layer's input is the same for the whole batch, its x_hat
is 0 and its gamma gets no gradient (dgamma = sum(g * x_hat)); and the gradient passed
down through a layer is multiplied by its gamma, so the first layer's gamma gets none
either. Every gamma stays exactly 0 and only the last layer's bias learns: the two gamma = 0
variants give the same numbers. MNIST-1D by default: on scikit-learn's digits (``--data
digits``) the task is easy enough that BN without gamma and beta matches BN with them.

Protocol: MLP in-100-100-100-classes, Linear -> BatchNorm1d -> sigmoid, plain SGD (no
momentum) at ``--lr``, one initialisation of the Linear layers shared by the four
variants, the same mini-batches; test accuracy (eval mode) every ``--eval-every`` steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from normkit.lab.datasets import load_dataset
from normkit.lab.experiments._common import data_summary, first_reaching, never_or, pct
from normkit.lab.i18n import tr
from normkit.lab.models import copy_init, mlp, norm_layers
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, derive_seed, eval_steps, train

HIDDEN = (100, 100, 100)
# identifier -> (affine, gamma at start, beta at start, gamma learned)
VARIANTS = {
    "learnable": (True, 1.0, 0.0, True),
    "no affine": (False, None, None, False),
    "gamma 0, beta 1": (True, 0.0, 1.0, True),
    "gamma fixed at 0": (True, 0.0, 1.0, False),
}
LABELS = {
    "learnable": "affine.learnable",
    "no affine": "affine.no_affine",
    "gamma 0, beta 1": "affine.gamma0",
    "gamma fixed at 0": "affine.fixed0",
}


def build(variant: str, in_features: int, num_classes: int) -> torch.nn.Sequential:
    """The ics MLP with BatchNorm in ``variant``'s configuration of gamma and beta."""
    affine, gamma, beta, learned = VARIANTS[variant]
    model = mlp(in_features, num_classes, HIDDEN, activation="sigmoid", norm="bn", affine=affine)
    if affine:
        for bn in norm_layers(model):
            with torch.no_grad():
                bn.weight.fill_(gamma)
                bn.bias.fill_(beta)
            bn.weight.requires_grad_(learned)
    return model


def affine_stats(model: torch.nn.Module) -> list[dict[str, float]]:
    """Per BN layer: median and 15th/85th percentiles of gamma and beta over the units, and
    the mean distances ``mean |gamma - 1|`` and ``mean |beta|``."""
    layers = []
    for bn in norm_layers(model):
        if bn.weight is None:
            continue
        g = bn.weight.detach().double().numpy()
        b = bn.bias.detach().double().numpy()
        gp = np.percentile(g, [15, 50, 85])
        bp = np.percentile(b, [15, 50, 85])
        layers.append(
            {
                "gamma_p15": float(gp[0]),
                "gamma_median": float(gp[1]),
                "gamma_p85": float(gp[2]),
                "beta_p15": float(bp[0]),
                "beta_median": float(bp[1]),
                "beta_p85": float(bp[2]),
                "mean_abs_gamma_minus_1": float(np.abs(g - 1).mean()),
                "mean_abs_beta": float(np.abs(b).mean()),
            }
        )
    return layers


@experiment(
    "affine",
    title=tr("affine.title", lang="en"),
    summary="sigmoid MLP with BN with/without learnable gamma, beta (and gamma = 0): accuracy, learned values",
    defaults=Config(steps=2000, lr=(0.5,), batch_size=(60,), data="mnist1d", eval_every=50),
    smoke={"steps": 30, "eval_every": 10},
)
def run(cfg: Config, out_dir: Path) -> Result:
    data = load_dataset(cfg.data)
    lr, batch_size = cfg.lr[0], cfg.batch_size[0]
    in_features = math.prod(data.input_shape)
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    models = {v: build(v, in_features, data.num_classes) for v in VARIANTS}
    for variant, model in models.items():  # one initialisation of the Linear layers for all
        if variant != "learnable":
            copy_init(models["learnable"], model)
    steps = eval_steps(cfg.steps, cfg.eval_every)
    curves: dict[str, list[float]] = {}
    learned: dict[str, list[dict[str, float]]] = {}
    records = []
    for variant, model in models.items():
        curve: list[float] = []

        def on_eval(step: int, m, curve=curve) -> None:
            curve.append(accuracy(m, data.x_test, data.y_test))

        with progress(f"affine: {variant}", cfg.steps) as update:
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
        curves[variant] = curve
        learned[variant] = affine_stats(model)
        records += [
            {"variant": variant, "step": s, "test_accuracy": a}
            for s, a in zip(steps, curve, strict=True)
        ]
        for i, layer in enumerate(learned[variant], start=1):
            records.append({"variant": variant, "layer": i, **layer})

    early = min(steps, key=lambda s: (abs(s - 100), s))
    i_early = steps.index(early)
    rows = []
    for variant in VARIANTS:
        layers = learned[variant]
        rows.append(
            [
                tr(LABELS[variant]),
                pct(curves[variant][i_early]),
                pct(curves[variant][-1]),
                never_or(first_reaching(steps, curves[variant], 0.9)),
                _distance(layers, "mean_abs_gamma_minus_1"),
                _distance(layers, "mean_abs_beta"),
            ]
        )
    moved = learned["learnable"]
    headline = tr(
        "affine.headline",
        steps=cfg.steps,
        learnable=pct(curves["learnable"][-1]),
        no_affine=pct(curves["no affine"][-1]),
        gamma0=pct(curves["gamma 0, beta 1"][-1]),
        fixed0=pct(curves["gamma fixed at 0"][-1]),
        gamma_moved=_distance(moved, "mean_abs_gamma_minus_1"),
        beta_moved=_distance(moved, "mean_abs_beta"),
    )
    _figure(out_dir / "affine.png", steps, curves, learned, data.name)
    return Result(
        experiment="affine",
        title=tr("affine.title"),
        headline=headline,
        columns=[
            tr("common.variant"),
            tr("common.acc_at_step", step=early),
            tr("common.acc_at_step", step=cfg.steps),
            tr("common.steps_to", pct="90%"),
            tr("affine.col_gamma"),
            tr("affine.col_beta"),
        ],
        rows=rows,
        metrics={
            "steps": steps,
            "test_accuracy": curves,
            "learned": learned,
            "dataset": data.summary(),
        },
        records=records,
        figures=[Figure("affine.png", tr("affine.caption"), tr("affine.explanation"))],
        notes=[
            tr(
                "affine.note_model",
                data=data_summary(data),
                inputs=in_features,
                classes=data.num_classes,
                lr=lr,
                batch=batch_size,
            ),
            tr("affine.note_gamma0"),
            tr("affine.note_residual"),
        ],
    )


def _distance(layers: list[dict[str, float]], key: str) -> str:
    """``'0.12 / 0.34 / 0.56'`` (one value per layer), or '-' for a network without gamma/beta."""
    if not layers:
        return "-"
    return " / ".join(f"{layer[key]:.2f}" for layer in layers)


def _figure(path: Path, steps, curves, learned, dataset: str) -> None:
    acc = Panel(
        tr("affine.panel_accuracy"),
        tr("common.training_step"),
        tr("common.test_accuracy"),
        percent=True,
    )
    for variant in VARIANTS:
        acc.series.append(Series(tr(LABELS[variant]), steps, curves[variant]))
    panels = [acc]
    for letter, name, start in (("b", "gamma", 1.0), ("c", "beta", 0.0)):
        panel = Panel(
            tr(f"affine.panel_{name}", letter=letter),
            tr("affine.layer"),
            tr(f"affine.{name}_axis"),
            xticks=range(1, len(HIDDEN) + 1),
        )
        for variant in VARIANTS:
            layers = learned[variant]
            if not layers:
                continue
            x = list(range(1, len(layers) + 1))
            panel.series.append(
                Series(
                    tr(LABELS[variant]),
                    x,
                    [layer[f"{name}_median"] for layer in layers],
                    band=(
                        [layer[f"{name}_p15"] for layer in layers],
                        [layer[f"{name}_p85"] for layer in layers],
                    ),
                    marker="o",
                )
            )
        x_all = [1, len(HIDDEN)]
        panel.series.append(
            Series(
                tr("affine.start", value=f"{start:g}"),
                x_all,
                [start, start],
                style=":",
                color="#888888",
            )
        )
        panels.append(panel)
    save_panels(path, panels, suptitle=tr("affine.suptitle", dataset=dataset))
