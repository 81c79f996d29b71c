"""normkit vs torch.nn, layer by layer: training forward+backward and eval forward.

    python benchmarks/bench_layers.py [--quick] [--threads 2] [--csv PATH]

Prints, for each layer and shape, the median time of torch's layer and normkit's in one
interleaved run and the ratio torch / normkit (> 1: normkit faster), and appends the rows
to ``benchmarks/results/layers.csv`` with the environment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    RESULTS_DIR,
    Environment,
    append_csv,
    copy_bandwidth_gbs,
    environment_row,
    print_table,
    roofline_fraction,
    time_interleaved,
)

import normkit as nk

# (label, class name, constructor args, input shape)
CASES = [
    ("BatchNorm1d", "BatchNorm1d", (1024,), (256, 1024)),
    ("BatchNorm2d", "BatchNorm2d", (64,), (32, 64, 56, 56)),
    ("BatchNorm2d 7x7", "BatchNorm2d", (512,), (128, 512, 7, 7)),
    ("BatchNorm3d", "BatchNorm3d", (32,), (8, 32, 16, 28, 28)),
    ("InstanceNorm2d", "InstanceNorm2d", (64,), (32, 64, 56, 56)),
    ("GroupNorm(32)", "GroupNorm", (32, 256), (32, 256, 28, 28)),
    ("LayerNorm", "LayerNorm", (768,), (8192, 768)),
    ("RMSNorm", "RMSNorm", (768,), (8192, 768)),
]
QUICK_CASES = [
    ("BatchNorm1d", "BatchNorm1d", (256,), (64, 256)),
    ("BatchNorm2d", "BatchNorm2d", (16,), (8, 16, 28, 28)),
    ("GroupNorm(4)", "GroupNorm", (4, 16), (8, 16, 28, 28)),
    ("LayerNorm", "LayerNorm", (256,), (512, 256)),
    ("RMSNorm", "RMSNorm", (256,), (512, 256)),
]


def _layers(cls: str, args: tuple):
    kwargs = {"affine": True} if cls.startswith("Instance") else {}
    reference = getattr(torch.nn, cls)(*args, **kwargs)
    ours = getattr(nk.nn, cls)(*args, **kwargs)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _train_step(layer, x, grad):
    def step():
        x.grad = None
        layer(x).backward(grad)

    return step


def _eval_step(layer, x):
    def step():
        with torch.no_grad():
            layer(x)

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--csv", type=Path, default=RESULTS_DIR / "layers.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = QUICK_CASES if args.quick else CASES
    repeats = args.repeats or (5 if args.quick else 25)
    env = Environment()
    bandwidth = copy_bandwidth_gbs(32 * 2**20 if args.quick else 256 * 2**20)
    print(
        f"# {env.cpu}, torch {env.torch}, numba {env.numba}, {env.threads} threads, "
        f"copy bandwidth {bandwidth:.1f} GB/s, malloc {env.malloc}"
    )
    table, csv_rows = [], []
    for label, cls, ctor_args, shape in cases:
        reference, ours = _layers(cls, ctor_args)
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        nbytes = x.numel() * x.element_size()
        for mode, min_bytes, providers in (
            (
                "train fwd+bwd",
                5 * nbytes,  # fwd: read x, write y; bwd: read x, read grad, write dx
                {
                    "torch": _train_step(reference.train(), x, grad),
                    "normkit": _train_step(ours.train(), x, grad),
                },
            ),
            (
                "eval fwd",
                2 * nbytes,
                {"torch": _eval_step(reference.eval(), x), "normkit": _eval_step(ours.eval(), x)},
            ),
        ):
            timings = time_interleaved(providers, repeats=repeats)
            t, n = timings["torch"].q50, timings["normkit"].q50
            table.append(
                [
                    label,
                    "x".join(map(str, shape)),
                    mode,
                    f"{t:.3f}",
                    f"{n:.3f}",
                    f"{t / n:.2f}x",
                    f"{roofline_fraction(min_bytes, t / 1e3, bandwidth):.0%}",
                    f"{roofline_fraction(min_bytes, n / 1e3, bandwidth):.0%}",
                ]
            )
            for provider, timing in timings.items():
                csv_rows.append(
                    {
                        "op": label,
                        "shape": "x".join(map(str, shape)),
                        "mode": mode,
                        "provider": provider,
                        "q20_ms": round(timing.q20, 4),
                        "q50_ms": round(timing.q50, 4),
                        "q80_ms": round(timing.q80, 4),
                        "bandwidth_gbs": round(bandwidth, 2),
                        **environment_row(env),
                    }
                )
    print_table(
        ["layer", "shape", "mode", "torch ms", "normkit ms", "ratio", "torch roof", "normkit roof"],
        table,
    )
    append_csv(args.csv, csv_rows)
    print(f"\nrows appended to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
