"""The running-statistics guard on every path a layer call can take (tests/paths.py): the
numba and torch backends, eager and compiled, float16/bfloat16 through the torch fallback.

A training batch with NaN/Inf leaves ``running_mean``, ``running_var`` and
``num_batches_tracked`` as they were and warns, naming the layer; its output propagates NaN
as torch's does; the next finite batch updates the statistics again.

Also here: each path really runs the backend it is named after (so that the tests taking
the ``path`` fixture test what they say).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import normkit as nk
from normkit.functional import NonFiniteStatisticsWarning
from tests.paths import EVERY_PATH, HALF_DTYPES


@dataclass(frozen=True)
class GuardCase:
    cls: str
    input_shape: tuple[int, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = False

    def build(self, ns):
        return getattr(ns, self.cls)(3, **self.kwargs)

    @property
    def has_torch_twin(self) -> bool:
        return hasattr(torch.nn, self.cls)

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        layout = "-channels_last" if self.channels_last else ""
        return f"{self.cls}({opts})[{'x'.join(map(str, self.input_shape))}]{layout}"


GUARD_CASES = [
    GuardCase("BatchNorm1d", (6, 3)),
    GuardCase("BatchNorm1d", (4, 3, 5), {"momentum": None}),
    GuardCase("BatchNorm2d", (4, 3, 5, 5)),
    GuardCase("BatchNorm2d", (4, 3, 5, 5), {"affine": False}, channels_last=True),
    GuardCase("BatchNorm3d", (2, 3, 3, 2, 3)),
    GuardCase("InstanceNorm1d", (3, 3, 6), {"track_running_stats": True}),
    GuardCase("InstanceNorm2d", (2, 3, 4, 5), {"affine": True, "track_running_stats": True}),
    GuardCase("BatchNormAct2d", (4, 3, 5, 5), {"act": "relu"}),
    GuardCase("BatchRenorm2d", (4, 3, 5, 5)),
    GuardCase("GhostBatchNorm2d", (4, 3, 5, 5), {"virtual_batch_size": 2}),
]


def _input(case: GuardCase, dtype: torch.dtype, offset: float = 0.0) -> torch.Tensor:
    x = (torch.randn(case.input_shape) * 2 + 0.5 + offset).to(dtype)
    if case.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _state(layer: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in layer.state_dict().items()}


#: NaN on every path; Inf (the same finiteness check) on the eager ones, where it costs no
#: second trace of each layer.
NON_FINITE = [
    pytest.param(*param.values, bad, id=f"{param.id}-{bad}")
    for param in EVERY_PATH
    for bad in (float("nan"), float("inf"))
    if bad != float("inf") or not param.values[0].compiled
]


@pytest.mark.parametrize("case", GUARD_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize(("path", "dtype", "bad"), NON_FINITE, indirect=["path"])
def test_non_finite_batch_leaves_running_stats_and_warns(path, dtype, case, bad):
    layer = case.build(nk.nn).to(dtype)
    # torch's kernel takes the cumulative-average factor 1 / (num_batches_tracked + 1) as a
    # Python float: read from a buffer, a data-dependent value that no full graph can hold
    # (torch.nn.BatchNorm1d(momentum=None) fails with fullgraph=True too). The numba op
    # computes the factor inside the op.
    cumulative_on_torch = "momentum" in case.kwargs and case.kwargs["momentum"] is None
    call = path.prepare(layer, fullgraph=not (cumulative_on_torch and path.backend != "numba"))
    initial = _state(layer)
    call(_input(case, dtype))  # a finite batch moves the statistics ...
    moved = _state(layer)
    assert not torch.equal(moved["running_mean"], initial["running_mean"])
    x_bad = _input(case, dtype, offset=1.0)
    x_bad[1, 2, ...] = bad
    name = re.escape(f"{case.cls}(3)")
    with pytest.warns(NonFiniteStatisticsWarning, match=rf"{name}: the batch statistics are not"):
        y = call(x_bad)
    for key, value in layer.state_dict().items():  # ... a non-finite one does not
        assert torch.equal(value, moved[key]), f"{key} changed on a non-finite batch"
    if case.has_torch_twin:
        theirs = case.build(torch.nn).to(dtype)
        theirs.load_state_dict(moved)
        y_ref = theirs(x_bad)
        assert torch.equal(torch.isnan(y), torch.isnan(y_ref)), "NaN positions differ from torch"
        assert not torch.isfinite(theirs.running_var).all()  # where torch's are poisoned
    call(_input(case, dtype, offset=2.0))  # and the next finite batch updates them again
    after = layer.state_dict()
    assert not torch.equal(after["running_var"], moved["running_var"])
    counted = 0 if case.cls.startswith("Instance") else 1  # torch's InstanceNorm counts nothing
    if "num_batches_tracked" in after:
        assert int(after["num_batches_tracked"]) == int(moved["num_batches_tracked"]) + counted


# ---------------------------------------------------------------------------------------
# Each path runs the backend it is named after.


class _OpRecorder(TorchDispatchMode):
    """The ops an eager call dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func))
        return func(*args, **(kwargs or {}))


def _graph_ops(found: set[str]):
    """An aot_eager-like compile backend that records the ops of the graphs it runs
    (including those a functionalized in-place op wraps)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def compiler(gm, example_inputs):
        for node in gm.graph.nodes:
            if node.op == "call_function":
                found.add(str(node.target))
                found.update(str(a) for a in node.args if isinstance(a, torch._ops.OpOverload))
        return make_boxed_func(gm.forward)

    return aot_autograd(fw_compiler=compiler, bw_compiler=compiler)


#: An op of each backend's BatchNorm training forward that the other backend never runs.
_SIGNATURE_OPS = {
    "numba": "normkit.batch_norm_forward",
    "torch": "normkit.keep_running_stats_finite",
}


@pytest.mark.parametrize(("path", "dtype"), EVERY_PATH, indirect=["path"])
def test_each_path_runs_its_backend(path, dtype):
    layer = nk.nn.BatchNorm2d(3).to(dtype)
    x = torch.randn(4, 3, 5, 5, dtype=dtype, requires_grad=True)
    if path.compiled:
        ops: set[str] = set()
        torch.compile(layer, backend=_graph_ops(ops), fullgraph=True)(x).sum().backward()
    else:
        recorder = _OpRecorder()
        with recorder:
            layer(x).sum().backward()
        ops = recorder.ops
    expected = "torch" if dtype in HALF_DTYPES else path.backend
    want, other = _SIGNATURE_OPS[expected], _SIGNATURE_OPS[({"numba", "torch"} - {expected}).pop()]
    assert any(op.startswith(want) for op in ops), sorted(ops)
    assert not any(op.startswith(other) for op in ops), sorted(ops)
