"""BatchNorm variants vs their torch baselines, as ratios measured in one interleaved run.

    python benchmarks/bench_variants.py [--quick] [--threads 2] [--only layers|bnact|sync]
        [--csv PATH]

Rows:
* BatchNormAct (fused) vs torch BatchNorm followed by the activation, and vs normkit
  BatchNorm followed by the same torch activation module (the fusion alone), training
  fwd+bwd and eval forward;
* FrozenBatchNorm vs torch BatchNorm in eval mode (forward, and forward+backward to the input);
* BatchRenorm and GhostBatchNorm training fwd+bwd vs torch BatchNorm (their overhead);
* SyncBatchNorm: a training step in each of 2 gloo processes (one thread each, every
  process holding the same per-process batch) vs the same step in 1 process without
  synchronization: the cost of the two collectives.

Ratios are torch / normkit (> 1: normkit faster); for SyncBN, 2-process / 1-process time.
Rows are appended to ``benchmarks/results/variants.csv``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    RESULTS_DIR,
    Environment,
    append_csv,
    environment_row,
    no_grad_forward,
    print_table,
    time_interleaved,
    train_step,
)

import normkit as nk

ACT_MODULES = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


def _cases(quick: bool):
    shape2d = (8, 32, 16, 16) if quick else (32, 64, 56, 56)
    shape1d = (64, 256) if quick else (256, 1024)
    channels2d, channels1d = shape2d[1], shape1d[1]
    cases = []
    for act in ("relu", "silu", "gelu"):
        torch_layer = nn.Sequential(nn.BatchNorm2d(channels2d), ACT_MODULES[act]())
        ours = nk.nn.BatchNormAct2d(channels2d, act=act)
        cases.append((f"BatchNormAct2d({act}) vs BN2d+{act}", shape2d, torch_layer, ours, True))
        # The fusion alone: normkit's BatchNorm2d followed by torch's activation module.
        unfused = nn.Sequential(nk.nn.BatchNorm2d(channels2d), ACT_MODULES[act]())
        ours = nk.nn.BatchNormAct2d(channels2d, act=act)
        cases.append((f"BatchNormAct2d({act}) vs nk BN2d+{act}", shape2d, unfused, ours, True))
    torch_layer = nn.Sequential(nn.BatchNorm1d(channels1d), nn.ReLU())
    cases.append(
        (
            "BatchNormAct1d(relu) vs BN1d+relu",
            shape1d,
            torch_layer,
            nk.nn.BatchNormAct1d(channels1d),
            True,
        )
    )
    bn = nn.BatchNorm2d(channels2d).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    frozen = nk.nn.FrozenBatchNorm2d.from_batch_norm(bn)
    cases.append(("FrozenBatchNorm2d vs BN2d eval", shape2d, bn, frozen, False))
    cases.append(
        (
            "BatchRenorm2d vs BN2d",
            shape2d,
            nn.BatchNorm2d(channels2d),
            nk.nn.BatchRenorm2d(channels2d),
            True,
        )
    )
    ghost = nk.nn.GhostBatchNorm2d(channels2d, virtual_batch_size=max(2, shape2d[0] // 4))
    cases.append(
        ("GhostBatchNorm2d(4 ghosts) vs BN2d", shape2d, nn.BatchNorm2d(channels2d), ghost, True)
    )
    return cases


def bench_layers(quick: bool, repeats: int, env: Environment, only_act: bool = False):
    table, rows = [], []
    for label, shape, reference, ours, trainable in _cases(quick):
        if only_act and not label.startswith("BatchNormAct"):
            continue
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        modes = []
        if trainable:
            modes.append(("train fwd+bwd", reference.train(), ours.train(), train_step))
        else:  # frozen: eval-mode torch BN, and gradients to the input only
            modes.append(("fwd+bwd (input grad)", reference, ours, train_step))
        modes.append(("eval fwd", reference.eval(), ours.eval(), None))
        for mode, ref_layer, our_layer, factory in modes:
            if factory is None:
                providers = {
                    "torch": no_grad_forward(ref_layer, x),
                    "normkit": no_grad_forward(our_layer, x),
                }
            else:
                providers = {
                    "torch": factory(ref_layer, x, grad),
                    "normkit": factory(our_layer, x, grad),
                }
            timings = time_interleaved(providers, repeats=repeats)
            t, n = timings["torch"].q50, timings["normkit"].q50
            table.append(
                [label, "x".join(map(str, shape)), mode, f"{t:.3f}", f"{n:.3f}", f"{t / n:.2f}x"]
            )
            for provider, timing in timings.items():
                rows.append(
                    _csv_row(label, shape, mode, provider, timing.q20, timing.q50, timing.q80, env)
                )
    print_table(["variant", "shape", "mode", "torch ms", "normkit ms", "torch/normkit"], table)
    return rows


def _csv_row(label, shape, mode, provider, q20, q50, q80, env):
    return {
        "op": label,
        "shape": "x".join(map(str, shape)),
        "mode": mode,
        "provider": provider,
        "q20_ms": round(q20, 4),
        "q50_ms": round(q50, 4),
        "q80_ms": round(q80, 4),
        **environment_row(env),
    }


# ---------------------------------------------------------------------------------------
# SyncBatchNorm: 2 processes vs 1.


def _sync_step_times(layer, shape, repeats, warmup=3):
    x = torch.randn(shape, requires_grad=True)
    grad = torch.randn(shape)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        x.grad = None
        layer(x).backward(grad)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _one_thread() -> None:
    """One intra-op thread for torch and, if loaded, Numba (fair 1- vs 2-process rows)."""
    torch.set_num_threads(1)
    try:
        import numba

        numba.set_num_threads(1)
    except ImportError:  # pragma: no cover - numba is a core dependency
        pass


def _sync_worker(rank, world, store, shape, repeats, queue):
    import torch.distributed as dist

    _one_thread()
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world,
        timeout=timedelta(seconds=60),
    )  # fmt: skip
    try:
        layer = nk.nn.SyncBatchNorm(shape[1])
        times = _sync_step_times(layer, shape, repeats)
        queue.put((rank, times))
    finally:
        dist.destroy_process_group()


def bench_sync(quick: bool, repeats: int, env: Environment):
    shapes = (
        [(8, 32, 16, 16), (64, 256)]
        if quick
        else [(16, 64, 56, 56), (256, 1024), (32, 256, 14, 14)]
    )
    table, rows = [], []
    ctx = mp.get_context("spawn")
    for shape in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            queue = ctx.Queue()
            procs = [
                ctx.Process(
                    target=_sync_worker,
                    args=(r, 2, os.path.join(tmp, "store"), shape, repeats, queue),
                )
                for r in range(2)
            ]
            for p in procs:
                p.start()
            results = dict(queue.get(timeout=600) for _ in procs)
            for p in procs:
                p.join(60)
        _one_thread()
        single = _sync_step_times(nk.nn.SyncBatchNorm(shape[1]), shape, repeats)
        bn = _sync_step_times(
            nn.BatchNorm2d(shape[1]) if len(shape) == 4 else nn.BatchNorm1d(shape[1]),
            shape,
            repeats,
        )
        two = statistics.median(results[0]) * 1e3
        one = statistics.median(single) * 1e3
        torch_one = statistics.median(bn) * 1e3
        table.append(
            [
                "x".join(map(str, shape)),
                f"{torch_one:.3f}",
                f"{one:.3f}",
                f"{two:.3f}",
                f"{two / one:.2f}x",
            ]
        )
        for provider, value in (
            ("torch BN 1 proc", torch_one),
            ("normkit 1 proc", one),
            ("normkit 2 procs", two),
        ):
            rows.append(
                _csv_row(
                    "SyncBatchNorm", shape, "train fwd+bwd", provider, value, value, value, env
                )
            )
    print_table(
        [
            "per-process shape",
            "torch BN 1 proc ms",
            "SyncBN 1 proc ms",
            "SyncBN 2 procs ms",
            "2 procs / 1 proc",
        ],
        table,
    )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--only",
        choices=["layers", "bnact", "sync"],
        default=None,
        help="run one group of rows (bnact: the BatchNormAct rows only)",
    )
    parser.add_argument("--csv", type=Path, default=RESULTS_DIR / "variants.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 25)
    env = Environment()
    print(f"# {env.cpu}, torch {env.torch}, numba {env.numba}, {env.threads} threads, "
          f"malloc {env.malloc}, backends {nk.backends.available()}")  # fmt: skip
    only_act = args.only == "bnact"
    rows = [] if args.only == "sync" else bench_layers(args.quick, repeats, env, only_act)
    if args.only not in ("layers", "bnact"):
        print("\n# SyncBatchNorm, one thread per process")
        rows += bench_sync(args.quick, repeats, env)
    append_csv(args.csv, rows)
    print(f"\nrows appended to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
