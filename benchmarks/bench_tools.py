"""Folded vs unfolded inference: what nk.tools.fold buys at eval time on CPU.

    python benchmarks/bench_tools.py [--quick] [--threads 2] [--csv PATH]

Models: the lab's small CNN (``normkit.lab.models.cnn``: Conv-BN-ReLU-pool x3 + Linear) and
a ResNet-style stage (stem + two basic blocks), each with torch.nn BatchNorm and
with normkit.nn BatchNorm, in eval mode under ``torch.no_grad()``. Prints median times of
the unfolded models and of the folded one, interleaved in one run, and the speed-up
unfolded / folded (> 1: folding is faster). Appends rows to ``benchmarks/results/tools.csv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the root: the tests' models
from _harness import (
    RESULTS_DIR,
    Environment,
    append_csv,
    environment_row,
    no_grad_forward,
    print_table,
    time_interleaved,
)

import normkit as nk
from tests.tools.models import BasicBlock


def lab_cnn(ns) -> nn.Module:
    """The lab's small CNN (``normkit.lab.models.cnn`` with BatchNorm) on 1x28x28 inputs;
    with ``ns=torch.nn`` its BatchNorms are torch's (same weights)."""
    from normkit.lab.models import cnn

    torch.manual_seed(0)
    model = cnn((1, 28, 28), 10, norm="bn")
    return model if ns is nk.nn else nk.tools.convert(model, "torch")


def resnet_stage(ns) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1, bias=False),
        ns.BatchNorm2d(64),
        nn.ReLU(),
        BasicBlock(ns, 64, 64),
        BasicBlock(ns, 64, 128, stride=2),
    )


def _trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, then eval mode."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "running_var", None), torch.Tensor):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


CASES = [
    ("lab CNN", lab_cnn, (128, 1, 28, 28)),
    ("ResNet-style stage", resnet_stage, (16, 3, 56, 56)),
]
QUICK_CASES = [
    ("lab CNN", lab_cnn, (16, 1, 28, 28)),
    ("ResNet-style stage", resnet_stage, (4, 3, 32, 32)),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, few repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--csv", type=Path, default=RESULTS_DIR / "tools.csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 30)
    env = Environment()
    print(f"# {env.cpu}, torch {env.torch}, {env.threads} threads; eval-mode inference, no_grad")
    table, csv_rows = [], []
    for label, build, shape in QUICK_CASES if args.quick else CASES:
        torch.manual_seed(0)
        reference = _trained_like(build(nn))
        ours = _trained_like(build(nk.nn))
        ours.load_state_dict(reference.state_dict())
        folded, report = nk.tools.fold(reference, return_report=True)
        x = torch.randn(shape)
        with torch.no_grad():
            err = (folded(x) - reference(x)).abs().max() / reference(x).abs().max()
        timings = time_interleaved(
            {
                "torch BN": no_grad_forward(reference, x),
                "normkit BN": no_grad_forward(ours, x),
                "folded": no_grad_forward(folded, x),
            },
            repeats=repeats,
        )
        t_torch, t_ours, t_fold = (timings[k].q50 for k in ("torch BN", "normkit BN", "folded"))
        table.append(
            [
                label,
                "x".join(map(str, shape)),
                len(report),
                f"{t_torch:.3f}",
                f"{t_ours:.3f}",
                f"{t_fold:.3f}",
                f"{t_torch / t_fold:.2f}x",
                f"{t_ours / t_fold:.2f}x",
                f"{err:.1e}",
            ]
        )
        for provider, timing in timings.items():
            csv_rows.append(
                {
                    "op": f"fold: {label}",
                    "shape": "x".join(map(str, shape)),
                    "mode": "eval fwd",
                    "provider": provider,
                    "q20_ms": round(timing.q20, 4),
                    "q50_ms": round(timing.q50, 4),
                    "q80_ms": round(timing.q80, 4),
                    **environment_row(env),
                }
            )
    print_table(
        [
            "model",
            "input",
            "BN folded",
            "torch BN ms",
            "normkit BN ms",
            "folded ms",
            "torch/folded",
            "normkit/folded",
            "max rel err",
        ],
        table,
    )
    append_csv(args.csv, csv_rows)
    print(f"\nrows appended to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
