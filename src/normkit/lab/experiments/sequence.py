"""``sequence``: BatchNorm over padded variable-length sequences, with and without a mask.

Speech, text-to-speech and time-series models normalize batches of sequences of different
lengths, padded to a common length. A plain BatchNorm counts the padded frames in its mean
and variance, in training and in its running statistics: what a sequence's frames are
normalized with depends on how much padding its batch carries. A masked BatchNorm
(``nk.nn.BatchNorm1d(C)(x, mask=m)``) takes its statistics from the valid frames only.

Data: MNIST-1D sequences (length 40), each cropped once to a random window of
``--min-length`` to 40 frames (seeded; train and test alike) and padded with zeros; a
training batch is padded to its longest sequence, as a data loader does.

Model: 3 x [Conv1d(k=5, dilation 1/2/4, 32 channels) -> norm -> ReLU -> zero the padded
frames] -> mean over the valid frames -> Linear. Zeroing the padded frames after every block
(what careful sequence code does) keeps the convolutions from reading anything but zeros
there, so the only way padding can reach a prediction is through a normalization's
statistics. Four normalizations: plain BatchNorm (statistics over all frames), masked
BatchNorm (valid frames only), LayerNorm over the channels of each frame (``nk.nn.LayerNorm``;
no batch statistics at all) and none. SGD with momentum 0.9, cosine decay; all four start
from the same convolution weights and see the same batches.

Measured on the test set, whose batches keep their composition and get 0 to 160 extra
padded frames:

- accuracy in eval mode (running statistics) and in train mode (the statistics of each
  test batch: what the network computes during training), against the extra padding;
- the train/eval gap over training, train-mode minus eval-mode test accuracy.

With masked BatchNorm the network's outputs do not depend on the padding at all (same
predictions whatever the extra padding); with plain BatchNorm they do whenever the batch
statistics are used, and its running statistics average batches whose padding varied.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

import normkit.nn as nknn
from normkit.lab.datasets import Dataset, load_dataset
from normkit.lab.errors import LabError
from normkit.lab.experiments._common import data_summary, pct
from normkit.lab.i18n import tr
from normkit.lab.models import copy_init
from normkit.lab.plots import Panel, Series, save_panels
from normkit.lab.registry import Config, Figure, Option, Result, experiment
from normkit.lab.runner import progress
from normkit.lab.training import accuracy, derive_seed, eval_steps, train

CHANNELS = 32
KERNEL = 5
DILATIONS = (1, 2, 4)
MOMENTUM = 0.9
EXTRA_PADDING = (0, 20, 40, 80, 160)  # frames appended to every test batch
VARIANTS = ("bn", "masked", "ln", "none")  # identifiers in the results
LABELS = {v: f"sequence.{v}" for v in VARIANTS}


class SequenceNet(nn.Module):
    """The classifier on padded batches.

    Input ``(N, C + 1, T)``: the ``C`` channels of each sequence, left-aligned and padded
    with zeros, and a last channel holding the mask (1 at valid frames). The batch is cut
    to its longest sequence plus ``extra_padding`` zero frames (the padding a data loader
    would give it), then::

        h = x;  for each block: h = relu(norm(conv(h))) * mask
        logits = linear(sum_valid(h) / length)
    """

    def __init__(self, in_channels: int, num_classes: int, norm: str) -> None:
        super().__init__()
        if norm not in VARIANTS:
            raise LabError(f"unknown sequence norm {norm!r}: expected one of {VARIANTS}")
        self.norm = norm
        self.extra_padding = 0
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_channels
        for dilation in DILATIONS:
            self.convs.append(
                nn.Conv1d(width, CHANNELS, KERNEL, padding=dilation * (KERNEL // 2),
                          dilation=dilation)
            )  # fmt: skip
            self.norms.append(_norm_layer(norm))
            width = CHANNELS
        self.head = nn.Linear(CHANNELS, num_classes)

    def forward(self, packed: Tensor) -> Tensor:
        x, mask = padded_batch(packed, self.extra_padding)
        valid = mask.unsqueeze(1).to(x.dtype)
        h = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = conv(h)
            if self.norm == "masked":
                h = norm(h, mask=mask)
            elif self.norm == "ln":
                h = norm(h.transpose(1, 2)).transpose(1, 2)
            else:
                h = norm(h)
            h = torch.relu(h) * valid
        pooled = h.sum(-1) / valid.sum(-1)
        return self.head(pooled)


def _norm_layer(kind: str) -> nn.Module:
    if kind in ("bn", "masked"):
        return nknn.BatchNorm1d(CHANNELS)
    if kind == "ln":
        return nknn.LayerNorm(CHANNELS)
    return nn.Identity()


def padded_batch(packed: Tensor, extra: int) -> tuple[Tensor, Tensor]:
    """``(x (N, C, T'), mask (N, T'))`` with ``T'`` the longest length in the batch plus
    ``extra`` frames (zeros)."""
    x, mask = packed[:, :-1], packed[:, -1] > 0.5
    longest = int(mask.sum(1).max())
    target = longest + extra
    if target <= x.shape[-1]:
        return x[..., :target], mask[:, :target]
    pad = target - x.shape[-1]
    return nn.functional.pad(x, (0, pad)), nn.functional.pad(mask, (0, pad))


def cropped(data: Dataset, min_length: int, seed: int) -> Dataset:
    """``data`` with every sequence cropped once to a random window of ``min_length`` to
    ``T`` frames, left-aligned, zero-padded, and the mask as one more channel."""
    if len(data.input_shape) != 2:
        raise LabError(
            f"the sequence experiment needs 1-D sequences (C, T), e.g. --data mnist1d; "
            f"{data.name} has examples of shape {data.input_shape}"
        )
    length = data.input_shape[1]
    if not 2 <= min_length <= length:
        raise LabError(
            f"--min-length must be between 2 and the sequence length {length}, got {min_length}"
        )

    def crop(x: Tensor, key: str) -> Tensor:
        generator = torch.Generator().manual_seed(derive_seed(seed, "crop", key))
        n = x.shape[0]
        lengths = torch.randint(min_length, length + 1, (n,), generator=generator)
        starts = (torch.rand(n, generator=generator) * (length - lengths + 1)).long()
        positions = torch.arange(length)
        source = (starts[:, None] + positions).clamp(max=length - 1)
        values = x.gather(2, source.unsqueeze(1).expand(-1, x.shape[1], -1))
        mask = positions < lengths[:, None]
        return torch.cat([values * mask.unsqueeze(1), mask.unsqueeze(1).to(x.dtype)], 1)

    return Dataset(
        name=data.name,
        x_train=crop(data.x_train, "train"),
        y_train=data.y_train,
        x_test=crop(data.x_test, "test"),
        y_test=data.y_test,
        num_classes=data.num_classes,
        description=f"{data.description}, random crops of {min_length} to {length} frames",
    )


def _parse_min_length(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LabError(f"--min-length must be an integer, got {text!r}") from None


def _check_min_length(value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise LabError(f"--min-length must be an integer of at least 2, got {value!r}")


@experiment(
    "sequence",
    title=tr("sequence.title", lang="en"),
    summary="padded variable-length sequences: plain vs masked BatchNorm, LayerNorm, none",
    defaults=Config(steps=1500, lr=(0.05,), batch_size=(32,), data="mnist1d", eval_every=100),
    smoke={"steps": 20, "eval_every": 10},
    options=(
        Option("min_length", 12, "shortest crop (frames)", _parse_min_length, _check_min_length),
    ),
)
def run(cfg: Config, out_dir: Path) -> Result:
    source = load_dataset(cfg.data)
    data = cropped(source, cfg.options["min_length"], cfg.seed)
    batch_size, lr = cfg.batch_size[0], cfg.lr[0]
    steps = eval_steps(cfg.steps, cfg.eval_every)
    in_channels = data.input_shape[0] - 1
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    models = {v: SequenceNet(in_channels, data.num_classes, v) for v in VARIANTS}
    for v in VARIANTS[1:]:
        copy_init(models[VARIANTS[0]], models[v])
    curves: dict[str, dict[str, list[float]]] = {}
    sweep: dict[str, dict[str, list[float]]] = {}
    agreement: dict[str, dict[str, float]] = {}
    records = []
    for v, model in models.items():
        curve: dict[str, list[float]] = {"eval": [], "train": []}

        def on_eval(step: int, m, curve=curve) -> None:
            curve["eval"].append(accuracy(m, data.x_test, data.y_test))
            curve["train"].append(
                accuracy(m, data.x_test, data.y_test, train_mode=True, batch_size=batch_size)
            )

        with progress(f"sequence: {v}", cfg.steps) as update:
            train(
                model, data, steps=cfg.steps, batch_size=batch_size, lr=lr, momentum=MOMENTUM,
                schedule="cosine", seed=derive_seed(cfg.seed, "batches"),
                eval_every=cfg.eval_every, on_eval=on_eval, on_step=update,
            )  # fmt: skip
        curves[v] = curve
        sweep[v], agreement[v] = _padding_sweep(model, data, batch_size)
        records += [
            {"variant": v, "measure": "curve", "step": s, "extra_padding": 0,
             "eval_mode_accuracy": e, "train_mode_accuracy": t}
            for s, e, t in zip(steps, curve["eval"], curve["train"], strict=True)
        ]  # fmt: skip
        records += [
            {"variant": v, "measure": "padding", "step": cfg.steps, "extra_padding": extra,
             "eval_mode_accuracy": e, "train_mode_accuracy": t}
            for extra, e, t in zip(EXTRA_PADDING, sweep[v]["eval"], sweep[v]["train"],
                                   strict=True)
        ]  # fmt: skip

    rows = [
        [
            tr(LABELS[v]),
            pct(sweep[v]["eval"][0]),
            pct(sweep[v]["train"][0]),
            pct(sweep[v]["train"][-1]),
            pct(agreement[v]["train"]),
            f"{100 * (curves[v]['train'][-1] - curves[v]['eval'][-1]):+.1f}",
        ]
        for v in VARIANTS
    ]
    gap = {v: curves[v]["train"][-1] - curves[v]["eval"][-1] for v in VARIANTS}
    headline = tr(
        "sequence.headline",
        extra=EXTRA_PADDING[-1],
        bn_from=pct(sweep["bn"]["train"][0]),
        bn_to=pct(sweep["bn"]["train"][-1]),
        bn_agree=pct(agreement["bn"]["train"]),
        masked=pct(sweep["masked"]["train"][0]),
        masked_agree=pct(agreement["masked"]["train"]),
        bn_gap=f"{100 * gap['bn']:+.1f}",
        masked_gap=f"{100 * gap['masked']:+.1f}",
        bn_eval=pct(sweep["bn"]["eval"][0]),
        masked_eval=pct(sweep["masked"]["eval"][0]),
    )
    crop = (cfg.options["min_length"], source.input_shape[-1])
    _figure(out_dir / "sequence.png", steps, curves, sweep, data.name, crop, batch_size)
    return Result(
        experiment="sequence",
        title=tr("sequence.title"),
        headline=headline,
        columns=[
            tr(f"sequence.col_{c}", extra=EXTRA_PADDING[-1])
            for c in ("variant", "eval", "train", "train_padded", "agree", "gap")
        ],
        rows=rows,
        metrics={
            "steps": steps,
            "extra_padding": list(EXTRA_PADDING),
            "curves": curves,
            "padding_sweep": sweep,
            "agreement": agreement,
            "train_eval_gap": gap,
            "dataset": source.summary(),
            "min_length": cfg.options["min_length"],
        },
        records=records,
        figures=[
            Figure(
                "sequence.png",
                tr("sequence.caption", extra=EXTRA_PADDING[-1]),
                tr("sequence.explanation"),
            ),
        ],
        notes=[
            tr("sequence.note_shows"),
            tr(
                "sequence.note_model",
                data=data_summary(source),
                channels=CHANNELS,
                kernel=KERNEL,
                min_length=cfg.options["min_length"],
            ),
            tr(
                "sequence.note_training",
                lr=lr,
                momentum=MOMENTUM,
                batch=batch_size,
                steps=cfg.steps,
            ),
            tr(
                "sequence.note_agreement",
                extra=EXTRA_PADDING[-1],
                batch=batch_size,
                used=len(data.y_test) // batch_size * batch_size,
            ),
        ],
    )


def _predictions(model: nn.Module, data: Dataset, train_mode: bool, batch_size: int) -> Tensor:
    """Predicted classes of the test set, batches of ``batch_size`` in the data's order."""
    import copy

    target = copy.deepcopy(model) if train_mode else model
    target.train(train_mode)
    out = []
    with torch.no_grad():
        for start in range(0, len(data.y_test) - batch_size + 1, batch_size):
            out.append(target(data.x_test[start : start + batch_size]).argmax(1))
    model.eval()
    return torch.cat(out)


def _padding_sweep(model: SequenceNet, data: Dataset, batch_size: int):
    """Accuracy per extra padding in eval and train mode, and the fraction of test
    sequences whose prediction with the most padding equals the one with none."""
    accuracies: dict[str, list[float]] = {"eval": [], "train": []}
    predictions: dict[str, list[Tensor]] = {"eval": [], "train": []}
    labels = data.y_test[: len(data.y_test) // batch_size * batch_size]
    for extra in EXTRA_PADDING:
        model.extra_padding = extra
        for mode in ("eval", "train"):
            predicted = _predictions(model, data, mode == "train", batch_size)
            predictions[mode].append(predicted)
            accuracies[mode].append(float((predicted == labels).float().mean()))
    model.extra_padding = 0
    agreement = {
        mode: float((predictions[mode][0] == predictions[mode][-1]).float().mean())
        for mode in ("eval", "train")
    }
    return accuracies, agreement


def _figure(path: Path, steps, curves, sweep, dataset: str, crop, batch: int) -> None:
    panels = [
        Panel(tr("sequence.panel_eval"), tr("sequence.padding_axis"), tr("common.test_accuracy"),
              percent=True),
        Panel(tr("sequence.panel_train"), tr("sequence.padding_axis"),
              tr("common.test_accuracy"), percent=True),
        Panel(tr("sequence.panel_gap"), tr("common.training_step"), tr("sequence.gap_axis")),
    ]  # fmt: skip
    for v in VARIANTS:
        label = tr(LABELS[v])
        panels[0].series.append(Series(label, list(EXTRA_PADDING), sweep[v]["eval"], marker="o"))
        panels[1].series.append(Series(label, list(EXTRA_PADDING), sweep[v]["train"], marker="o"))
        gap = [100 * (t - e) for t, e in zip(curves[v]["train"], curves[v]["eval"], strict=True)]
        panels[2].series.append(Series(label, steps, gap))
    low = min(min(s[m]) for s in sweep.values() for m in ("eval", "train"))
    for panel in panels[:2]:
        panel.ylim = (max(0.0, math.floor(20 * low) / 20 - 0.05), 1.0)
    suptitle = tr("sequence.suptitle", dataset=dataset, low=crop[0], high=crop[1], batch=batch)
    save_panels(path, panels, suptitle=suptitle)
