"""torch.autograd.gradcheck and gradgradcheck in float64 for every op, on each backend."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import normkit.functional as nkf


def _leaf(*shape, scale=1.0, offset=0.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale + offset).requires_grad_()


def _cases():
    def bn_train(affine):
        w, b = (_leaf(3), _leaf(3)) if affine else (None, None)
        rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        x = _leaf(3, 3, 4, scale=2, offset=1)
        return (lambda x, *p: nkf.batch_norm(x, rm.clone(), rv.clone(), *p, training=True)), [
            x,
            *(t for t in (w, b) if t is not None),
        ]

    def bn_eval():
        rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
        return (lambda x, w, b: nkf.batch_norm(x, rm, rv, w, b, training=False)), [
            _leaf(2, 3, 5),
            _leaf(3),
            _leaf(3),
        ]

    def instance():
        return (lambda x, w, b: nkf.instance_norm(x, weight=w, bias=b)), [
            _leaf(2, 3, 5),
            _leaf(3),
            _leaf(3),
        ]

    def layer():
        return (lambda x, w, b: nkf.layer_norm(x, (2, 4), w, b)), [
            _leaf(3, 2, 4, offset=1),
            _leaf(2, 4),
            _leaf(2, 4),
        ]

    def rms():
        return (lambda x, w: nkf.rms_norm(x, (5,), w, 1e-6)), [_leaf(4, 5, offset=0.5), _leaf(5)]

    def group():
        return (lambda x, w, b: nkf.group_norm(x, 2, w, b)), [
            _leaf(2, 4, 3, offset=1),
            _leaf(4),
            _leaf(4),
        ]

    return {
        "batch_norm_train_affine": lambda: bn_train(True),
        "batch_norm_train_plain": lambda: bn_train(False),
        "batch_norm_eval": bn_eval,
        "instance_norm": instance,
        "layer_norm": layer,
        "rms_norm": rms,
        "group_norm": group,
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(backend, name):
    fn, inputs = CASES[name]()
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_gradgradcheck(backend, name):
    fn, inputs = CASES[name]()
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradient_penalty_matches_torch():
    """create_graph=True (e.g. a WGAN-GP gradient penalty) gives torch's second derivatives."""
    import torch.nn.functional as F

    x = _leaf(4, 3, 5, offset=1)
    w, b = _leaf(3), _leaf(3)

    def penalty(fn):
        y = fn(x, None, None, w, b, training=True)
        (gx,) = torch.autograd.grad((y**3).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (x, w, b))

    ours = penalty(nkf.batch_norm)
    theirs = penalty(F.batch_norm)
    for a, e in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)
