"""The training loop shared by the experiments: seeded mini-batches, SGD, periodic evaluation."""

from __future__ import annotations

import copy
import math
import warnings
import zlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from normkit.functional import NonFiniteStatisticsWarning
from normkit.lab.datasets import Dataset
from normkit.lab.errors import LabError

EVAL_BATCH = 500


def derive_seed(seed: int, *keys: object) -> int:
    """A seed for one sub-run, stable across processes and independent of run order.

    ``derive_seed(0, "bn", 8)`` is the same whether or not other runs happen before it, so
    a sweep restricted to some settings reproduces the full sweep's numbers for them.
    """
    text = "/".join(str(k) for k in (seed, *keys))
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def batches(num_examples: int, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless index batches: a fresh permutation every epoch, the last partial batch dropped."""
    if batch_size > num_examples:
        raise LabError(
            f"batch size {batch_size} is larger than the training set ({num_examples} examples)"
        )
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(num_examples, generator=generator)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


@torch.no_grad()
def accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    train_mode: bool = False,
    batch_size: int = EVAL_BATCH,
) -> float:
    """Fraction of ``x`` classified as ``y``, in chunks of ``batch_size`` examples.

    ``train_mode=False``: the model in eval mode (running statistics). ``train_mode=True``:
    normalization with the statistics of each chunk (what training optimises; pass the
    training batch size), computed on a copy so the model's running statistics are
    untouched. A last chunk shorter than ``batch_size`` is merged into the one before, so
    no chunk has a single example.
    """
    was_training = model.training
    target = copy.deepcopy(model) if train_mode else model
    target.train(train_mode)
    try:
        correct = 0
        for start, stop in chunks(len(y), batch_size):
            logits = target(x[start:stop])
            correct += int((logits.argmax(1) == y[start:stop]).sum())
        return correct / len(y)
    finally:
        model.train(was_training)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(n)`` in pieces of ``size``; a last piece
    shorter than ``size`` is merged into the one before (no piece of one example)."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] < size:
        starts.pop()
    return list(zip(starts, [*starts[1:], n], strict=True))


def eval_steps(steps: int, every: int) -> list[int]:
    """Steps after which to evaluate: 0 (the initialisation), every ``every``, and the last.

    ``every <= 0``: only the last step.
    """
    if every <= 0:
        return [steps]
    points = list(range(0, steps + 1, every))
    if points[-1] != steps:
        points.append(steps)
    return points


def train(
    model: nn.Module,
    data: Dataset,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    momentum: float = 0.0,
    schedule: str = "constant",
    eval_every: int = 0,
    on_eval: Callable[[int, nn.Module], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """SGD on cross-entropy for ``steps`` mini-batches drawn with ``seed``.

    ``schedule="cosine"`` decays the learning rate as ``lr * (1 + cos(pi * t / steps)) / 2``
    (t = updates done), which makes the final accuracy much less noisy than a constant rate.

    ``on_eval(step, model)`` is called at :func:`eval_steps` (step 0 before any update);
    ``on_step(step)`` after every update (progress bars). A non-finite loss stops training
    (the run diverged); the remaining evaluations still happen, on the diverged model, so
    every run reports at the same steps. Returns the last loss, whether the run diverged
    and the number of updates done.
    """
    if schedule not in ("constant", "cosine"):
        raise LabError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    checkpoints = eval_steps(steps, eval_every) if on_eval else []
    due = set(checkpoints)
    sampler = batches(len(data.y_train), batch_size, seed)
    model.train()
    if checkpoints and checkpoints[0] == 0:
        on_eval(0, model)
    loss_value, done = math.nan, 0
    with warnings.catch_warnings():
        # A diverging run is detected from its loss and reported as such; the per-layer
        # warnings about non-finite batch statistics would only repeat it.
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        for step in range(1, steps + 1):
            idx = next(sampler)
            if schedule == "cosine":
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / steps))
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value, done = loss.detach().item(), step
            if not math.isfinite(loss_value):
                break
            if on_step:
                on_step(step)
            if step in due:
                on_eval(step, model)
        diverged = not math.isfinite(loss_value)
        if diverged:
            for step in checkpoints:
                if step >= done:
                    on_eval(step, model)
            if on_step:
                on_step(steps)
    return {"loss": loss_value, "diverged": diverged, "steps": done}
