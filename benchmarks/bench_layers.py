"""normkit vs torch.nn, layer by layer: the goal table of the fast-kernels issue.

    python benchmarks/bench_layers.py [--quick] [--threads 2] [--repeats N] [--csv PATH]
                                      [--no-tuned-malloc] [--only SUBSTRING]

Each row times torch's layer and normkit's in one process, interleaved round by round,
warm-up (JIT compilation, allocator warm-up) excluded, and reports the medians, the ratio
torch / normkit (> 1: normkit faster) with the 95% confidence interval of the median
round-by-round ratio (``_harness.paired_ratio``; a verdict is marked "within noise" when
the interval holds the goal), the issue's goal for that row, and each side's
fraction of the memory-bandwidth roofline: the minimum bytes the op must move (2x the
tensor for a forward, 5x for forward+backward) over the measured copy bandwidth.

The table is printed twice: in the default environment, then in a child process with the
glibc malloc settings of docs/kernels.md (``MALLOC_MMAP_MAX_=0``,
``MALLOC_TRIM_THRESHOLD_=17179869184``: large buffers are reused instead of being mapped
and page-faulted afresh on every call), applied to both torch and normkit. Rows are
appended to ``benchmarks/results/layers.csv`` with the versions, CPU and malloc setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    RESULTS_DIR,
    Environment,
    append_csv,
    environment_row,
    no_grad_forward,
    paired_ratio,
    print_table,
    roofline_fraction,
    time_interleaved,
    train_step,
)

import normkit as nk
from normkit.nn.fused_calls import norm_add_act

TUNED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "17179869184"}

Providers = dict[str, Callable[[], object]]


@dataclass
class Case:
    """One table row: a builder returning the ``torch`` and ``normkit`` callables."""

    label: str
    shape: tuple[int, ...]
    mode: str  # "train fwd+bwd", "train fwd", "eval fwd", "train step"
    build: Callable[[tuple[int, ...], str, str], Providers]
    goal: float | None = None
    layout: str = "NCHW"
    traffic: tuple[int, int] = (2, 5)  # tensors of the input's size moved: fwd, fwd+bwd

    @property
    def min_bytes(self) -> int | None:
        """Minimum bytes moved: read x + write y (fwd); + read x, grad, write dx (bwd); a
        residual add also reads the residual (fwd) and writes its gradient (bwd)."""
        if self.mode == "train step":
            return None
        nbytes = 4 * int(torch.Size(self.shape).numel())
        return self.traffic[1 if "bwd" in self.mode else 0] * nbytes


# ---------------------------------------------------------------------------------------
# Builders.


def _pair(cls: str, args: tuple, **kwargs):
    reference = getattr(torch.nn, cls)(*args, **kwargs)
    ours = getattr(nk.nn, cls)(*args, **kwargs)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _input(shape, layout):
    x = torch.randn(shape)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def layer_builder(cls: str, args: tuple, **kwargs) -> Callable[[tuple, str, str], Providers]:
    def build(shape, mode, layout):
        reference, ours = _pair(cls, args, **kwargs)
        x = _input(shape, layout)
        if mode == "eval fwd":
            return {
                "torch": no_grad_forward(reference.eval(), x),
                "normkit": no_grad_forward(ours.eval(), x),
            }
        if mode == "train fwd":
            return {"torch": no_grad_forward(reference, x), "normkit": no_grad_forward(ours, x)}
        grad = _input(shape, layout)
        return {"torch": train_step(reference, x, grad), "normkit": train_step(ours, x, grad)}

    return build


class _FusedBNAct(torch.nn.Module):
    """BatchNorm + activation through the fused primitives (stats -> elemt(act);
    backward_reduce(act) -> backward_elemt(act)), standing in for ``nk.nn.BatchNormAct2d``
    when that layer (issue 3) is not on this branch."""

    def __init__(self, channels: int, act: str = "relu"):
        super().__init__()
        self.bn = nk.nn.BatchNorm2d(channels)
        self.act = act

    def forward(self, x):
        from normkit.functional._running import update_running_stats

        y, mean, var = _BNActFn.apply(x, self.bn.weight, self.bn.bias, self.bn.eps, self.act)
        update_running_stats(
            self.bn.running_mean, self.bn.running_var, mean, var,
            x.numel() // x.shape[1], self.bn.momentum, self.bn.num_batches_tracked,
        )  # fmt: skip
        return y


class _BNActFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, act):
        from normkit.backends import get_impl

        x3 = x.reshape(x.shape[0], x.shape[1], -1)
        mean, var = get_impl("batch_norm_stats", x3)(x3)
        invstd = torch.rsqrt(var + eps)
        y = get_impl("batch_norm_elemt", x3)(x3, mean, invstd, weight, bias, act)
        ctx.save_for_backward(x3, weight, bias, mean, invstd)
        ctx.act, ctx.shape = act, x.shape
        ctx.mark_non_differentiable(mean, var)
        return y.reshape(x.shape), mean, var

    @staticmethod
    def backward(ctx, grad, _gm, _gv):
        from normkit.backends import get_impl

        x3, weight, bias, mean, invstd = ctx.saved_tensors
        g3 = grad.reshape(x3.shape)
        reduce = get_impl("batch_norm_backward_reduce", x3)
        sum_dy, sum_dy_xhat = reduce(g3, x3, mean, invstd, weight, bias, ctx.act)
        count = x3.shape[0] * x3.shape[2]
        dx = get_impl("batch_norm_backward_elemt", x3)(
            g3, x3, mean, invstd, weight, bias, sum_dy, sum_dy_xhat, count, ctx.act
        )
        return dx.reshape(ctx.shape), sum_dy_xhat, sum_dy, None, None


def bn_act_builder(shape, mode, layout):
    """The issue's row: fused BatchNormAct2d(relu) vs normkit BatchNorm2d then torch ReLU."""
    channels = shape[1]
    cls = getattr(nk.nn, "BatchNormAct2d", None)
    fused = cls(channels, act="relu") if cls is not None else _FusedBNAct(channels)
    unfused = torch.nn.Sequential(nk.nn.BatchNorm2d(channels), torch.nn.ReLU())
    x, grad = _input(shape, layout), _input(shape, layout)
    return {"torch": train_step(unfused, x, grad), "normkit": train_step(fused, x, grad)}


class _BNAddReLU(torch.nn.Module):
    """The end of a ResNet block, ``relu(bn(x) + residual)``: torch's way (BN, ``out +=
    residual``, in-place ReLU, as torchvision's blocks) or one fused normkit call."""

    def __init__(self, channels: int, fused: bool):
        super().__init__()
        self.bn = nk.nn.BatchNorm2d(channels) if fused else torch.nn.BatchNorm2d(channels)
        self.fused = fused

    def forward(self, x, residual):
        if self.fused:
            return norm_add_act(self.bn, x, residual, None, "relu")
        out = self.bn(x)
        out += residual
        return torch.relu_(out)


def bn_add_relu_builder(shape, mode, layout):
    """Fused BN + residual add + ReLU (``nk.tools.fuse_model``'s call) vs torch's BN, ``+=``,
    ``relu_``; in training the residual gets its gradient too."""
    x, residual, grad = _input(shape, layout), _input(shape, layout), _input(shape, layout)
    providers = {}
    for side, fused in (("torch", False), ("normkit", True)):
        block = _BNAddReLU(shape[1], fused)
        if mode == "eval fwd":
            block.eval()

            def step(block=block):
                with torch.no_grad():
                    block(x, residual)

        else:
            leaves = (x.detach().requires_grad_(True), residual.detach().requires_grad_(True))

            def step(block=block, leaves=leaves):
                for leaf in leaves:
                    leaf.grad = None
                block(*leaves).backward(grad)

        providers[side] = step
    return providers


def lab_cnn(input_shape: tuple[int, ...], norm: str) -> torch.nn.Module:
    """The lab's small CNN (``normkit.lab.models.cnn``, BatchNorm): [Conv(k=3, pad 1) -> BN ->
    ReLU -> MaxPool(2)] x 3 at width 32, then Linear; 2-D for ``(C, H, W)`` inputs, 1-D for
    ``(C, L)``. ``norm="torch"`` swaps in torch's BatchNorm with the same weights."""
    from normkit.lab.models import cnn

    torch.manual_seed(0)
    model = cnn(input_shape, 10, norm="bn")
    return model if norm == "normkit" else nk.tools.convert(model, "torch")


def cnn_builder(shape, mode, layout):
    reference = lab_cnn(shape[1:], "torch")
    ours = lab_cnn(shape[1:], "normkit")
    x = torch.randn(shape)
    target = torch.randint(0, 10, (shape[0],))

    def step_for(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), target).backward()
            opt.step()

        return step

    return {"torch": step_for(reference), "normkit": step_for(ours)}


def _padded_batch(shape, padding: float):
    """``x (N, C, L)`` zero at the padded positions, its gradient, and the mask: lengths
    spread evenly over ``[L * (1 - 2 * padding), L]`` so that ``padding`` of the positions
    are padding."""
    n, _, length = shape
    lengths = torch.linspace(length * (1 - 2 * padding), length, n).round().long()
    mask = nk.functional.lengths_to_mask(lengths, length)
    x = torch.randn(shape) * mask.unsqueeze(1)
    return x, torch.randn(shape) * mask.unsqueeze(1), mask


class _GatherScatterBN(torch.nn.Module):
    """What a user writes today for masked BatchNorm: gather the valid frames, torch's
    BatchNorm1d on the (M, C) batch, scatter back (zeros at the padding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(channels)

    def forward(self, x, mask):
        frames = self.bn(x.transpose(1, 2)[mask])
        out = x.new_zeros(x.shape[0], x.shape[2], x.shape[1]).index_put((mask,), frames)
        return out.transpose(1, 2)


def masked_builder(baseline: str) -> Callable[[tuple, str, str], Providers]:
    """normkit's masked BatchNorm1d (the "normkit" side) against ``baseline`` (the "torch"
    side): "gather" (gather + torch BN1d + scatter), "plain" (torch BN1d over the padding,
    the wrong statistics) or "normkit plain" (normkit BN1d over the padding)."""

    def build(shape, mode, layout):
        x, grad, mask = _padded_batch(shape, 0.3)
        masked = nk.nn.BatchNorm1d(shape[1])
        if baseline == "gather":
            other = _GatherScatterBN(shape[1])
        elif baseline == "plain":
            other = torch.nn.BatchNorm1d(shape[1])
        else:
            other = nk.nn.BatchNorm1d(shape[1])
        ours = lambda v: masked(v, mask=mask)  # noqa: E731
        theirs = (lambda v: other(v, mask)) if baseline == "gather" else other
        if mode == "train fwd":
            return {"torch": no_grad_forward(theirs, x), "normkit": no_grad_forward(ours, x)}
        return {"torch": train_step(theirs, x, grad), "normkit": train_step(ours, x, grad)}

    return build


def _timm_stand_ins():
    """The test zoo's faithful stand-ins of timm's classes (timm is not a dependency)."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.zoo.ecosystem import timm_norm, timm_response_norm

    return {**vars(timm_norm), **vars(timm_response_norm)}


def timm_builder(cls: str, args: tuple, **kwargs) -> Callable[[tuple, str, str], Providers]:
    """normkit's batch-free layer vs timm's plain-torch formulation of the same class
    ("torch" column: timm's code), same state; ``layout="NHWC"`` feeds ``(N, H, W, C)``."""

    def build(shape, mode, layout):
        reference = _timm_stand_ins()[cls](*args, **kwargs)
        ours = getattr(nk.nn, cls)(*args, **kwargs)
        ours.load_state_dict(reference.state_dict())
        x = _input(shape, layout if layout != "NHWC" else "NCHW")
        if mode == "eval fwd":
            return {
                "torch": no_grad_forward(reference.eval(), x),
                "normkit": no_grad_forward(ours.eval(), x),
            }
        if mode == "train fwd":
            return {"torch": no_grad_forward(reference, x), "normkit": no_grad_forward(ours, x)}
        grad = torch.randn_like(x)
        return {"torch": train_step(reference, x, grad), "normkit": train_step(ours, x, grad)}

    return build


BN2D = layer_builder("BatchNorm2d", (64,))
CASES: list[Case] = [
    Case("BatchNorm2d", (32, 64, 56, 56), "train fwd+bwd", BN2D, 2.5),
    Case("BatchNorm2d", (64, 256, 28, 28), "train fwd+bwd",
         layer_builder("BatchNorm2d", (256,)), 1.5),
    Case("BatchNorm2d", (32, 64, 56, 56), "train fwd+bwd", BN2D, 1.5, "channels_last"),
    Case("BatchNorm2d", (32, 64, 56, 56), "train fwd", BN2D, 4.0),
    Case("BatchNorm2d", (32, 64, 56, 56), "eval fwd", BN2D, 1.0),
    Case("BatchNorm1d", (256, 1024), "train fwd+bwd", layer_builder("BatchNorm1d", (1024,)), 1.0),
    # Per-call overhead: goal "within 1.2x of torch's time" is a ratio of at least 1 / 1.2.
    Case("BatchNorm1d tiny", (32, 64), "train fwd+bwd", layer_builder("BatchNorm1d", (64,)), 0.83),
    Case("BatchNorm1d tiny", (32, 64), "eval fwd", layer_builder("BatchNorm1d", (64,)), 1.0),
    Case("GroupNorm(32)", (32, 256, 28, 28), "train fwd+bwd",
         layer_builder("GroupNorm", (32, 256)), 1.2),
    Case("InstanceNorm2d(affine)", (32, 64, 56, 56), "train fwd+bwd",
         layer_builder("InstanceNorm2d", (64,), affine=True), 3.0),
    Case("LayerNorm", (8192, 768), "train fwd+bwd", layer_builder("LayerNorm", (768,)), 1.2),
    Case("RMSNorm", (8192, 768), "train fwd+bwd", layer_builder("RMSNorm", (768,)), 2.5),
    Case("BNAct2d(relu) vs nk BN+ReLU", (32, 64, 56, 56), "train fwd+bwd", bn_act_builder, 1.3),
    # BN + residual add + ReLU fused (nk.tools.fuse_model) vs torch BN, +=, relu_.
    Case("fused BN+add+ReLU vs torch BN,+=,relu_", (32, 64, 56, 56), "train fwd+bwd",
         bn_add_relu_builder, None, traffic=(3, 8)),
    Case("fused BN+add+ReLU vs torch BN,+=,relu_", (32, 64, 56, 56), "eval fwd",
         bn_add_relu_builder, None, traffic=(3, 8)),
    Case("small CNN (lab) step", (128, 1, 28, 28), "train step", cnn_builder, 1.2),
    Case("small CNN 1-D (MNIST-1D) step", (64, 1, 40), "train step", cnn_builder),
    # Masked BatchNorm1d, 30% padding (issue 12): vs gather + torch BN1d + scatter (goal
    # 1.5x), and within 1.2x of torch's BN1d over the padding (ratio >= 1 / 1.2).
    Case("masked BN1d 30% pad vs gather+BN+scatter", (32, 256, 400), "train fwd+bwd",
         masked_builder("gather"), 1.5),
    Case("masked BN1d 30% pad vs torch BN1d on padding", (32, 256, 400), "train fwd+bwd",
         masked_builder("plain"), 0.83),
    # Further rows, no goal in the issue.
    Case("BatchNorm2d", (128, 512, 7, 7), "train fwd+bwd", layer_builder("BatchNorm2d", (512,))),
    Case("BatchNorm2d", (128, 512, 7, 7), "eval fwd", layer_builder("BatchNorm2d", (512,))),
    Case("BatchNorm2d", (32, 64, 56, 56), "eval fwd", BN2D, None, "channels_last"),
    Case("BatchNorm3d", (8, 32, 16, 28, 28), "train fwd+bwd", layer_builder("BatchNorm3d", (32,))),
    Case("GroupNorm(32)", (128, 512, 7, 7), "train fwd+bwd",
         layer_builder("GroupNorm", (32, 512))),
    Case("masked BN1d 30% pad vs nk BN1d on padding", (32, 256, 400), "train fwd+bwd",
         masked_builder("normkit plain")),
    Case("masked BN1d 30% pad vs gather+BN+scatter", (32, 256, 400), "train fwd",
         masked_builder("gather")),
    # Batch-free norms (issue 13): normkit vs timm's own plain-torch code ("torch" column).
    Case("timm FilterResponseNormTlu2d", (32, 64, 56, 56), "train fwd+bwd",
         timm_builder("FilterResponseNormTlu2d", (64,)), 1.5),
    Case("timm FilterResponseNormAct2d(relu)", (32, 64, 56, 56), "train fwd+bwd",
         timm_builder("FilterResponseNormAct2d", (64,)), 1.5),
    Case("timm EvoNorm2dB0", (32, 64, 56, 56), "train fwd+bwd",
         timm_builder("EvoNorm2dB0", (64,)), 1.5),
    Case("timm EvoNorm2dS0(32 groups)", (32, 64, 56, 56), "train fwd+bwd",
         timm_builder("EvoNorm2dS0", (64,)), 1.5),
    Case("timm EvoNorm2dS0a(32 groups)", (32, 64, 56, 56), "train fwd+bwd",
         timm_builder("EvoNorm2dS0a", (64,)), 1.5),
    Case("timm GlobalResponseNorm(NCHW)", (32, 64, 56, 56), "train fwd+bwd",
         timm_builder("GlobalResponseNorm", (64,), channels_last=False), 1.5),
    Case("timm GlobalResponseNorm(NHWC)", (32, 56, 56, 64), "train fwd+bwd",
         timm_builder("GlobalResponseNorm", (64,)), 1.5, "NHWC"),
    Case("timm RmsNorm2d", (32, 64, 56, 56), "train fwd+bwd",
         timm_builder("RmsNorm2d", (64,)), 1.5),
    Case("timm RmsNorm2d", (32, 64, 56, 56), "train fwd+bwd",
         timm_builder("RmsNorm2d", (64,)), 1.5, "channels_last"),
    Case("timm EvoNorm2dB0", (32, 64, 56, 56), "eval fwd", timm_builder("EvoNorm2dB0", (64,))),
    Case("timm FilterResponseNormTlu2d", (32, 64, 56, 56), "eval fwd",
         timm_builder("FilterResponseNormTlu2d", (64,))),
]  # fmt: skip
QUICK_CASES: list[Case] = [
    Case("BatchNorm2d", (8, 16, 28, 28), "train fwd+bwd", layer_builder("BatchNorm2d", (16,))),
    Case("BatchNorm2d", (8, 16, 28, 28), "eval fwd", layer_builder("BatchNorm2d", (16,))),
    Case("BatchNorm1d", (64, 256), "train fwd+bwd", layer_builder("BatchNorm1d", (256,))),
    Case("GroupNorm(4)", (8, 16, 28, 28), "train fwd+bwd", layer_builder("GroupNorm", (4, 16))),
    Case("LayerNorm", (512, 256), "train fwd+bwd", layer_builder("LayerNorm", (256,))),
    Case("RMSNorm", (512, 256), "train fwd+bwd", layer_builder("RMSNorm", (256,))),
    Case("masked BN1d 30% pad vs gather+BN+scatter", (8, 64, 100), "train fwd+bwd",
         masked_builder("gather")),
    Case("fused BN+add+ReLU vs torch BN,+=,relu_", (8, 16, 28, 28), "train fwd+bwd",
         bn_add_relu_builder, None, traffic=(3, 8)),
]  # fmt: skip


def _roof(case: Case, ms: float, bandwidth: float) -> str:
    if case.min_bytes is None:
        return "-"
    return f"{roofline_fraction(case.min_bytes, ms / 1e3, bandwidth):.0%}"


def run(cases: list[Case], repeats: int, bandwidth: float, env: Environment):
    table, csv_rows = [], []
    for case in cases:
        providers = case.build(case.shape, case.mode, case.layout)
        # Calls of tens of microseconds: many more rounds (for at least a second) so the
        # median is not one scheduler tick's victim.
        timings = time_interleaved(
            providers, repeats=repeats, warmup=3, warmup_seconds=1.0,
            min_seconds=1.0 if torch.Size(case.shape).numel() < 2**16 else 0.0,
        )  # fmt: skip
        t, n = timings["torch"].q50, timings["normkit"].q50
        ratio = t / n
        paired = paired_ratio(timings["torch"], timings["normkit"])
        verdict = "" if case.goal is None else paired.verdict(case.goal)
        table.append(
            [
                case.label,
                "x".join(map(str, case.shape)),
                case.layout if case.layout != "NCHW" or len(case.shape) == 4 else "",
                case.mode,
                f"{t:.3f}",
                f"{n:.3f}",
                f"{ratio:.2f}x",
                f"[{paired.low:.2f}, {paired.high:.2f}]",
                "" if case.goal is None else f">= {case.goal}x {verdict}",
                _roof(case, t, bandwidth),
                _roof(case, n, bandwidth),
            ]
        )
        for provider, timing in timings.items():
            pair = paired_ratio(timings["torch"], timing)
            csv_rows.append(
                {
                    "op": case.label,
                    "shape": "x".join(map(str, case.shape)),
                    "layout": case.layout,
                    "mode": case.mode,
                    "provider": provider,
                    "q20_ms": round(timing.q20, 4),
                    "q50_ms": round(timing.q50, 4),
                    "q80_ms": round(timing.q80, 4),
                    "paired_ratio": round(pair.median, 4),
                    "ratio_ci_low": round(pair.low, 4),
                    "ratio_ci_high": round(pair.high, 4),
                    "goal": case.goal or "",
                    "min_bytes": case.min_bytes or "",
                    "bandwidth_gbs": round(bandwidth, 2),
                    **environment_row(env),
                }
            )
    return table, csv_rows


def _bandwidth_in_child(nbytes: int, threads: int) -> float:
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); "
        "from _harness import copy_bandwidth_gbs; "
        f"torch.set_num_threads({threads}); print(copy_bandwidth_gbs({nbytes}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


HEADERS = ["layer", "shape", "layout", "mode", "torch ms", "normkit ms", "ratio", "95% CI", "goal",
           "torch roof", "normkit roof"]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--csv", type=Path, default=RESULTS_DIR / "layers.csv")
    parser.add_argument("--only", default="", help="run rows whose label contains this")
    parser.add_argument(
        "--no-tuned-malloc", action="store_true", help="skip the second (tuned malloc) table"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = [c for c in (QUICK_CASES if args.quick else CASES) if args.only in c.label]
    repeats = args.repeats or (5 if args.quick else 25)
    env = Environment()
    # Measured in a child process: freeing its large buffers disturbs this process's memory
    # (later steps page-fault for seconds), which would bias the first rows.
    bandwidth = _bandwidth_in_child(32 * 2**20 if args.quick else 256 * 2**20, args.threads)
    print(
        f"# {env.cpu}, torch {env.torch}, numba {env.numba}, {env.threads} threads, "
        f"copy bandwidth {bandwidth:.1f} GB/s, malloc {env.malloc}, median of {repeats}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    table, csv_rows = run(cases, repeats, bandwidth, env)
    print_table(HEADERS, table)
    append_csv(args.csv, csv_rows)
    print(f"\nrows appended to {args.csv}", flush=True)
    if not args.no_tuned_malloc and env.malloc == "default":
        print("\n## Same rows with the malloc settings of docs/kernels.md, both sides:", flush=True)
        child = [sys.executable, __file__, "--no-tuned-malloc", *(argv or sys.argv[1:])]
        result = subprocess.run(child, env={**os.environ, **TUNED_MALLOC}, check=False)
        return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
