"""from_keras / to_keras / to_keras_config against real Keras 3 on its torch backend.

Keras is imported once per module with KERAS_BACKEND=torch and KERAS_HOME in a temporary
folder (Keras writes a keras.json there); both variables are restored right after the
import, so nothing leaks into other tests. Without keras the tests that need it skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import normkit as nk
from normkit import reference
from normkit.tools import KerasConversionError, from_keras, to_keras, to_keras_config
from normkit.tools.keras import flip_momentum
from tests.conftest import assert_close

# Keras's own variables call np.array(self) the NumPy 1 way.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tools.md"
KERAS_VARIABLES = ("KERAS_BACKEND", "KERAS_HOME")
ENV_BEFORE = {k: os.environ.get(k) for k in KERAS_VARIABLES}


@pytest.fixture(scope="module")
def keras(tmp_path_factory):
    loaded = sys.modules.get("keras")
    if loaded is None:
        saved = {k: os.environ.get(k) for k in KERAS_VARIABLES}
        os.environ["KERAS_BACKEND"] = "torch"
        os.environ["KERAS_HOME"] = str(tmp_path_factory.mktemp("keras_home"))
        try:
            loaded = pytest.importorskip("keras")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    if loaded.backend.backend() != "torch":
        pytest.skip(f"keras was imported with the {loaded.backend.backend()} backend")
    return loaded


def test_keras_runs_on_torch_and_leaves_the_environment_alone(keras):
    assert keras.backend.backend() == "torch"
    assert {k: os.environ.get(k) for k in KERAS_VARIABLES} == ENV_BEFORE


# ---------------------------------------------------------------------- helpers

# (Keras input shape without the batch, axis): channels last and channels first, ranks 2-5.
LAYOUTS = {
    "NC": ((6,), -1),
    "NLC": ((5, 6), -1),
    "NCL": ((6, 5), 1),
    "NHWC": ((4, 5, 6), -1),
    "NCHW": ((6, 4, 5), 1),
    "NDHWC": ((3, 4, 2, 6), -1),
    "NCDHW": ((6, 3, 4, 2), 1),
}


def keras_bn(keras, shape, axis=-1, dtype="float32", seed=0, **options):
    """A built Keras BatchNormalization (input ``(None, *shape)``) with random gamma, beta
    and moving statistics; small moving variances (0.01-0.1) so that epsilon matters."""
    layer = keras.layers.BatchNormalization(axis=axis, dtype=dtype, **options)
    layer.build((None, *shape))
    rng = np.random.default_rng(seed)
    c = (None, *shape)[axis]
    arrays = {
        "gamma": rng.uniform(0.5, 2.0, c),
        "beta": rng.normal(0, 1, c),
        "moving_mean": rng.normal(0, 1, c),
        "moving_variance": rng.uniform(0.01, 0.1, c),
    }
    # renorm's extra variables keep their initial values (inference does not read them)
    layer.set_weights([np.asarray(arrays.get(w.name, w.numpy()), dtype) for w in layer.weights])
    return layer


def keras_eval(layer, x):
    return np.asarray(layer(x, training=False).detach().cpu())


def normkit_eval(bn, x, axis):
    """Keras-layout data through a normkit layer: channels moved to dim 1 and back."""
    y = bn.eval()(torch.movedim(torch.from_numpy(x), axis, 1))
    return torch.movedim(y, 1, axis).detach().numpy()


def data(shape, dtype="float32", n=3, seed=1):
    return np.random.default_rng(seed).normal(0.5, 1.5, (n, *shape)).astype(dtype)


def state(bn):
    return {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}


# ---------------------------------------------------------------------- Keras -> normkit


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_eval_output_equals_keras_float32(keras, layout):
    shape, axis = LAYOUTS[layout]
    layer = keras_bn(keras, shape, axis, epsilon=0.05, momentum=0.9)
    bn = from_keras(layer)
    classes = {
        2: nk.nn.BatchNorm1d,
        3: nk.nn.BatchNorm1d,
        4: nk.nn.BatchNorm2d,
        5: nk.nn.BatchNorm3d,
    }
    assert type(bn) is classes[len(shape) + 1]
    assert (bn.eps, bn.momentum, bn.weight.dtype) == (0.05, 0.1, torch.float32)
    x = data(shape)
    assert_close(normkit_eval(bn, x, axis), keras_eval(layer, x), torch.float32, what=layout)


def test_nhwc_data_as_a_channels_last_view(keras):
    """The documented path: torch.from_numpy(nhwc).permute(0, 3, 1, 2), no copy."""
    layer = keras_bn(keras, (7, 5, 8), epsilon=0.02)
    bn = from_keras(layer).eval()
    nhwc = data((7, 5, 8), n=4)
    x = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    assert x.shape == (4, 8, 7, 5) and x.is_contiguous(memory_format=torch.channels_last)
    assert x.data_ptr() == torch.from_numpy(nhwc).data_ptr()
    y = bn(x).permute(0, 2, 3, 1)
    assert_close(y, torch.from_numpy(keras_eval(layer, nhwc)), torch.float32)
    ndhwc = data((3, 4, 2, 8), n=2)
    layer3 = keras_bn(keras, (3, 4, 2, 8), epsilon=0.02)
    x3 = torch.from_numpy(ndhwc).permute(0, 4, 1, 2, 3)
    assert x3.is_contiguous(memory_format=torch.channels_last_3d)
    y3 = from_keras(layer3).eval()(x3).permute(0, 2, 3, 4, 1)
    assert_close(y3, torch.from_numpy(keras_eval(layer3, ndhwc)), torch.float32)


@pytest.mark.parametrize("layout", ["NC", "NHWC", "NCDHW"])
def test_float64_layers(keras, layout):
    """Keras keeps float64 variables but computes BatchNormalization in float32 on the torch
    backend (its type promotion maps float64 to float32 off TensorFlow): the output matches
    Keras at float32 precision, and the float64 values themselves arrive bit for bit
    (normkit's float64 output equals the NumPy float64 oracle within 1e-10)."""
    shape, axis = LAYOUTS[layout]
    layer = keras_bn(keras, shape, axis, dtype="float64", epsilon=0.003)
    bn = from_keras(layer)
    assert bn.weight.dtype == torch.float64
    gamma, beta, mean, var = layer.get_weights()
    for tensor, array in zip(
        (bn.weight, bn.bias, bn.running_mean, bn.running_var), (gamma, beta, mean, var), strict=True
    ):
        assert torch.equal(tensor.detach(), torch.from_numpy(array))
    x = data(shape, "float64")
    y = normkit_eval(bn, x, axis)
    assert y.dtype == np.float64
    assert_close(y, keras_eval(layer, x), rtol=1e-5, what="vs Keras (float32 inside)")
    expected = reference.batch_norm_eval(np.moveaxis(x, axis, 1), mean, var, gamma, beta, 0.003)
    assert_close(y, np.moveaxis(expected, 1, axis), torch.float64, what="vs oracle")


@pytest.mark.parametrize(("center", "scale"), [(False, True), (True, False), (False, False)])
def test_center_false_and_scale_false(keras, center, scale):
    shape = (4, 5, 6)
    layer = keras_bn(keras, shape, center=center, scale=scale, epsilon=0.01)
    bn = from_keras(layer)
    x = data(shape)
    assert_close(normkit_eval(bn, x, -1), keras_eval(layer, x), torch.float32)
    assert (bn.bias is None) is (not center)
    if not scale and center:  # gamma fixed at 1
        assert torch.equal(bn.weight, torch.ones(6)) and not bn.weight.requires_grad
    if not (scale or center):
        assert bn.weight is None and not bn.affine
    # Trainable counts are Keras's; a fixed gamma is 6 more non-trainable values here.
    keras_trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    keras_frozen = sum(int(np.prod(w.shape)) for w in layer.non_trainable_weights)
    extra = 6 if (center and not scale) else 0
    assert nk.tools.count_params(bn) == (keras_trainable, keras_frozen + extra)
    if not bn.affine:
        return
    # Training: the fixed gamma gets no gradient, beta does.
    bn.train()(torch.movedim(torch.from_numpy(x), -1, 1)).square().sum().backward()
    if bn.weight is not None:
        assert (bn.weight.grad is None) is (not scale)
    if bn.bias is not None:
        assert bn.bias.grad is not None


def test_keras_updates_moving_variance_with_the_biased_batch_variance(keras):
    """What Keras 3 does (the evidence for the docs): moving_variance moves towards the
    biased batch variance, and training normalizes with the biased variance too."""
    x = data((5, 3), "float32", n=4)
    layer = keras_bn(keras, (5, 3), momentum=0.8, epsilon=0.001)
    mean0, var0 = layer.get_weights()[2:]
    y = np.asarray(layer(x, training=True).detach())
    flat = x.reshape(-1, 3).astype(np.float64)
    biased = flat.var(0)
    _, _, mean1, var1 = layer.get_weights()
    assert_close(var1, 0.8 * var0 + 0.2 * biased, rtol=1e-6, what="biased rule")
    assert not np.allclose(var1, 0.8 * var0 + 0.2 * flat.var(0, ddof=1), rtol=1e-3)
    assert_close(mean1, 0.8 * mean0 + 0.2 * flat.mean(0), rtol=1e-6)
    gamma, beta = layer.get_weights()[:2]
    expected = gamma * (x - flat.mean(0)) / np.sqrt(biased + 0.001) + beta
    assert_close(y, expected, rtol=1e-5)


def test_one_training_step_equals_keras_but_for_the_unbiased_running_var(keras):
    """Same output and running mean as Keras after a training step (momentum 1 - m); the
    running variance takes the unbiased batch variance, n/(n-1) times Keras's step."""
    shape, n = (3, 4), 2 * 4  # channels first: C = 3, n = N * L values per channel
    layer = keras_bn(keras, shape, axis=1, momentum=0.7, epsilon=0.01)
    bn = from_keras(layer).train()
    var0 = bn.running_var.clone()
    x = data(shape, n=2)
    y_keras = np.asarray(layer(x, training=True).detach())
    y = bn(torch.from_numpy(x))
    assert_close(y, torch.from_numpy(y_keras), torch.float32, what="training output")
    _, _, keras_mean, keras_var = (torch.from_numpy(a) for a in layer.get_weights())
    assert_close(bn.running_mean, keras_mean, torch.float32, what="running mean")
    p = bn.momentum
    assert p == pytest.approx(0.3)
    ours_step = bn.running_var - (1 - p) * var0
    keras_step = keras_var - 0.7 * var0
    assert_close(ours_step, keras_step * n / (n - 1), rtol=1e-5, what="n/(n-1)")
    assert (bn.running_var - keras_var).abs().min() > 1e-3  # the difference is real


def test_trainable_false_becomes_frozen(keras):
    """Keras runs a non-trainable BatchNormalization in inference mode even with
    training=True and updates nothing: the frozen normkit layer does the same."""
    layer = keras_bn(keras, (5, 4), epsilon=0.01)
    layer.trainable = False
    bn = from_keras(layer)
    assert nk.tools.is_frozen(bn) == {"stats": True, "affine": True}
    bn.train()
    assert not bn.training and not bn.weight.requires_grad
    x = data((5, 4))
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    y = bn(torch.movedim(torch.from_numpy(x), -1, 1))
    y_keras = np.asarray(layer(x, training=True).detach())
    assert_close(torch.movedim(y, 1, -1), torch.from_numpy(y_keras), torch.float32)
    assert all(torch.equal(v, before[k]) for k, v in bn.state_dict().items())
    nk.tools.unfreeze(bn)  # as Keras's trainable=True: every flag back to True
    assert bn.weight.requires_grad and bn.bias.requires_grad and bn.training


def test_config_forms_give_the_same_layer(keras):
    layer = keras_bn(keras, (4, 5, 3), center=False, epsilon=0.02, momentum=0.97)
    expected = from_keras(layer)
    config, weights = layer.get_config(), layer.get_weights()
    gamma, mean, var = weights
    serialized = keras.saving.serialize_keras_object(layer)
    forms = {
        "config + get_weights": from_keras(config, weights, dim=2),
        "four arrays with None": from_keras(config, [gamma, None, mean, var], dim=2),
        "dict": from_keras(
            config, {"gamma": gamma, "moving_mean": mean, "moving_variance": var}, dim=2
        ),
        "serialized (rank from build_config)": from_keras(serialized, weights),
        "tensors": from_keras(config, [torch.from_numpy(w) for w in weights], dim=2),
    }
    for name, bn in forms.items():
        assert type(bn) is nk.nn.BatchNorm2d, name
        assert (bn.eps, bn.momentum, bn.bias) == (expected.eps, expected.momentum, None), name
        for key, value in state(expected).items():
            assert torch.equal(state(bn)[key], value), (name, key)


@pytest.mark.parametrize("keras_momentum", [0.99, 0.9, 0.999, 0.997, 0.5, 0.0, 1.0])
def test_keras_momentum_round_trip(keras, keras_momentum):
    layer = keras_bn(keras, (3,), momentum=keras_momentum)
    bn = from_keras(layer)
    assert bn.momentum == flip_momentum(keras_momentum)
    assert bn.momentum == pytest.approx(1 - keras_momentum, abs=1e-15)
    assert to_keras(bn).momentum == keras_momentum


@pytest.mark.parametrize("torch_momentum", [0.1, 0.01, 0.03, 0.3, 0.5, 0.0, 1.0])
def test_torch_momentum_round_trip(torch_momentum):
    bn = nk.nn.BatchNorm1d(3, momentum=torch_momentum)
    config, arrays = to_keras_config(bn)
    assert config["momentum"] == pytest.approx(1 - torch_momentum, abs=1e-15)
    assert from_keras(config, arrays, dim=1).momentum == torch_momentum


def test_renorm_needs_eval_only(keras):
    layer = keras_bn(
        keras, (4, 5, 3), renorm=True, renorm_clipping={"rmax": 2.0, "dmax": 1.0}, epsilon=0.01
    )
    with pytest.raises(
        KerasConversionError,
        match=r"from_keras: Keras layer 'batch_normalization\w*': .*renorm=True.*eval_only=True",
    ):
        from_keras(layer)
    bn = from_keras(layer, eval_only=True)
    assert not bn.training
    x = data((4, 5, 3))
    assert_close(normkit_eval(bn, x, -1), keras_eval(layer, x), torch.float32)


# ---------------------------------------------------------------------- normkit -> Keras


def _random_bn(cls, c=5, dtype=torch.float32, **kwargs):
    bn = cls(c, dtype=dtype, **kwargs)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            if t is not None:
                t.copy_(torch.randn(c, generator=g, dtype=dtype))
        bn.running_var.copy_(torch.rand(c, generator=g, dtype=dtype) * 0.1 + 0.01)
        bn.num_batches_tracked.fill_(7)
    return bn


def _fixed_gamma(bn):
    with torch.no_grad():
        bn.weight.fill_(1)
    bn.weight.requires_grad_(False)
    return bn


def _frozen(bn):
    return nk.tools.freeze(bn)


def _gamma_one_but_trainable(bn):
    with torch.no_grad():
        bn.weight.fill_(1)
    return bn


# name -> (layer factory, Keras rank, axis)
ROUND_TRIPS = {
    "2d": (lambda: _random_bn(nk.nn.BatchNorm2d, momentum=0.1, eps=1e-4), 4, -1),
    "2d-channels-first": (lambda: _random_bn(nk.nn.BatchNorm2d, momentum=0.03), 4, 1),
    "1d-NC": (lambda: _random_bn(nk.nn.BatchNorm1d, eps=0.02), 2, -1),
    "1d-NLC": (lambda: _random_bn(nk.nn.BatchNorm1d), 3, -1),
    "3d-float64": (lambda: _random_bn(nk.nn.BatchNorm3d, dtype=torch.float64), 5, -1),
    "no-bias": (lambda: _random_bn(nk.nn.BatchNorm2d, bias=False), 4, -1),
    "affine-false": (lambda: _random_bn(nk.nn.BatchNorm2d, affine=False), 4, -1),
    "gamma-fixed-at-1": (lambda: _fixed_gamma(_random_bn(nk.nn.BatchNorm2d)), 4, -1),
    "frozen": (lambda: _frozen(_random_bn(nk.nn.BatchNorm2d)), 4, -1),
    "frozen-gamma-fixed": (lambda: _frozen(_fixed_gamma(_random_bn(nk.nn.BatchNorm2d))), 4, -1),
    "frozen-gamma-1-trainable": (
        lambda: _frozen(_gamma_one_but_trainable(_random_bn(nk.nn.BatchNorm2d))),
        4,
        -1,
    ),
    "torch.nn": (lambda: _random_bn(nn.BatchNorm2d, eps=1e-3), 4, -1),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_round_trip_normkit_keras_normkit(keras, case):
    make, ndim, axis = ROUND_TRIPS[case]
    bn = make()
    layer = to_keras(bn, axis=axis, ndim=ndim)
    assert type(layer) is keras.layers.BatchNormalization
    assert (layer.axis, layer.epsilon, layer.momentum) == (axis, bn.eps, flip_momentum(bn.momentum))
    shape = [3] * ndim
    shape[axis] = bn.num_features
    x = data(tuple(shape[1:]), "float64" if bn.running_mean.dtype == torch.float64 else "float32")
    assert_close(keras_eval(layer, x), normkit_eval(bn, x, axis), rtol=1e-5, what="eval")

    back = from_keras(layer)
    assert type(back).__name__ == type(bn).__name__ and isinstance(back, nn.Module)
    assert (back.eps, back.momentum, back.affine) == (bn.eps, bn.momentum, bn.affine)
    assert state(back).keys() == state(bn).keys()
    for key, value in state(bn).items():
        assert state(back)[key].dtype == value.dtype and torch.equal(state(back)[key], value), key
    assert [p.requires_grad for p in back.parameters()] == [
        p.requires_grad for p in bn.parameters()
    ]
    assert nk.tools.is_frozen(back) == nk.tools.is_frozen(bn)
    nk.tools.unfreeze(back)
    nk.tools.unfreeze(bn)
    assert [p.requires_grad for p in back.parameters()] == [
        p.requires_grad for p in bn.parameters()
    ]


def test_round_trip_keras_normkit_keras(keras):
    keys = ("axis", "momentum", "epsilon", "center", "scale", "trainable", "dtype")
    for options in (
        {"momentum": 0.95, "epsilon": 0.004},
        {"center": False, "axis": 1},
        {"scale": False},
        {"center": False, "scale": False, "dtype": "float64"},
    ):
        shape = (6, 4, 3) if options.get("axis") == 1 else (4, 3, 6)
        layer = keras_bn(keras, shape, **options)
        layer.trainable = False
        again = to_keras(from_keras(layer), axis=layer.axis)
        config, config_again = layer.get_config(), again.get_config()
        assert {k: config_again[k] for k in keys} == {k: config[k] for k in keys}, options
        for a, b in zip(layer.get_weights(), again.get_weights(), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), options
        assert [w.trainable for w in again.weights] == [w.trainable for w in layer.weights]


def test_variable_trainable_flags_both_ways(keras):
    bn = _random_bn(nk.nn.BatchNorm2d)
    bn.bias.requires_grad_(False)
    layer = to_keras(bn)
    assert (layer.gamma.trainable, layer.beta.trainable, layer.trainable) == (True, False, True)
    assert [w.name for w in layer.trainable_weights] == ["gamma"]
    layer = keras_bn(keras, (4, 4, 3))
    layer.gamma.trainable = False
    back = from_keras(layer)
    assert (back.weight.requires_grad, back.bias.requires_grad) == (False, True)
    assert nk.tools.is_frozen(back) is None and nk.tools.count_params(back) == (3, 9)


def test_to_keras_config_needs_no_keras():
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "import normkit as nk\n"
        "config, arrays = nk.tools.to_keras_config(nk.nn.BatchNorm2d(4, bias=False))\n"
        "bn = nk.tools.from_keras(config, arrays, dim=2)\n"
        "assert bn.bias is None and config['center'] is False, config\n"
        "try:\n"
        "    nk.tools.to_keras(bn)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert "to_keras: needs keras" in out.stdout


# ---------------------------------------------------------------------- errors

CONFIG = {"axis": -1, "momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True}
FOUR = [np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32), np.ones(3)]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("bn",), {}, r"from_keras: expected a Keras BatchNormalization layer .* got str"),
        (({"class_name": "LayerNormalization", "config": {}},), {}, r"got LayerNormalization"),
        ((CONFIG,), {"dim": 2}, r"a config needs its weights .* got weights=None"),
        ((CONFIG, FOUR), {}, r"input rank is unknown .* pass dim=1, 2 or 3"),
        ((CONFIG, FOUR), {"dim": 4}, r"expected dim=1, 2 or 3, got 4"),
        ((CONFIG, FOUR[:3]), {"dim": 2}, r"expected 4 arrays \(gamma, beta, .*got 3"),
        (
            ({**CONFIG, "center": False}, FOUR),
            {"dim": 2},
            r"center=False needs the arrays \['gamma', 'moving_mean', 'moving_variance'\], got "
            r"\['beta', 'gamma', ",
        ),
        ((CONFIG, [*FOUR[:3], np.ones(4)]), {"dim": 2}, r"1-D weight arrays of one length C"),
        ((CONFIG, {"gamma": 1, "mean": 2}), {"dim": 2}, r"unknown weight name\(s\) \['mean'\]"),
        ((CONFIG, "abcd"), {"dim": 2}, r"expected weights as a list .* got str"),
        (
            ({**CONFIG, "foo": 1}, FOUR),
            {"dim": 2},
            r"unknown BatchNormalization option\(s\) \['foo'\]",
        ),
        (
            ({**CONFIG, "synchronized": True, "gamma_regularizer": "l2"}, FOUR),
            {"dim": 2},
            r"training-time option\(s\).*synchronized=True \(cross-device.*'sync'.*"
            r"gamma_regularizer='l2'. Inference does not depend on them: pass eval_only=True",
        ),
        (
            ({**CONFIG, "axis": [1, 2]}, FOUR),
            {"dim": 2},
            r"one channel axis \(an int\), got axis=\[1, 2\]",
        ),
        (({**CONFIG, "axis": 0}, FOUR), {"dim": 2}, r"axis=0 is not a channel axis of a rank-4"),
        (({**CONFIG, "axis": 4}, FOUR), {"dim": 2}, r"axis=4 is not a channel axis"),
        (
            ({**CONFIG, "momentum": 1.5}, FOUR),
            {"dim": 2},
            r"momentum \(a decay\) in \[0, 1\], got 1.5",
        ),
        (({**CONFIG, "epsilon": -1.0}, FOUR), {"dim": 2}, r"expected epsilon >= 0, got -1.0"),
        (({**CONFIG, "center": "yes"}, FOUR), {"dim": 2}, r"expected center True or False"),
        (
            (
                {
                    "class_name": "BatchNormalization",
                    "config": CONFIG,
                    "build_config": {"input_shape": [None, 3]},
                },
                FOUR,
            ),
            {"dim": 2},
            r"dim=2 but the layer takes inputs of rank 2, which is BatchNorm1d",
        ),
        (
            ({**CONFIG, "batch_input_shape": [None, 1, 1, 1, 1, 3]}, FOUR),
            {},
            r"inputs of rank 6; BatchNorm1d/2d/3d take rank 2 to 5",
        ),
    ],
)
def test_from_keras_errors(args, kwargs, message):
    with pytest.raises(KerasConversionError, match=message):
        from_keras(*args, **kwargs)


def test_from_keras_layer_errors(keras):
    with pytest.raises(KerasConversionError, match=r"from_keras: .* is not built .*build"):
        from_keras(keras.layers.BatchNormalization())
    with pytest.raises(
        KerasConversionError, match=r"expected a Keras BatchNormalization, got Dense"
    ):
        from_keras(keras.layers.Dense(3))
    layer = keras_bn(keras, (3,))
    with pytest.raises(KerasConversionError, match=r"weights come from the layer itself"):
        from_keras(layer, layer.get_weights())
    with pytest.raises(
        KerasConversionError,
        match=rf"from_keras: Keras layer '{layer.name}': dim=2 but the layer takes inputs of rank 2",
    ):
        from_keras(layer, dim=2)


@pytest.mark.parametrize(
    ("layer", "kwargs", "message"),
    [
        (nn.LayerNorm(3), {}, r"to_keras_config: expected a BatchNorm1d/2d/3d .* got LayerNorm"),
        (nk.nn.BatchRenorm2d(3), {}, r"got BatchRenorm2d .*convert\(model, 'batchnorm'\)"),
        (nk.nn.SyncBatchNorm(3), {}, r"got SyncBatchNorm"),
        (nk.nn.BatchNorm2d(3, momentum=None), {}, r"BatchNorm2d\(3\) has momentum=None"),
        (nn.BatchNorm1d(3, track_running_stats=False), {}, r"BatchNorm1d\(3\) has no running stat"),
        (
            nk.nn.BatchNorm2d(3),
            {"axis": 0},
            r"to_keras_config: BatchNorm2d\(3\): axis=0 is not a channel axis of a rank-4 input",
        ),
        (
            nk.nn.BatchNorm2d(3),
            {"axis": 1.0},
            r"BatchNorm2d\(3\): expected axis as an int, got 1.0",
        ),
        (
            nk.nn.BatchNorm2d(3),
            {"ndim": 3},
            r"BatchNorm2d\(3\): BatchNorm2d takes inputs of rank 4, got ndim=3",
        ),
        (nk.nn.BatchNorm1d(3), {"ndim": 2, "axis": 2}, r"axis=2 is not a channel axis of a rank-2"),
        (
            nk.tools.freeze(nk.nn.BatchNorm2d(3), affine=False),
            {},
            r"frozen with stats only .* trainable=False also fixes gamma",
        ),
    ],
)
def test_to_keras_config_errors(layer, kwargs, message):
    with pytest.raises(KerasConversionError, match=message):
        to_keras_config(layer, **kwargs)


# ---------------------------------------------------------------------- summary vs Keras


def _seed_models(keras, frozen_first_bn):
    """Conv2D(32) -> BN -> MaxPool -> Flatten -> Dense(64) -> BN -> Dense(10) on 28x28x1,
    in Keras and in torch with the Keras model's BatchNormalizations converted."""
    layers = keras.layers
    k_model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3),
            layers.BatchNormalization(),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64),
            layers.BatchNormalization(),
            layers.Dense(10),
        ]
    )
    if frozen_first_bn:
        k_model.layers[1].trainable = False
    t_model = nn.Sequential(
        nn.Conv2d(1, 32, 3),
        from_keras(k_model.layers[1]),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 13 * 13, 64),
        from_keras(k_model.layers[5]),
        nn.Linear(64, 10),
    )
    return k_model, t_model


@pytest.mark.parametrize("frozen_first_bn", [False, True], ids=["trainable", "frozen-bn"])
def test_summary_counts_equal_keras(keras, frozen_first_bn):
    k_model, t_model = _seed_models(keras, frozen_first_bn)
    s = nk.tools.summary(t_model, (1, 1, 28, 28))
    assert [type(m).__name__ for m in t_model][1::4] == ["BatchNorm2d", "BatchNorm1d"]
    keras_counts = (
        k_model.count_params(),
        sum(int(np.prod(w.shape)) for w in k_model.trainable_weights),
        sum(int(np.prod(w.shape)) for w in k_model.non_trainable_weights),
    )
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == keras_counts
    assert keras_counts == ((347_530, 347_338, 192), (347_530, 347_274, 256))[frozen_first_bn]
    assert [r.params for r in s.rows if r.params] == [
        layer.count_params() for layer in k_model.layers if layer.count_params()
    ]
    text = str(s)
    assert f"Total params: {keras_counts[0]:,}" in text
    assert f"Non-trainable params: {keras_counts[2]:,}" in text


# ---------------------------------------------------------------------- docs


def test_docs_example_runs(keras, monkeypatch, tmp_path):
    """The Keras block of docs/tools.md runs as written."""
    section = DOCS.read_text().split("### Keras", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # the example's setdefault then changes nothing
    namespace = {"__name__": "__docs__"}
    exec(compile(code, str(DOCS), "exec"), namespace)
    assert type(namespace["bn_again"]) is nk.nn.BatchNorm2d
