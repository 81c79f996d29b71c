"""Shared benchmark harness: interleaved timing of providers, quantiles, roofline, CSV.

Rules (see the project README): normkit and torch are measured in the same process,
interleaved round by round so that machine noise hits both alike; warm-up calls (JIT
compilation, allocator warm-up) are excluded; we report medians (with p20/p80) and the
ratio torch / normkit, plus the fraction of the memory-bandwidth roofline: the minimum
bytes an op must move divided by the measured copy bandwidth.

Ratios come with a 95% confidence interval (:func:`paired_ratio`): each round times every
provider once, so the per-round ratios pair two calls made a few milliseconds apart, and
the interval of their median says whether a ratio near a goal is a difference or noise.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Timing:
    """Quantiles of one provider's repeated timings, in milliseconds."""

    q20: float
    q50: float
    q80: float
    samples: int
    rounds_ms: tuple[float, ...] = ()  # the samples in the order they were taken

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timing:
        rounds = tuple(s * 1e3 for s in seconds)
        ms = sorted(rounds)
        quantiles = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else ms * 9
        return cls(
            q20=quantiles[1], q50=statistics.median(ms), q80=quantiles[7], samples=len(ms),
            rounds_ms=rounds,
        )  # fmt: skip


@dataclass(frozen=True)
class Ratio:
    """``median`` of the per-round ratios and its confidence interval ``[low, high]``
    (``coverage``: the interval's exact probability of holding the true median)."""

    median: float
    low: float
    high: float
    coverage: float

    def verdict(self, goal: float) -> str:
        """``met`` / ``MISSED`` by the median; ``(within noise)`` added when the interval
        holds the goal, so the other verdict is as likely."""
        text = "met" if self.median >= goal else "MISSED"
        return f"{text} (within noise)" if self.low < goal <= self.high else text

    def __str__(self) -> str:
        return f"{self.median:.3f}x [{self.low:.3f}, {self.high:.3f}]"


def median_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of ``values``: the order
    statistics ``(x_(k), x_(n+1-k))`` with the largest ``k`` whose coverage
    ``1 - 2 P(Binomial(n, 1/2) < k)`` is at least ``confidence`` (``k = 1``, the range, when
    no ``k`` reaches it: fewer than 6 values at 95%). Exact up to 1000 values, the normal
    approximation of the binomial above. Returns ``(low, high, coverage)``."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_interval needs at least one value")
    if n > 1000:
        z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
        k = max(1, math.floor(n / 2 - z * math.sqrt(n) / 2))
        coverage = 1.0 - 2.0 * statistics.NormalDist(n / 2, math.sqrt(n) / 2).cdf(k - 0.5)
        return xs[k - 1], xs[n - k], coverage
    total = 2**n
    below = 0  # the number of outcomes of Binomial(n, 1/2) below the k being tried
    k, coverage = 1, 1.0 - 2.0 / total
    for trial in range(1, n // 2 + 1):
        below += math.comb(n, trial - 1)
        if 1.0 - 2.0 * (below / total) < confidence:
            break
        k, coverage = trial, 1.0 - 2.0 * (below / total)
    return xs[k - 1], xs[n - k], coverage


def paired_ratio(baseline: Timing, other: Timing, confidence: float = 0.95) -> Ratio:
    """``baseline / other`` round by round (both from one :func:`time_interleaved` call):
    their median and its confidence interval (:func:`median_interval`). Pairing cancels
    the machine's drift between rounds, which the ratio of the two medians does not."""
    if len(baseline.rounds_ms) != len(other.rounds_ms) or not baseline.rounds_ms:
        raise ValueError("paired_ratio needs the timings of one time_interleaved call")
    ratios = [b / o for b, o in zip(baseline.rounds_ms, other.rounds_ms, strict=True)]
    low, high, coverage = median_interval(ratios, confidence)
    return Ratio(statistics.median(ratios), low, high, coverage)


def time_interleaved(
    providers: dict[str, Callable[[], object]],
    repeats: int = 30,
    warmup: int = 3,
    min_seconds: float = 0.0,
    warmup_seconds: float = 0.0,
) -> dict[str, Timing]:
    """Run each provider ``warmup`` times (and for at least ``warmup_seconds``), then
    ``repeats`` rounds of one call each, in turn.

    The order inside a round rotates, so no provider always runs first (cache, turbo).
    """
    names = list(providers)
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < warmup_seconds:
        for name in names:
            providers[name]()
        done += 1
    samples: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    round_index = 0
    while round_index < repeats or time.perf_counter() - start < min_seconds:
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            t0 = time.perf_counter()
            providers[name]()
            samples[name].append(time.perf_counter() - t0)
        round_index += 1
    return {name: Timing.of(values) for name, values in samples.items()}


def train_step(module: Callable, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """A timed step: forward and backward of ``module`` on a leaf copy of ``x``."""
    x = x.detach().requires_grad_(True)

    def step() -> None:
        x.grad = None
        module(x).backward(grad)

    return step


def no_grad_forward(module: Callable, x: torch.Tensor) -> Callable[[], None]:
    """A timed step: ``module(x)`` under ``torch.no_grad()``."""

    def step() -> None:
        with torch.no_grad():
            module(x)

    return step


def copy_bandwidth_gbs(nbytes: int = 256 * 2**20, repeats: int = 15) -> float:
    """Best read+write bandwidth of ``Tensor.copy_`` into a preallocated buffer (GB/s)."""
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


def roofline_fraction(min_bytes: int, seconds: float, bandwidth_gbs: float) -> float:
    """Fraction of the bandwidth bound achieved: (min_bytes / bandwidth) / measured time."""
    return (min_bytes / (bandwidth_gbs * 1e9)) / seconds


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class Environment:
    cpu: str = field(default_factory=cpu_name)
    threads: int = field(default_factory=torch.get_num_threads)
    torch: str = torch.__version__
    numba: str = ""
    python: str = platform.python_version()
    git_sha: str = field(default_factory=git_sha)
    malloc: str = ""
    timestamp: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )

    def __post_init__(self) -> None:
        try:
            import numba

            self.numba = numba.__version__
        except ImportError:
            self.numba = "absent"
        tuned = {k: os.environ[k] for k in os.environ if k.startswith("MALLOC_")}
        self.malloc = json.dumps(tuned) if tuned else "default"


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append tidy rows (one per op x provider x mode); writes a header for a new file. A
    file whose header lacks some of the rows' columns is rewritten with them added (its
    older rows empty there), so columns never shift under an old header."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0])
    if path.exists():
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            old_fields = list(reader.fieldnames or [])
            missing = [f for f in fields if f not in old_fields]
            old_rows = list(reader) if missing else []
        if missing:
            fields = old_fields + missing
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                writer.writerows(old_rows)
        else:
            fields = old_fields
    else:
        with path.open("w", newline="") as handle:
            csv.DictWriter(handle, fieldnames=fields).writeheader()
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=fields, restval="").writerows(rows)


def environment_row(env: Environment) -> dict:
    return asdict(env)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain, aligned text table (copyable into notes and the README)."""
    text = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)
    ]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-|-".join("-" * w for w in widths))
    for row in text:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
