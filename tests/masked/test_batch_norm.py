"""Masked BatchNorm family vs the gather oracle: the layer on a padded batch with a mask
equals the plain layer on the valid frames gathered into one (M, C) batch -- outputs, input
gradients at valid positions, weight/bias gradients, running statistics and
num_batches_tracked, over several training steps and an evaluation step -- and padded
positions get exactly 0 (output and gradient) even when they hold NaN/Inf."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normkit as nk
from tests.conftest import assert_close
from tests.masked._oracle import gather, hole_mask, padded, poison, prefix_mask

# id -> (input shape, mask: lengths for a prefix mask or "holes", layout)
CASES = {
    "1d (N,C,L) prefix, lengths 1..full": ((6, 3, 9), [9, 1, 4, 9, 2, 7], ""),
    "1d (N,C,L) holes": ((5, 3, 8), "holes", ""),
    "1d N=1, several valid": ((1, 3, 9), "holes", ""),
    "1d (N,C), mask over samples": ((6, 3), [4], ""),
    "1d (N,L,C) transposed to (N,C,L)": ((5, 3, 8), "holes", "transposed"),
    "2d prefix": ((3, 3, 4, 5), [5, 1, 3], ""),
    "2d channels_last holes": ((3, 3, 4, 5), "holes", "channels_last"),
    "3d 5-D holes": ((2, 3, 2, 3, 4), "holes", ""),
    "3d channels_last_3d prefix": ((2, 3, 2, 3, 4), [4, 1], "channels_last"),
}

OPTIONS = {
    "default": {},
    "momentum=None, affine=False": {"momentum": None, "affine": False},
    "track_running_stats=False": {"track_running_stats": False},
}


class _ThenAct(nn.Module):
    """torch's BatchNorm1d followed by an activation: the oracle of BatchNormAct."""

    def __init__(self, channels: int, act: nn.Module, **options):
        super().__init__()
        self.bn = nn.BatchNorm1d(channels, **options)
        self.act = act

    def forward(self, x):
        return self.act(self.bn(x))


def _family(name: str, rank: int, channels: int, options: dict):
    """(masked layer, oracle layer on (M, C) frames, the oracle's BatchNorm)."""
    d = max(rank - 2, 1)
    if name == "BatchNorm":
        ours = getattr(nk.nn, f"BatchNorm{d}d")(channels, **options)
        oracle = nn.BatchNorm1d(channels, **options)
        return ours, oracle, oracle
    if name == "SyncBatchNorm":  # no process group: BatchNorm
        return nk.nn.SyncBatchNorm(channels, **options), *(
            [nn.BatchNorm1d(channels, **options)] * 2
        )
    if name == "BatchRenorm":
        renorm = {"rmax": 1.5, "dmax": 0.5, **options}
        ours = getattr(nk.nn, f"BatchRenorm{d}d")(channels, **renorm)
        oracle = nk.nn.BatchRenorm1d(channels, **renorm)
        return ours, oracle, oracle
    if name.startswith("BatchNormAct"):
        act = name[len("BatchNormAct(") : -1]
        ours = getattr(nk.nn, f"BatchNormAct{d}d")(channels, act=act, **options)
        oracle = _ThenAct(channels, {"silu": nn.SiLU(), "relu": nn.ReLU()}[act], **options)
        return ours, oracle, oracle.bn
    raise AssertionError(name)


FAMILIES = ["BatchNorm", "BatchRenorm", "BatchNormAct(silu)", "BatchNormAct(relu)", "SyncBatchNorm"]


def _exists(family: str, case: str, options: str) -> bool:
    """BatchRenorm always tracks running statistics; BatchNormAct has no 3-D layer."""
    if family == "BatchRenorm" and "track_running_stats" in OPTIONS[options]:
        return False
    return not (family.startswith("BatchNormAct") and len(CASES[case][0]) == 5)


GRID = [
    (family, case, options)
    for family in FAMILIES
    for case in CASES
    for options in OPTIONS
    if _exists(family, case, options)
]


def _share_state(ours: nn.Module, oracle_bn: nn.Module, generator: torch.Generator) -> None:
    channels = ours.num_features
    with torch.no_grad():
        for layer in (ours, oracle_bn):
            if layer.weight is not None:
                gen_state = generator.get_state()
                layer.weight.copy_(torch.randn(channels, generator=generator) * 0.5 + 1)
                layer.bias.copy_(torch.randn(channels, generator=generator))
                generator.set_state(gen_state)
            if layer.running_mean is not None:
                gen_state = generator.get_state()
                layer.running_mean.copy_(torch.randn(channels, generator=generator))
                layer.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
                generator.set_state(gen_state)


def _batch(case, step, dtype, generator):
    shape, lengths, layout = case
    spatial = shape[2:]
    if lengths == "holes":
        mask = hole_mask((shape[0], *spatial), generator)
    else:
        mask = prefix_mask(lengths, (shape[0], *spatial))
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * 2 + 1 + step
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    x, g = poison(x, mask).to(dtype), poison(g, mask).to(dtype)
    if layout == "channels_last":
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x, g = x.contiguous(memory_format=fmt), g.contiguous(memory_format=fmt)
    elif layout == "transposed":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    return x, mask, g


def check_against_oracle(family, case, options, dtype=torch.float64, steps=2):
    generator = torch.Generator().manual_seed(0)
    shape = case[0]
    ours, oracle, oracle_bn = _family(family, len(shape), shape[1], options)
    ours, oracle = ours.to(dtype), oracle.to(dtype)
    _share_state(ours, oracle_bn, generator)
    for step in range(steps + 1):
        training = step < steps
        ours.train(training)
        oracle.train(training)
        x, mask, g = _batch(case, step, dtype, generator)
        x = x.requires_grad_()
        y = ours(x, mask=mask)
        y.backward(g)
        frames = gather(x.detach(), mask).clone().requires_grad_()
        expected = oracle(frames)
        expected.backward(gather(g, mask))
        what = f"{'train' if training else 'eval'} step {step}"
        assert y.stride() == x.stride() or not case[2], f"{what}: layout not kept"
        assert_close(gather(y, mask), expected, dtype, what=f"{what} y")
        assert torch.equal(padded(y, mask), torch.zeros_like(padded(y, mask))), what
        assert_close(gather(x.grad, mask), frames.grad, dtype, what=f"{what} dx", floor=1.0)
        assert torch.equal(padded(x.grad, mask), torch.zeros_like(padded(x.grad, mask))), what
        for name in ("weight", "bias"):
            ours_p, oracle_p = getattr(ours, name), getattr(oracle_bn, name)
            if oracle_p is None:
                assert ours_p is None
                continue
            assert_close(ours_p.grad, oracle_p.grad, dtype, what=f"{what} d{name}", floor=1.0)
            ours_p.grad = oracle_p.grad = None
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            mine, theirs = getattr(ours, name), getattr(oracle_bn, name)
            if theirs is None:
                assert mine is None, name
            elif name == "num_batches_tracked":
                assert int(mine) == int(theirs), f"{what} {name}"
            else:
                assert_close(mine, theirs, dtype, what=f"{what} {name}")


@pytest.mark.parametrize(("family", "case", "options"), GRID)
def test_masked_layer_equals_the_layer_on_the_gathered_valid_frames(backend, family, case, options):
    check_against_oracle(family, CASES[case], OPTIONS[options])


@pytest.mark.parametrize("case", ["1d (N,C,L) holes", "2d channels_last holes"])
@pytest.mark.parametrize("family", ["BatchNorm", "BatchNormAct(silu)"])
def test_float32(backend, family, case):
    check_against_oracle(family, CASES[case], {}, torch.float32)


def test_functional_batch_norm_with_mask_equals_gathered_batch_norm(backend):
    """``nk.functional.batch_norm(..., mask=m)``: the issue's signature, running statistics
    with the valid count (Bessel n / (n - 1))."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, 11, generator=generator, dtype=torch.float64)
    mask = nk.functional.lengths_to_mask(torch.tensor([11, 2, 7, 5]), 11)
    rm, rv = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    rm2, rv2 = rm.clone(), rv.clone()
    y = nk.functional.batch_norm(x, rm, rv, None, None, True, 0.3, 1e-5, mask=mask)
    expected = nn.functional.batch_norm(gather(x, mask), rm2, rv2, None, None, True, 0.3, 1e-5)
    assert_close(gather(y, mask), expected)
    assert_close(rm, rm2)
    assert_close(rv, rv2)
    n = int(mask.sum())
    unbiased = gather(x, mask).var(0, unbiased=True)
    assert_close(rv, 0.7 + 0.3 * unbiased)
    assert n == 25
