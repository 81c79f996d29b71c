"""A first look: the classic tutorial models trained with normkit's layers and torch's.

An MLP (Linear -> BatchNorm1d -> ReLU) and a small CNN (Conv2d -> BatchNorm2d -> ReLU ->
MaxPool) on scikit-learn's bundled 8x8 digits (no download), each trained twice from the
same initialisation: once with ``torch.nn`` normalization layers and once with
``normkit.nn``'s. The two columns should agree to the last digit or nearly: normkit is a
drop-in.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from torch import nn

import normkit as nk


def load_digits_tensors(seed: int = 0):
    """scikit-learn's 8x8 digits as ``(x_train, y_train, x_test, y_test)``, standardised."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - the lab extra provides it
        from normkit.errors import CommandError

        raise CommandError("the demo needs scikit-learn: pip install 'normkit[lab]'") from exc
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    split = int(0.8 * len(y))
    mean, std = x[:split].mean(), x[:split].std()
    x = (x - mean) / std
    return x[:split], y[:split], x[split:], y[split:]


def mlp(norm: Callable[[int], nn.Module]) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 100, bias=False),
        norm(100),
        nn.ReLU(),
        nn.Linear(100, 100, bias=False),
        norm(100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def cnn(norm: Callable[[int], nn.Module]) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        norm(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        norm(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
    )


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(model: nn.Module, data, steps: int, batch_size: int, lr: float, seed: int):
    x_train, y_train, x_test, y_test = data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(y_train), (batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Train-mode evaluation updates running statistics: measure it on a copy.
    train_mode_acc = accuracy(copy.deepcopy(model), x_test, y_test)
    model.eval()
    return train_mode_acc, accuracy(model, x_test, y_test)


def run(steps: int = 300, batch_size: int = 32, lr: float = 0.05, seed: int = 0) -> list[dict]:
    """Train each model with torch's and normkit's layers; return one row per run."""
    data = load_digits_tensors(seed)
    rows = []
    builders = {
        "MLP  (Linear-BN1d-ReLU)": (mlp, nn.BatchNorm1d, nk.nn.BatchNorm1d),
        "CNN  (Conv-BN2d-ReLU-pool)": (cnn, nn.BatchNorm2d, nk.nn.BatchNorm2d),
    }
    for label, (build, torch_norm, normkit_norm) in builders.items():
        torch.manual_seed(seed)
        reference = build(torch_norm)
        ours = build(normkit_norm)
        ours.load_state_dict(reference.state_dict())  # same initialisation
        for library, model in (("torch.nn", reference), ("normkit.nn", ours)):
            start = time.perf_counter()
            train_acc, eval_acc = train(model, data, steps, batch_size, lr, seed)
            rows.append(
                {
                    "model": label,
                    "layers": library,
                    "train_mode_acc": train_acc,
                    "eval_mode_acc": eval_acc,
                    "seconds": time.perf_counter() - start,
                }
            )
    return rows


def _print_table(rows: list[dict]) -> None:
    header = f"{'model':28} {'layers':11} {'train-mode acc':>15} {'eval-mode acc':>14} {'time':>7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['model']:28} {row['layers']:11} {row['train_mode_acc']:15.2%} "
            f"{row['eval_mode_acc']:14.2%} {row['seconds']:6.1f}s"
        )


def _main(args: argparse.Namespace) -> int:
    from normkit.cli import CommandError

    if args.steps < 1 or args.batch_size < 2:
        raise CommandError("--steps must be >= 1 and --batch-size >= 2")
    torch.set_num_threads(args.threads)
    print(
        f"Training on scikit-learn's 8x8 digits (1437 train / 360 test), {args.steps} steps, "
        f"batch {args.batch_size}, SGD lr {args.lr}, seed {args.seed}"
    )
    _print_table(run(args.steps, args.batch_size, args.lr, args.seed))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="train tutorial MLP/CNN with torch's and normkit's layers, side by side"
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.set_defaults(func=_main)
