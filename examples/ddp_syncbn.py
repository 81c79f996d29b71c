"""Train a small CNN with DistributedDataParallel and normkit's SyncBatchNorm, on CPU.

    torchrun --nproc_per_node 2 examples/ddp_syncbn.py [--steps 300] [--batch-size 32]

Data: scikit-learn's bundled 8x8 digits (no download). Every process draws the same
global batch of ``batch_size * world_size`` images per step and keeps its own slice;
SyncBatchNorm normalizes each channel with the statistics of the whole global batch (one
all_gather of per-process count/mean/M2 per layer), exactly as one process holding the
whole batch would, and DDP averages the gradients. Rank 0 prints the loss and the test
accuracy of every process's (identical) model.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import normkit as nk


def load_digits(seed: int = 0):
    """``(x_train, y_train, x_test, y_test)``: 8x8 digits as (N, 1, 8, 8), standardised."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    split = int(0.8 * len(y))
    x = (x - x[:split].mean()) / x[:split].std()
    return x[:split], y[:split], x[split:], y[split:]


def make_model() -> nn.Module:
    """Conv -> BatchNorm2d -> ReLU twice, max-pool, linear; BatchNorm layers converted."""
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )
    return nk.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def train(steps: int = 300, batch_size: int = 32, lr: float = 0.05, seed: int = 0) -> dict:
    """Train in the current process group; returns losses, final state and test accuracy."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits(seed)
    model = make_model()
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    sampler = torch.Generator().manual_seed(seed + 1)  # the same draws on every process
    losses = []
    for _ in range(steps):
        batch = torch.randint(len(y_train), (batch_size * world,), generator=sampler)
        mine = batch[rank * batch_size : (rank + 1) * batch_size]
        loss = nn.functional.cross_entropy(ddp(x_train[mine]), y_train[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    state = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}
    return {"losses": losses, "state": state, "test_accuracy": accuracy}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT
    try:
        result = train(args.steps, args.batch_size, args.lr, args.seed)
        if dist.get_rank() == 0:
            first, last = result["losses"][0], sum(result["losses"][-10:]) / min(10, args.steps)
            print(
                f"world size {dist.get_world_size()}, {args.steps} steps of "
                f"{args.batch_size} per process: loss {first:.3f} -> {last:.3f}, "
                f"test accuracy {result['test_accuracy']:.3f}"
            )
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
