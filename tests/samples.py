"""NORM_SAMPLES: the single registry of layer configurations driving the generic tests.

Each sample builds the same layer from ``torch.nn`` or ``normkit.nn`` (``ns``) and names an
input shape. Family-specific option grids (affine, running statistics, momentum, ...) are
expanded here once, so every contract test sees the same cases.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NormSample:
    cls: str  # class name, identical in torch.nn and normkit.nn
    args: tuple
    input_shape: tuple[int, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    desc: str = ""

    def build(self, ns):
        return getattr(ns, self.cls)(*self.args, **self.kwargs)

    @property
    def tracks_running_stats(self) -> bool:
        default = not self.cls.startswith("Instance")
        return self.cls.startswith(("Batch", "Instance")) and self.kwargs.get(
            "track_running_stats", default
        )

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        shape = "x".join(map(str, self.input_shape))
        return f"{self.cls}[{shape}]({opts}){'#' + self.desc if self.desc else ''}"


def _grid(**options):
    keys = list(options)
    for values in itertools.product(*(options[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


_BATCH_SHAPES = [
    ("BatchNorm1d", (2, 3), "N=2, no length"),
    ("BatchNorm1d", (4, 3, 7), "odd length"),
    ("BatchNorm2d", (2, 3, 5, 7), "N=2, odd spatial"),
    ("BatchNorm2d", (3, 3, 1, 1), "L=1 spatial"),
    ("BatchNorm3d", (2, 3, 3, 4, 5), "5-D"),
]
_INSTANCE_SHAPES = [
    ("InstanceNorm1d", (3, 3, 7), "odd length"),
    ("InstanceNorm2d", (2, 3, 5, 6), ""),
    ("InstanceNorm3d", (2, 3, 2, 3, 5), "5-D"),
]


def _batch_samples():
    for cls, shape, desc in _BATCH_SHAPES:
        for kw in _grid(
            affine=[True, False], track_running_stats=[True, False], momentum=[0.1, 0.5, None]
        ):
            yield NormSample(cls, (3,), shape, kw, desc)
        yield NormSample(cls, (3,), shape, {"bias": False}, desc + " bias=False")


def _instance_samples():
    for cls, shape, desc in _INSTANCE_SHAPES:
        for kw in _grid(affine=[True, False], track_running_stats=[True, False]):
            yield NormSample(cls, (3,), shape, kw, desc)
        yield NormSample(cls, (3,), shape, {"track_running_stats": True, "momentum": 0.5}, desc)


def _other_samples():
    for kw in _grid(elementwise_affine=[True, False], bias=[True, False]):
        yield NormSample("LayerNorm", (6,), (4, 5, 6), kw)
    yield NormSample("LayerNorm", ((5, 6),), (3, 5, 6), {}, "2-D normalized_shape")
    yield NormSample("LayerNorm", (7,), (1, 7), {"eps": 1e-3}, "single row")
    for kw in _grid(affine=[True, False]):
        yield NormSample("GroupNorm", (2, 6), (3, 6, 5, 3), kw)
        yield NormSample("GroupNorm", (1, 4), (2, 4, 5), kw, "one group (LayerNorm)")
        yield NormSample("GroupNorm", (4, 4), (2, 4, 3, 3), kw, "group == channel (InstanceNorm)")
    yield NormSample("GroupNorm", (3, 6), (2, 6, 2, 3, 2), {}, "5-D")
    yield NormSample("GroupNorm", (2, 4), (3, 4), {}, "no spatial dims")
    for kw in _grid(elementwise_affine=[True, False], eps=[None, 1e-5]):
        yield NormSample("RMSNorm", (6,), (4, 5, 6), kw)
    yield NormSample("RMSNorm", ((3, 4),), (5, 3, 4), {}, "2-D normalized_shape")


NORM_SAMPLES: list[NormSample] = [*_batch_samples(), *_instance_samples(), *_other_samples()]

# One representative per class, for the slower contract tests.
REPRESENTATIVES: list[NormSample] = list({s.cls: s for s in reversed(NORM_SAMPLES)}.values())
