"""Hidden costs in whole models: the copies, fills and allocations of one training step
(and one eval forward), torch's model against normkit's, from torch's profiler.

For each zoo model at its bench size, one warm step is profiled per provider and the
memory-moving ops are counted (calls, and self CPU time): ``aten::copy_``, ``aten::clone``,
``aten::cat``, ``aten::fill_``, ``aten::zero_``, and the allocations (``aten::empty``,
``aten::empty_strided``, ``aten::empty_like``, ``aten::zeros``, ``aten::ones``). normkit
should add none of the copies or fills torch's model does not have: its outputs are fresh
tensors, so an in-place activation after a normkit layer is in place there too (a view
output would turn it into a copy of the whole base tensor in autograd).

    python benchmarks/profile_models.py [--models resnet18 mobilenet_v2] [--mode train]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the root: the tests' zoo
from _harness import Environment, print_table
from bench_models import MODELS, _eval_step, _train_step

import normkit as nk
from tests.zoo import ecosystem
from tests.zoo.norm_state import randomize_norm_state
from tests.zoo.registry import ZOO

COPIES = ("aten::copy_", "aten::clone", "aten::cat", "aten::fill_", "aten::zero_")
ALLOCATIONS = (
    "aten::empty",
    "aten::empty_strided",
    "aten::empty_like",
    "aten::zeros",
    "aten::ones",
)


def profile_step(step) -> dict[str, tuple[int, float]]:
    """(calls, self CPU ms) of each op of one warm ``step``."""
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return {e.key: (e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages()}


def _sum(ops: dict, names: tuple[str, ...]) -> tuple[int, float]:
    calls = sum(ops.get(n, (0, 0.0))[0] for n in names)
    ms = sum(ops.get(n, (0, 0.0))[1] for n in names)
    return calls, ms


def profile_model(name: str, mode: str) -> list[list[str]]:
    entry = ZOO[name]
    torch.manual_seed(0)
    theirs = entry.build("bench")
    randomize_norm_state(theirs, 0)
    ours = nk.tools.convert(theirs, "normkit", quiet=True)
    shape = entry.input_shape("bench")
    x = torch.randn(shape)
    target = torch.randint(0, 1000, (shape[0],))
    rows = []
    results = {}
    for provider, model in (("torch", copy.deepcopy(theirs)), ("normkit", ours)):
        model.train(mode == "train")
        step = _train_step(model, x, target) if mode == "train" else _eval_step(model, x)
        results[provider] = profile_step(step)
    for provider, ops in results.items():
        copies = {n: ops.get(n, (0, 0.0))[0] for n in COPIES}
        rows.append(
            [
                name,
                mode,
                provider,
                *(str(copies[n]) for n in COPIES),
                "{} / {:.1f}".format(*_sum(ops, COPIES)),
                "{} / {:.1f}".format(*_sum(ops, ALLOCATIONS)),
            ]
        )
    extra = {
        n: results["normkit"].get(n, (0, 0.0))[0] - results["torch"].get(n, (0, 0.0))[0]
        for n in COPIES
    }
    rows.append([name, mode, "normkit - torch", *(f"{extra[n]:+d}" for n in COPIES), "", ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS, choices=sorted(ZOO))
    parser.add_argument("--mode", choices=("train", "eval", "both"), default="both")
    args = parser.parse_args(argv)
    env = Environment()
    print(f"# profile_models: {env.cpu}, {env.threads} threads, torch {env.torch}, "
          f"{env.timestamp}, git {env.git_sha}")  # fmt: skip
    modes = ("train", "eval") if args.mode == "both" else (args.mode,)
    ecosystem.install()
    try:
        rows = [row for name in args.models for mode in modes for row in profile_model(name, mode)]
    finally:
        ecosystem.uninstall()
    print_table(
        ["model", "mode", "provider", *COPIES, "copies+fills calls / ms", "allocs calls / ms"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
