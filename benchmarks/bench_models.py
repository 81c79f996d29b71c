"""Whole models, where users feel it: torch vs normkit, eager and torch.compile, training
step and inference, on the test zoo's architectures at their real sizes.

For each model (the zoo's "bench" size: CNNs at 16 x 3 x 112 x 112, transformers at 224):

* train: one step = forward, backward, SGD update; eval: a no_grad forward in eval mode;
* providers, interleaved round by round: ``torch`` (the model as the libraries define it),
  ``normkit`` (``nk.tools.convert(model, "normkit")``), ``normkit+fold`` (eval, conv models:
  ``nk.tools.fold``), and with ``--compile`` ``compile(torch)`` / ``compile(normkit)``
  (``torch.compile``, inductor unless ``--compile-backend`` names another);
  with ``--fuse``, ``normkit`` is split in two: ``normkit(unfused)`` (``convert(...,
  fuse=False)``) and ``normkit+fuse`` (convert's default: BN + activation and BN + residual
  add + ReLU fused, :func:`normkit.tools.fuse_model`), to see what fusion alone gives;
* ratio = torch eager median / provider median (> 1: faster than torch eager), and beside it
  the median of the round-by-round ratios with its 95% confidence interval
  (``_harness.paired_ratio``): where the interval holds 1.0, or a goal, the run cannot tell
  the difference from noise; for ``compile(normkit)`` also its paired ratio to
  ``compile(torch)`` (the goal's comparison: the same compiler on both models);
* norm share: the fraction of torch's own step spent in normalization ops (torch.profiler,
  self CPU time of the forward and backward kernels), its Amdahl ceiling ``1 / (1 - share)``
  (the speed-up if normalization were free) and how far normkit got: ``(ratio - 1) /
  (ceiling - 1)``; also the share with the activations (what fusion can remove too).

Rows are appended to ``benchmarks/results/models.csv`` with the machine.

    python benchmarks/bench_models.py                      # every model, eager
    python benchmarks/bench_models.py --compile --models resnet18 mobilenet_v2
    python benchmarks/bench_models.py --fuse --models resnet18 resnet50
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the root: the tests' zoo
from _harness import (
    RESULTS_DIR,
    Environment,
    append_csv,
    environment_row,
    paired_ratio,
    print_table,
    time_interleaved,
)

import normkit as nk
from tests.zoo import ecosystem
from tests.zoo.norm_state import randomize_norm_state
from tests.zoo.registry import ZOO

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_base_patch16_224",
    "densenet121",
    "resnetv2_50x1_bit",
]

# Kernels of the normalization layers (forward and backward), by torch.profiler event name.
NORM_OPS = {
    "aten::native_batch_norm",
    "aten::_native_batch_norm_legit",
    "aten::_native_batch_norm_legit_no_training",
    "aten::native_batch_norm_backward",
    "aten::native_layer_norm",
    "aten::native_layer_norm_backward",
    "aten::native_group_norm",
    "aten::native_group_norm_backward",
    "aten::_fused_rms_norm",
}
ACT_OPS = {
    "aten::relu",
    "aten::relu_",
    "aten::threshold_backward",
    "aten::hardtanh",
    "aten::hardtanh_",
    "aten::hardtanh_backward",
    "aten::silu",
    "aten::silu_",
    "aten::silu_backward",
    "aten::gelu",
    "aten::gelu_backward",
    "aten::hardswish",
    "aten::hardswish_",
    "aten::hardswish_backward",
}


def _train_step(model, x, target):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), target).backward()
        optimizer.step()

    return step


def _eval_step(model, x):
    def step():
        with torch.no_grad():
            model(x)

    return step


def norm_share(step) -> tuple[float, float]:
    """(norm ops, norm + activation ops) share of the self CPU time of one step."""
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    norm = sum(e.self_cpu_time_total for e in events if e.key in NORM_OPS)
    act = sum(e.self_cpu_time_total for e in events if e.key in ACT_OPS)
    return norm / total, (norm + act) / total


def bench_model(
    name: str,
    compile_too: bool,
    repeats: int,
    fuse_split: bool = False,
    size: str = "bench",
    compile_backend: str = "inductor",
) -> list[dict]:
    entry = ZOO[name]
    torch.manual_seed(0)
    theirs = entry.build(size)
    randomize_norm_state(theirs, 0)
    ours = nk.tools.convert(theirs, "normkit", quiet=True)
    shape = entry.input_shape(size)
    x = torch.randn(shape)
    classes = entry.kwargs[size].get("num_classes", 1000)
    target = torch.randint(0, classes, (shape[0],))
    rows = []
    for mode in ("train", "eval"):
        models = {"torch": copy.deepcopy(theirs), "normkit": copy.deepcopy(ours)}
        if fuse_split:
            unfused = nk.tools.convert(theirs, "normkit", quiet=True, fuse=False)
            models = {"torch": models["torch"], "normkit(unfused)": unfused,
                      "normkit+fuse": models["normkit"]}  # fmt: skip
        for model in models.values():
            model.train(mode == "train")
        if mode == "eval" and entry.foldable:
            models["normkit+fold"] = nk.tools.fold(copy.deepcopy(ours).eval(), example=x)
        if compile_too:
            compiled = copy.deepcopy(models["torch"]), copy.deepcopy(ours).train(mode == "train")
            models["compile(torch)"] = torch.compile(compiled[0], backend=compile_backend)
            models["compile(normkit)"] = torch.compile(compiled[1], backend=compile_backend)
        make = (
            (lambda m: _train_step(m, x, target))
            if mode == "train"
            else (lambda m: _eval_step(m, x))
        )
        steps = {provider: make(model) for provider, model in models.items()}
        start = time.perf_counter()
        for step in steps.values():  # compilation and first-call costs out of the timings
            step()
        warm = time.perf_counter() - start
        share, share_act = norm_share(steps["torch"])
        timings = time_interleaved(steps, repeats=repeats, warmup=2)
        base = timings["torch"].q50
        ceiling = 1.0 / (1.0 - share)
        for provider, t in timings.items():
            ratio = base / t.q50
            paired = paired_ratio(timings["torch"], t)
            vs_compiled = (
                paired_ratio(timings["compile(torch)"], t)
                if provider == "compile(normkit)"
                else None
            )
            rows.append(
                {
                    "model": name,
                    "mode": mode,
                    "provider": provider,
                    "input": "x".join(map(str, shape)),
                    "ms_q50": round(t.q50, 2),
                    "ms_q20": round(t.q20, 2),
                    "ms_q80": round(t.q80, 2),
                    "ratio_vs_torch": round(ratio, 3),
                    "paired_ratio": round(paired.median, 3),
                    "ratio_ci_low": round(paired.low, 3),
                    "ratio_ci_high": round(paired.high, 3),
                    "vs_compile_torch": _interval(vs_compiled),
                    "norm_share": round(share, 3),
                    "norm_act_share": round(share_act, 3),
                    "ceiling": round(ceiling, 3),
                    "of_ceiling": round((ratio - 1) / (ceiling - 1), 2) if ceiling > 1 else "",
                    "warmup_s": round(warm, 1),
                }
            )
    return rows


def _interval(paired) -> str:
    return "" if paired is None else f"{paired.median:.3f}x [{paired.low:.3f}, {paired.high:.3f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS, choices=sorted(ZOO))
    parser.add_argument("--compile", action="store_true", help="also torch.compile both")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile's backend")
    parser.add_argument(
        "--fuse", action="store_true",
        help="normkit without fusion and normkit+fuse (convert's default) as two columns",
    )  # fmt: skip
    args = parser.parse_args(argv)
    ecosystem.install()
    env = Environment()
    print(f"# bench_models: {env.cpu}, {env.threads} threads, torch {env.torch}, "
          f"numba {env.numba}, {env.timestamp}, git {env.git_sha}")  # fmt: skip
    all_rows = []
    for name in args.models:
        rows = bench_model(
            name, args.compile, args.repeats, args.fuse, compile_backend=args.compile_backend
        )
        all_rows += rows
        print_table(
            ["model", "mode", "provider", "ms", "vs torch", "paired [95% CI]", "norm share",
             "ceiling", "of ceiling", "vs compile(torch)"],
            [
                (r["model"], r["mode"], r["provider"], r["ms_q50"], f'{r["ratio_vs_torch"]}x',
                 f'{r["paired_ratio"]}x [{r["ratio_ci_low"]}, {r["ratio_ci_high"]}]',
                 f'{r["norm_share"]:.0%} ({r["norm_act_share"]:.0%} w/ act)',
                 f'{r["ceiling"]}x', r["of_ceiling"], r["vs_compile_torch"])
                for r in rows
            ],
        )  # fmt: skip
        print()
    extra = environment_row(env)
    append_csv(RESULTS_DIR / "models.csv", [{**row, **extra} for row in all_rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
