"""Factories for the CLI tests (``tests.tools.cli_models:NAME``)."""

import torch
from torch import nn

import normkit as nk
from tests.tools.models import keras_cnn


def cnn():
    return keras_cnn(nk.nn)


def cnn_with_example():
    return keras_cnn(nn).eval(), torch.randn(16, 1, 28, 28)


def broken_nan():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.BatchNorm1d(4)).eval()
    with torch.no_grad():
        model[1].running_var.fill_(float("nan"))
    return model


def broken():
    raise RuntimeError("cannot build")


def not_a_model():
    return 3


INSTANCE = nn.Sequential(nn.LayerNorm(4))
