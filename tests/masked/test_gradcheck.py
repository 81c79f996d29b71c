"""gradcheck and gradgradcheck (float64) of every masked functional op, on each backend,
with a mask that has holes and a sample of one valid position."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import normkit.functional as nkf


def _leaf(*shape, scale=1.0, offset=0.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale + offset).requires_grad_()


def _mask(n, length):
    mask = torch.rand(n, length) < 0.6
    mask[:, 0] = True
    mask[0, 1] = True
    mask[-1, 1:] = False  # the last sample: a single valid position
    return mask


def _cases():
    mask = _mask(3, 5)
    running = (torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))

    def bn_train(x, w, b):
        rm, rv = (t.clone() for t in running)
        return nkf.batch_norm(x, rm, rv, w, b, training=True, mask=mask)

    def bn_eval(x, w, b):
        rm, rv = torch.tensor([0.2, -0.1, 0.5], dtype=torch.float64), running[1] + 0.3
        return nkf.batch_norm(x, rm, rv, w, b, training=False, mask=mask)

    def bn_act(x, w, b):
        rm, rv = (t.clone() for t in running)
        return nkf.batch_norm_act(x, rm, rv, w, b, True, act="silu", mask=mask)

    def renorm(x, w, b):
        # r and d at their clip limits: locally constant, so finite differences see the
        # function autograd differentiates (stop-gradient r, d).
        rm = torch.full((3,), 50.0, dtype=torch.float64)
        rv = torch.full((3,), 100.0, dtype=torch.float64)
        return nkf.batch_renorm(x, rm, rv, w, b, True, 0.1, 1e-5, 1.5, 0.5, mask=mask)

    gn_mask = mask.clone()
    gn_mask[-1] = True

    def instance(x, w, b):
        return nkf.instance_norm(x, weight=w, bias=b, mask=gn_mask)

    def group(x, w, b):
        return nkf.group_norm(x[:, :2].repeat(1, 2, 1), 2, w[:2].repeat(2), b[:2].repeat(2),
                              mask=mask)  # fmt: skip

    return {
        "batch_norm_train": bn_train,
        "batch_norm_eval": bn_eval,
        "batch_norm_act_silu": bn_act,
        "batch_renorm": renorm,
        "instance_norm": instance,
        "group_norm": group,
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_gradcheck_and_gradgradcheck(backend, name):
    fn = _cases()[name]
    inputs = [_leaf(3, 3, 5, scale=2, offset=1), _leaf(3, offset=1), _leaf(3)]
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    assert gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
