"""Every normalization layer of a zoo model at the input it sees inside the model: the
library's own module (torch, timm, torchvision) against the normkit layer ``convert`` puts
in its place, one at a time.

Whole-model ratios (``bench_models.py``) sum many layers and move by several percent with
the machine; this finds the individual layers where normkit is slower, which a whole step
hides. For each model (the zoo's bench size), a forward hook records each norm layer's
input; each distinct (class, input shape, memory format) is then timed on its own:

* eval: a no_grad forward in eval mode; train: forward + backward in training mode;
* the two sides interleaved round by round; ratio = the median of the round-by-round ratios
  torch / normkit with its 95% confidence interval (``_harness.paired_ratio``); rows whose
  interval lies below 1.0 are marked ``slower``;
* per model, "step delta": what normkit saves (> 0) or costs per model step, summed over
  every layer instance (medians, ms), for eval and train.

Layers are converted without fusion (``fuse=False``: the activation stays where the model
put it). Rows are appended to ``benchmarks/results/model_layers.csv``.

    python benchmarks/bench_model_layers.py --models mobilenet_v2 efficientnet_b0
"""

from __future__ import annotations

import argparse
import copy
import sys
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
    "densenet121",
    "resnetv2_50x1_bit",
    "convnext_tiny",
]


def _format(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


def norm_inputs(model: torch.nn.Module, converted: torch.nn.Module, x: torch.Tensor) -> dict:
    """``(class, shape, format) -> (module name, input, count)`` for every module that
    ``converted`` holds as a normkit layer in place of another class, from one eval forward
    (``count``: how many layers of the model share that key)."""
    ours = dict(converted.named_modules())
    seen: dict[tuple, list] = {}
    hooks = []
    for name, module in model.named_modules():
        twin = ours.get(name)
        if twin is None or type(twin) is type(module):
            continue
        if not type(twin).__module__.startswith("normkit."):
            continue

        def record(mod, args, _out, name=name):
            inp = args[0]
            key = (type(mod).__name__, tuple(inp.shape), _format(inp))
            if key in seen:
                seen[key][2] += 1
            else:
                seen[key] = [name, inp.detach().clone(), 1]

        hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    return {key: tuple(value) for key, value in seen.items()}


def _steps(module: torch.nn.Module, x: torch.Tensor, mode: str):
    if mode == "eval":

        def forward():
            with torch.no_grad():
                module(x)

        return forward
    leaf = x.clone().requires_grad_(True)
    grad = torch.randn_like(module(leaf))

    def step():
        leaf.grad = None
        module(leaf).backward(grad)

    return step


def bench_model(
    name: str, repeats: int, size: str = "bench"
) -> tuple[list[dict], dict[str, float]]:
    """Rows of one model (module docstring) and its step deltas ``{"eval": ms, "train": ms}``."""
    entry = ZOO[name]
    torch.manual_seed(0)
    model = entry.build(size)
    randomize_norm_state(model, 0)
    converted = nk.tools.convert(model, "normkit", quiet=True, fuse=False)
    layers = norm_inputs(model, converted, torch.randn(entry.input_shape(size)))
    theirs, ours = dict(model.named_modules()), dict(converted.named_modules())
    rows, delta = [], {"eval": 0.0, "train": 0.0}
    for (cls, shape, fmt), (module_name, x, count) in layers.items():
        for mode in ("eval", "train"):
            sides = {}
            for side, module in (("torch", theirs[module_name]), ("normkit", ours[module_name])):
                module = copy.deepcopy(module).train(mode == "train")
                sides[side] = _steps(module, x, mode)
            timings = time_interleaved(sides, repeats=repeats, warmup=3)
            ratio = paired_ratio(timings["torch"], timings["normkit"])
            t, n = timings["torch"].q50, timings["normkit"].q50
            delta[mode] += count * (t - n)
            rows.append(
                {
                    "model": name,
                    "layer": cls,
                    "normkit_layer": type(ours[module_name]).__name__,
                    "shape": "x".join(map(str, shape)),
                    "format": fmt,
                    "count": count,
                    "mode": mode,
                    "torch_ms": round(t, 4),
                    "normkit_ms": round(n, 4),
                    "paired_ratio": round(ratio.median, 3),
                    "ratio_ci_low": round(ratio.low, 3),
                    "ratio_ci_high": round(ratio.high, 3),
                    "slower": ratio.high < 1.0,
                }
            )
    return rows, delta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS, choices=sorted(ZOO))
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--csv", type=Path, default=RESULTS_DIR / "model_layers.csv")
    args = parser.parse_args(argv)
    env = Environment()
    print(f"# bench_model_layers: {env.cpu}, {env.threads} threads, torch {env.torch}, "
          f"numba {env.numba}, {env.timestamp}, git {env.git_sha}")  # fmt: skip
    ecosystem.install()
    all_rows = []
    try:
        for name in args.models:
            rows, delta = bench_model(name, args.repeats)
            all_rows += rows
            rows.sort(key=lambda r: (r["mode"], r["paired_ratio"]))
            print_table(
                ["model", "layer", "shape", "format", "x", "mode", "torch ms", "normkit ms",
                 "ratio [95% CI]", ""],
                [
                    (r["model"], r["layer"], r["shape"], r["format"], r["count"], r["mode"],
                     r["torch_ms"], r["normkit_ms"],
                     f'{r["paired_ratio"]}x [{r["ratio_ci_low"]}, {r["ratio_ci_high"]}]',
                     "slower" if r["slower"] else "")
                    for r in rows
                ],
            )  # fmt: skip
            print(
                f"{name}: step delta (torch - normkit, all norm layers): "
                f"eval {delta['eval']:+.2f} ms, train {delta['train']:+.2f} ms\n"
            )
    finally:
        ecosystem.uninstall()
    extra = environment_row(env)
    append_csv(args.csv, [{**row, **extra} for row in all_rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
