"""What every BatchNorm variant owes: torch.compile, state_dict round trips, pickle,
factory kwargs, runnable docstring examples."""

from __future__ import annotations

import copy
import doctest
import importlib
import io
import pickle

import pytest
import torch

import normkit as nk
from tests.conftest import assert_close

# (class name, constructor args, constructor kwargs, input shape)
VARIANTS = [
    ("BatchRenorm1d", (4,), {"rmax": 2.0, "dmax": 0.5}, (6, 4)),
    ("BatchRenorm2d", (4,), {"warmup_steps": 3}, (3, 4, 3, 3)),
    ("BatchRenorm3d", (4,), {}, (2, 4, 2, 2, 3)),
    ("GhostBatchNorm1d", (4,), {"virtual_batch_size": 3}, (7, 4)),
    ("GhostBatchNorm2d", (4,), {"virtual_batch_size": 2}, (5, 4, 3, 3)),
    ("FrozenBatchNorm1d", (4,), {}, (6, 4, 3)),
    ("FrozenBatchNorm2d", (4,), {}, (3, 4, 3, 3)),
    ("BatchNormAct1d", (4,), {"act": "silu"}, (6, 4)),
    ("BatchNormAct2d", (4,), {"act": "relu"}, (3, 4, 3, 3)),
    ("SyncBatchNorm", (4,), {}, (3, 4, 3, 3)),
]
IDS = [v[0] for v in VARIANTS]


def build(cls, args, kwargs, dtype=torch.float64, seed=0):
    layer = getattr(nk.nn, cls)(*args, **kwargs).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*layer.named_parameters(), *layer.named_buffers()]:
            if t.dtype == torch.long:
                continue
            values = torch.rand(t.shape, generator=gen, dtype=torch.float64) + 0.5
            t.copy_(values if "var" in name or name == "weight" else values - 1.0)
    return layer


def run(layer, x, grad, module=None):
    """Forward and backward through ``layer`` (maybe compiled); parameters of ``module``."""
    module = layer if module is None else module
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(grad)
    params = {n: p.grad.clone() for n, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = None
    return y.detach(), x.grad, params


@pytest.mark.slow
@pytest.mark.parametrize(("cls", "args", "kwargs", "shape"), VARIANTS, ids=IDS)
def test_torch_compile_fullgraph_matches_eager(cls, args, kwargs, shape, fresh_compile):
    eager = build(cls, args, kwargs)
    compiled_layer = copy.deepcopy(eager)
    compiled = torch.compile(compiled_layer, fullgraph=True, dynamic=False)
    for step in range(2):
        x = torch.randn(shape, dtype=torch.float64) + step
        g = torch.randn(shape, dtype=torch.float64)
        y_e, dx_e, p_e = run(eager, x, g)
        y_c, dx_c, p_c = run(compiled, x, g, compiled_layer)
        assert_close(y_c, y_e, what=f"step {step} y")
        assert_close(dx_c, dx_e, what="dx", floor=1.0)
        for name in p_e:
            assert_close(p_c[name], p_e[name], what=name, floor=1.0)
        for (k, a), (_, b) in zip(
            compiled_layer.state_dict().items(), eager.state_dict().items(), strict=True
        ):
            assert_close(a, b, torch.float64, what=k)
    eager.eval()
    compiled_layer.eval()
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        assert_close(compiled(x), eager(x), what="eval")


@pytest.mark.parametrize(("cls", "args", "kwargs", "shape"), VARIANTS, ids=IDS)
def test_state_dict_round_trip_through_a_checkpoint(cls, args, kwargs, shape):
    layer = build(cls, args, kwargs, torch.float32)
    layer(torch.randn(shape))  # some training state
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = getattr(nk.nn, cls)(*args, **kwargs)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for (k, a), (_, b) in zip(fresh.state_dict().items(), layer.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.randn(shape)
    for clone in (fresh, copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        clone.eval()
        layer.eval()
        assert torch.equal(clone(x), layer(x))
        assert repr(clone) == repr(layer)


@pytest.mark.parametrize(("cls", "args", "kwargs", "shape"), VARIANTS, ids=IDS)
def test_factory_kwargs_and_float64(cls, args, kwargs, shape):
    layer = getattr(nk.nn, cls)(*args, **kwargs, device="cpu", dtype=torch.float64)
    for name, t in layer.state_dict().items():
        assert t.dtype == (torch.long if "num_batches" in name else torch.float64), name
    assert layer(torch.randn(shape, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    "module",
    [
        "normkit.nn.batch_renorm",
        "normkit.nn.ghost",
        "normkit.nn.frozen",
        "normkit.nn.batchnorm_act",
        "normkit.functional.ghost_batch_norm",
    ],
)
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
