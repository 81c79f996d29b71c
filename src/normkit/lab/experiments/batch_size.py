"""``batch-size``: test accuracy of a small CNN against the batch size, per normalization.

The Group Norm paper's argument (Wu & He 2018, https://arxiv.org/abs/1803.08494, Figure 1):
BatchNorm's statistics come from the batch, so its accuracy depends on the batch size,
while GroupNorm, LayerNorm and InstanceNorm compute statistics per example and do not.
BatchRenorm and GhostBatchNorm are included when ``normkit.nn`` provides them.

Protocol (the paper's, at lab scale): every run sees the same number of training examples,
``steps x 32`` (``--steps`` counts updates at the reference batch of 32, so a run with
batch B makes ``steps x 32 / B`` updates), and the learning rate scales linearly with the
batch size (``lr x B / 32``, Goyal et al. 2017), SGD with momentum 0.9 and cosine decay.
All runs start from the same convolution weights; at a given batch size all
normalizations see the same mini-batches.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from normkit.lab.datasets import load_dataset
from normkit.lab.errors import LabError
from normkit.lab.experiments._common import parse_list, pct
from normkit.lab.models import NORM_LABELS, available_norms, cnn
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Option, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, derive_seed, train

REFERENCE_BATCH = 32
MOMENTUM = 0.9


def _parse_norms(text: str) -> tuple[str, ...]:
    return parse_list(text, str, "--norms")


def _check_norms(norms) -> None:
    if norms is None:
        return
    known = available_norms()
    for kind in norms:
        if kind not in known:
            missing = kind in NORM_LABELS
            reason = (
                f"{NORM_LABELS[kind]} ({kind}) is not available in this normkit"
                if missing
                else f"unknown normalization {kind!r}"
            )
            raise LabError(f"--norms: {reason}; choose from {','.join(known)}")


def run_settings(cfg: Config, batch_size: int) -> tuple[int, float]:
    """(updates, learning rate) of the run with ``batch_size``: same examples, linear lr."""
    steps = max(1, round(cfg.steps * REFERENCE_BATCH / batch_size))
    return steps, cfg.lr[0] * batch_size / REFERENCE_BATCH


@experiment(
    "batch-size",
    title="Accuracy against batch size for each normalization (Group Norm paper, Figure 1)",
    summary="small CNN accuracy vs batch size 2..64 for BN, GN, LN, IN, none (+BRN, GBN)",
    defaults=Config(steps=600, lr=(0.05,), batch_size=(2, 4, 8, 16, 32, 64), data="mnist1d"),
    smoke={"steps": 4, "batch_size": (2, 8)},
    sweeps=("batch_size",),
    options=(
        Option(
            "norms",
            None,
            "comma-separated normalizations: bn,gn,ln,in,none (+brn,gbn when present); "
            "default all available",
            _parse_norms,
            _check_norms,
        ),
    ),
)
def run(cfg: Config, out_dir: Path) -> Result:
    data = load_dataset(cfg.data)
    norms = list(cfg.options["norms"] or available_norms())
    sizes = sorted(set(cfg.batch_size))
    accuracy_table: dict[str, dict[int, float]] = {k: {} for k in norms}
    records = []
    for kind in norms:
        for b in sizes:
            steps, lr = run_settings(cfg, b)
            torch.manual_seed(derive_seed(cfg.seed, "init"))  # same conv weights for every run
            model = cnn(data.input_shape, data.num_classes, norm=kind, steps=steps)
            start = time.perf_counter()
            with progress(f"batch-size: {NORM_LABELS[kind]} B={b}", steps) as update:
                info = train(
                    model,
                    data,
                    steps=steps,
                    batch_size=b,
                    lr=lr,
                    momentum=MOMENTUM,
                    schedule="cosine",
                    seed=derive_seed(cfg.seed, "batches", b),
                    on_step=update,
                )
            acc = accuracy(model, data.x_test, data.y_test)
            accuracy_table[kind][b] = acc
            records.append(
                {
                    "norm": kind,
                    "label": NORM_LABELS[kind],
                    "batch_size": b,
                    "updates": steps,
                    "lr": lr,
                    "test_accuracy": acc,
                    "final_loss": info["loss"],
                    "diverged": info["diverged"],
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )

    columns = ["normalization", *(f"B={b}" for b in sizes)]
    rows = [[NORM_LABELS[k], *(pct(accuracy_table[k][b]) for b in sizes)] for k in norms]
    headline = _headline(accuracy_table, norms, sizes)
    panel = Panel(
        f"{data.name}: test accuracy after {cfg.steps * REFERENCE_BATCH:,} examples",
        "batch size",
        "test accuracy",
        logx=2,
        percent=True,
    )
    for kind in norms:
        panel.series.append(
            Series(NORM_LABELS[kind], sizes, [accuracy_table[kind][b] for b in sizes], marker="o")
        )
    save_panels(out_dir / "batch_size.png", [panel])
    missing = [NORM_LABELS[k] for k in ("brn", "gbn") if k not in available_norms()]
    notes = [
        f"Data: {data.summary()}. Model: 3 x [Conv(k=3) -> norm -> ReLU -> MaxPool(2)] with 32 "
        "channels, then a linear classifier; GroupNorm uses 8 groups, LayerNorm normalises "
        "over (C, L), InstanceNorm is affine.",
        f"Every run sees {cfg.steps * REFERENCE_BATCH:,} training examples: batch B makes "
        f"{cfg.steps} x 32 / B updates with lr {cfg.lr[0]} x B / 32 (SGD, momentum "
        f"{MOMENTUM}, cosine decay). Test accuracy in eval mode (running statistics).",
        "One seed per cell: differences of a point or two are within run-to-run noise.",
    ]
    if missing:
        notes.append(f"Not in this normkit yet (skipped): {', '.join(missing)}.")
    return Result(
        experiment="batch-size",
        title="Accuracy against batch size for each normalization (Group Norm paper, Figure 1)",
        headline=headline,
        columns=columns,
        rows=rows,
        metrics={
            "batch_sizes": sizes,
            "norms": norms,
            "examples_per_run": cfg.steps * REFERENCE_BATCH,
            "test_accuracy": {k: {str(b): accuracy_table[k][b] for b in sizes} for k in norms},
            "dataset": data.summary(),
        },
        records=records,
        figures=[
            Figure(
                "batch_size.png",
                "Test accuracy against batch size (log scale) for each normalization, same "
                "number of training examples per run.",
            )
        ],
        notes=notes,
    )


def _headline(table: dict[str, dict[int, float]], norms: list[str], sizes: list[int]) -> str:
    small, large = sizes[0], REFERENCE_BATCH if REFERENCE_BATCH in sizes else sizes[-1]
    if "bn" in norms and "gn" in norms:
        bn, gn = table["bn"], table["gn"]
        text = f"BatchNorm vs GroupNorm: {pct(bn[small])} vs {pct(gn[small])} at batch {small}"
        if large != small:
            text += f", {pct(bn[large])} vs {pct(gn[large])} at batch {large}"
        return text
    parts = [f"{NORM_LABELS[k]} {pct(table[k][small])}" for k in norms]
    return f"at batch {small}: " + ", ".join(parts)
