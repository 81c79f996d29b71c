"""BatchRenorm1d/2d/3d vs the NumPy reference of the paper's algorithm, and vs BatchNorm."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import normkit as nk
from normkit import reference as ref
from normkit import reference_variants as rv
from normkit.functional.batch_renorm import batch_renorm, renorm_limits
from tests.conftest import assert_close

SHAPES = [
    ("BatchRenorm1d", (6, 3), "(N, C)"),
    ("BatchRenorm1d", (4, 3, 5), "(N, C, L)"),
    ("BatchRenorm2d", (3, 3, 4, 5), "odd spatial"),
    ("BatchRenorm3d", (2, 3, 2, 3, 4), "5-D"),
]
# (rmax, dmax): loose enough that r, d are not clipped / tight enough that they are.
LIMITS = [(10.0, 10.0), (1.2, 0.1), (3.0, 0.5)]


def _randomize(layer, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.num_features, generator=gen) * 0.5 + 1)
        layer.bias.copy_(torch.randn(layer.num_features, generator=gen))
        layer.running_mean.copy_(torch.randn(layer.num_features, generator=gen))
        layer.running_var.copy_(torch.rand(layer.num_features, generator=gen) + 0.5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("limits", LIMITS, ids=lambda v: f"rmax={v[0]},dmax={v[1]}")
@pytest.mark.parametrize(("cls", "shape", "desc"), SHAPES, ids=[s[2] for s in SHAPES])
def test_matches_paper_reference_over_steps(cls, shape, desc, limits, dtype):
    rmax, dmax = limits
    layer = getattr(nk.nn, cls)(3, rmax=rmax, dmax=dmax, momentum=0.3).to(dtype)
    _randomize(layer)
    state = {k: v.detach().to(torch.float64).numpy().copy() for k, v in layer.state_dict().items()}
    clipped = False
    for step in range(3):
        x = (torch.randn(shape, dtype=torch.float64) * 2 + step).to(dtype).requires_grad_(True)
        g = torch.randn(shape, dtype=torch.float64).to(dtype)
        y = layer(x)
        y.backward(g)
        xn, gn = x.detach().double().numpy(), g.double().numpy()
        w = state["weight"]
        y_ref, mu, var, r, d = rv.batch_renorm_train(
            xn, state["running_mean"], state["running_var"], w, state["bias"], rmax, dmax
        )
        dx_ref, dw_ref, db_ref = rv.batch_renorm_train_backward(gn, xn, r, d, w)
        clipped |= bool((r == rmax).any() or (r == 1 / rmax).any() or (np.abs(d) == dmax).any())
        floor = float(np.abs(gn).max())
        assert_close(y, torch.from_numpy(y_ref), dtype, what=f"step {step} y")
        assert_close(x.grad, torch.from_numpy(dx_ref), dtype, what="dx", floor=floor)
        assert_close(layer.weight.grad, torch.from_numpy(dw_ref), dtype, what="dw", floor=floor)
        assert_close(layer.bias.grad, torch.from_numpy(db_ref), dtype, what="db", floor=floor)
        n = xn.size // 3
        rm, rvar, nbt = ref.update_running_stats(
            state["running_mean"], state["running_var"], mu, var, n, 0.3,
            int(state["num_batches_tracked"]),
        )  # fmt: skip
        state["running_mean"], state["running_var"] = rm, rvar
        state["num_batches_tracked"] = np.array(nbt)
        assert_close(layer.running_mean, torch.from_numpy(rm), dtype, what="running_mean")
        assert_close(layer.running_var, torch.from_numpy(rvar), dtype, what="running_var")
        assert int(layer.num_batches_tracked) == nbt
        layer.weight.grad = layer.bias.grad = None
    assert clipped == (limits != (10.0, 10.0)), "the grid must exercise both regimes"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize(("cls", "shape", "desc"), SHAPES, ids=[s[2] for s in SHAPES])
def test_rmax_1_dmax_0_is_exactly_batch_norm(cls, shape, desc, momentum, dtype, backend):
    """Bit for bit, on each available backend (the ``backend`` fixture)."""
    bn_cls = cls.replace("BatchRenorm", "BatchNorm")
    bn = getattr(nk.nn, bn_cls)(3, momentum=momentum).to(dtype)
    renorm = getattr(nk.nn, cls)(3, rmax=1.0, dmax=0.0, momentum=momentum).to(dtype)
    _randomize(bn)
    renorm.load_state_dict(bn.state_dict())
    for step in range(3):
        x = torch.randn(shape, dtype=dtype) * 3 + step
        g = torch.randn(shape, dtype=dtype)
        outs = []
        for layer in (bn, renorm):
            xi = x.clone().requires_grad_(True)
            y = layer(xi)
            y.backward(g)
            outs.append((y, xi.grad, layer.weight.grad.clone(), layer.bias.grad.clone()))
            layer.weight.grad = layer.bias.grad = None
        for a, b in zip(*outs, strict=True):
            assert torch.equal(a, b)
        for (k, a), (_, b) in zip(
            bn.state_dict().items(), renorm.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), k
    bn.eval()
    renorm.eval()
    x = torch.randn(shape, dtype=dtype)
    assert torch.equal(bn(x), renorm(x))


def test_warmup_schedule_ramps_limits_and_is_saved_in_state_dict():
    assert renorm_limits(0, 3.0, 5.0, 0) == (3.0, 5.0)
    assert renorm_limits(0, 3.0, 5.0, 100) == (1.0, 0.0)
    assert renorm_limits(50, 3.0, 5.0, 100) == (2.0, 2.5)
    assert renorm_limits(500, 3.0, 5.0, 100) == (3.0, 5.0)
    layer = nk.nn.BatchRenorm1d(3, rmax=3.0, dmax=5.0, warmup_steps=4).double()
    _randomize(layer)
    x_shape = (8, 3)
    for step in range(6):
        assert layer.current_limits() == rv.renorm_limits(step, 3.0, 5.0, 4)
        rmax_t, dmax_t = layer.current_limits()
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        x = torch.randn(x_shape, dtype=torch.float64) * (1 + step) + 3 * step
        y = layer(x)
        y_ref, *_ = rv.batch_renorm_train(
            x.numpy(), before["running_mean"].numpy(), before["running_var"].numpy(),
            before["weight"].detach().numpy(), before["bias"].detach().numpy(), rmax_t, dmax_t,
        )  # fmt: skip
        assert_close(y, torch.from_numpy(y_ref), what=f"step {step}")
    # The schedule position (num_batches_tracked) travels with the state dict.
    fresh = nk.nn.BatchRenorm1d(3, rmax=3.0, dmax=5.0, warmup_steps=4)
    fresh.load_state_dict(layer.state_dict())
    assert fresh.current_limits() == (3.0, 5.0)


def test_state_dict_is_batch_norms_and_loads_both_ways():
    renorm = nk.nn.BatchRenorm2d(4, warmup_steps=10)
    torch_bn = torch.nn.BatchNorm2d(4)
    assert list(renorm.state_dict()) == list(torch_bn.state_dict())
    renorm(torch.randn(4, 4, 3, 3))
    torch_bn.load_state_dict(renorm.state_dict())  # strict
    renorm2 = nk.nn.BatchRenorm2d(4)
    renorm2.load_state_dict(torch_bn.state_dict())
    for k, v in renorm.state_dict().items():
        assert torch.equal(renorm2.state_dict()[k], v), k
    renorm.eval()
    torch_bn.eval()
    x = torch.randn(3, 4, 5, 5)
    assert_close(renorm(x), torch_bn(x))  # inference is BatchNorm's


def test_affine_false_and_no_clipping_regime_match_reference():
    layer = nk.nn.BatchRenorm1d(3, affine=False, rmax=1.5, dmax=0.2).double()
    with torch.no_grad():
        layer.running_mean.fill_(0.3)
        layer.running_var.fill_(2.0)
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref, _, _, r, d = rv.batch_renorm_train(
        x.detach().numpy(), np.full(3, 0.3), np.full(3, 2.0), None, None, 1.5, 0.2
    )
    dx_ref, _, _ = rv.batch_renorm_train_backward(g.numpy(), x.detach().numpy(), r, d, None)
    assert_close(y, torch.from_numpy(y_ref))
    assert_close(x.grad, torch.from_numpy(dx_ref), floor=1.0)


def test_gradcheck_and_gradgradcheck_with_clipped_correction():
    """With r, d at their clip limits they are locally constant, so finite differences
    see the same function autograd differentiates (stop-gradient r, d)."""
    running_mean = torch.full((3,), 5.0, dtype=torch.float64)
    running_var = torch.full((3,), 9.0, dtype=torch.float64)
    x = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        rm, rvar = running_mean.clone(), running_var.clone()
        return batch_renorm(x, rm, rvar, w, b, True, 0.1, 1e-5, rmax=1.5, dmax=0.5)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_non_finite_batch_keeps_running_stats_and_schedule():
    layer = nk.nn.BatchRenorm1d(2, warmup_steps=5)
    x = torch.randn(4, 2)
    x[0, 0] = float("nan")
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.warns(RuntimeWarning, match=r"BatchRenorm1d\(2\)"):
        y = layer(x)
    assert torch.isnan(y[:, 0]).all()
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rmax": 0.5}, r"rmax must be a finite number >= 1.*got rmax=0.5"),
        ({"rmax": float("inf")}, "rmax must be a finite number"),
        ({"dmax": -1.0}, r"dmax must be a finite number >= 0.*got dmax=-1.0"),
        ({"dmax": float("nan")}, "dmax must be a finite number"),
        ({"rmax": "3"}, "rmax must be a finite number"),
        ({"warmup_steps": -1}, "warmup_steps must be a non-negative integer"),
        ({"warmup_steps": 2.5}, "warmup_steps must be a non-negative integer"),
        ({"momentum": 1.5}, "momentum must be in"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nk.nn.BatchRenorm2d(3, **kwargs)


def test_bad_input():
    layer = nk.nn.BatchRenorm2d(3)
    with pytest.raises(ValueError, match=r"BatchRenorm2d\(3\): expected 4D input \(got 3D"):
        layer(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"expected 3 channels at dim 1.*got 4"):
        layer(torch.randn(2, 4, 2, 2))
    with pytest.raises(TypeError, match="expected a floating-point input"):
        layer(torch.ones(2, 3, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        layer(torch.randn(1, 3, 1, 1))
    with pytest.raises(ValueError, match="needs running_mean and running_var in training"):
        batch_renorm(torch.randn(4, 3), None, None, training=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer.eval()(torch.randn(1, 3, 1, 1))  # one value per channel is fine in eval
