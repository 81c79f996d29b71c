"""``BatchNorm{1,2,3}d.from_keras`` and ``bn.to_keras``: normkit.tools.keras reached from the
class, with ``dim`` fixed by the class; real Keras 3 on its torch backend (the Keras tests'
fixture: KERAS_BACKEND=torch and KERAS_HOME set only for the import). The tests that need
keras skip without it; the config forms need none."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import normkit as nk
from normkit.tools import KerasConversionError
from tests.conftest import assert_close
from tests.tools.test_keras import (  # noqa: F401  (keras: the module-scoped fixture)
    data,
    keras,
    keras_bn,
    keras_eval,
    normkit_eval,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# class -> (Keras input shape without the batch, channel axis)
CASES = {
    "1d-NC": (nk.nn.BatchNorm1d, (6,), -1),
    "1d-NLC": (nk.nn.BatchNorm1d, (5, 6), -1),
    "2d-NHWC": (nk.nn.BatchNorm2d, (4, 5, 6), -1),
    "2d-NCHW": (nk.nn.BatchNorm2d, (6, 4, 5), 1),
    "3d-NDHWC": (nk.nn.BatchNorm3d, (3, 4, 2, 6), -1),
}


def _assert_equal_state(a, b, counter=True):
    """Same state_dict entries (dtype and values); ``counter=False``: but for
    num_batches_tracked, which Keras does not keep."""
    state_a, state_b = a.state_dict(), b.state_dict()
    assert list(state_a) == list(state_b)
    for key, value in state_b.items():
        if counter or key != "num_batches_tracked":
            assert state_a[key].dtype == value.dtype and torch.equal(state_a[key], value), key


@pytest.mark.parametrize("case", sorted(CASES))
def test_from_keras_classmethod_equals_the_tool(keras, case):  # noqa: F811
    cls, shape, axis = CASES[case]
    layer = keras_bn(keras, shape, axis, epsilon=0.02, momentum=0.95)
    bn = cls.from_keras(layer)
    assert type(bn) is cls
    _assert_equal_state(bn, nk.tools.from_keras(layer))
    assert (bn.eps, bn.momentum) == (0.02, pytest.approx(0.05, abs=1e-15))
    x = data(shape)
    assert_close(normkit_eval(bn, x, axis), keras_eval(layer, x), torch.float32, what=case)


def test_from_keras_classmethod_refuses_a_layer_of_another_rank(keras):  # noqa: F811
    layer = keras_bn(keras, (6,))
    with pytest.raises(
        KerasConversionError,
        match=r"from_keras: Keras layer '\w+': dim=2 but the layer takes inputs of rank 2, "
        r"which is BatchNorm1d",
    ):
        nk.nn.BatchNorm2d.from_keras(layer)
    with pytest.raises(KerasConversionError, match=r"dim=3 but the layer takes inputs of rank 2"):
        nk.nn.BatchNorm3d.from_keras(layer)


@pytest.mark.parametrize("cls", [nk.nn.BatchNorm1d, nk.nn.BatchNorm2d, nk.nn.BatchNorm3d])
def test_from_keras_classmethod_gives_the_rank_a_bare_config_lacks(cls):
    """A config and its arrays carry no input rank: the tool needs ``dim``, the class knows
    it. dtype, device and eval_only reach the tool."""
    config = {"axis": -1, "momentum": 0.9, "epsilon": 1e-3, "center": True, "scale": True}
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=4).astype(np.float32) for _ in range(3)]
    arrays.append(rng.uniform(0.5, 2, 4).astype(np.float32))
    with pytest.raises(KerasConversionError, match="input rank is unknown"):
        nk.tools.from_keras(config, arrays)
    bn = cls.from_keras(config, arrays, dtype=torch.float64, device="cpu", eval_only=True)
    assert type(bn) is cls and not bn.training
    assert bn.weight.dtype == bn.running_var.dtype == torch.float64
    assert bn.running_mean.device == torch.device("cpu")
    assert torch.equal(bn.running_var, torch.from_numpy(arrays[3]).double())
    assert cls.from_keras(config, arrays).training


@pytest.mark.parametrize("case", sorted(CASES))
def test_to_keras_method_equals_the_tool(keras, case):  # noqa: F811
    cls, shape, axis = CASES[case]
    bn = cls(6, eps=1e-4, momentum=0.2)
    bn.train()(torch.randn(8, 6, *([3] * (len(shape) - 1))))  # non-trivial running stats
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
    name = f"bn_{case.replace('-', '_').lower()}"
    layer = bn.to_keras(axis=axis, ndim=len(shape) + 1, name=name)
    assert type(layer) is keras.layers.BatchNormalization and layer.name == name
    assert (layer.axis, layer.epsilon, layer.momentum) == (axis, 1e-4, 0.8)
    tool = nk.tools.to_keras(bn, axis=axis, ndim=len(shape) + 1)
    for a, b in zip(layer.get_weights(), tool.get_weights(), strict=True):
        assert np.array_equal(a, b)
    x = data(shape)
    assert_close(keras_eval(layer, x), normkit_eval(bn, x, axis), torch.float32, what=case)
    _assert_equal_state(cls.from_keras(layer), bn, counter=False)


def test_to_keras_defaults_and_a_materialized_lazy_layer(keras):  # noqa: F811
    """Defaults are the tool's (axis=-1, ndim 2/4/5); a lazy layer after its first call is a
    BatchNorm2d and converts as one."""
    lazy = nk.nn.LazyBatchNorm2d(eps=3e-3)
    lazy(torch.randn(4, 5, 3, 3))
    layer = lazy.to_keras()
    assert layer.axis == -1 and layer.epsilon == 3e-3
    x = data((3, 3, 5))
    assert_close(keras_eval(layer, x), normkit_eval(lazy, x, -1), torch.float32)
    assert nk.nn.BatchNorm1d(5).to_keras().input_spec.ndim == 2
    assert nk.nn.BatchNorm3d(5).to_keras(axis=1).input_spec.ndim == 5


def test_the_methods_import_the_tools_on_call_only():
    """``import normkit`` loads no tools; the config form of from_keras works without keras
    and loads normkit.tools.keras when called; to_keras without keras says what it needs."""
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "import normkit as nk\n"
        "assert 'normkit.tools' not in sys.modules\n"
        "config = {'axis': -1, 'momentum': 0.99, 'epsilon': 1e-3, 'center': False}\n"
        "bn = nk.nn.BatchNorm2d.from_keras(config, [[2.0], [1.0], [4.0]])\n"
        "assert 'normkit.tools.keras' in sys.modules\n"
        "assert type(bn) is nk.nn.BatchNorm2d and bn.bias is None, bn\n"
        "try:\n"
        "    bn.to_keras()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert "to_keras: needs keras" in out.stdout
