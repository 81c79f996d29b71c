"""Keras interop: a Keras ``BatchNormalization`` as a normkit ``BatchNorm{1,2,3}d``, and back.

    bn = nk.tools.from_keras(keras_layer)                     # a built Keras layer
    bn = nk.tools.from_keras(config, weights, dim=2)           # or its config and arrays
    config, arrays = nk.tools.to_keras_config(bn)              # no keras needed
    keras_layer = nk.tools.to_keras(bn)                        # a built, filled Keras layer

The two libraries compute the same inference output,
``y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta``, but state it
differently; each difference is a classic porting bug:

==========================  ==============================  ==============================
                            Keras                           torch / normkit
==========================  ==============================  ==============================
momentum                    decay ``m`` (default 0.99):     factor ``1 - m`` (default 0.1):
                            ``mv = m*mv + (1-m)*batch``     ``rv = (1-p)*rv + p*batch``
epsilon                     default ``1e-3``                default ``1e-5``
channel axis                ``axis=-1`` (channels last)     dim 1 (``N, C, *``)
``center=False``            no beta                         ``bias=False`` (no bias)
``scale=False``             no gamma                        gamma fixed at 1
                                                            (``requires_grad=False``)
``trainable=False``         inference mode, nothing         :func:`normkit.tools.freeze`
                            updated                         (eval mode, gamma/beta fixed)
moving variance update      biased batch variance           unbiased, ``var * n / (n-1)``
==========================  ==============================  ==============================

Inference is identical after conversion. Training differs in one place, which no option of
``nk.nn.BatchNorm*d`` can change: Keras (3.15, every backend) moves ``moving_variance``
towards the *biased* batch variance, torch and normkit move ``running_var`` towards the
unbiased one, so each training step adds ``p * var * (n/(n-1) - 1)`` more to the running
variance (``n`` values per channel in the batch: the batch term is 1.6% larger for
``n = 64``, 0.1% for one 32x32 feature map). Batch normalization itself (biased variance in
both) and the running mean are the same.

Keras's options that act only in training (``renorm``, ``synchronized``, regularizers,
constraints, and tf.keras 2's ``virtual_batch_size``/``adjustment``) have no twin here:
:func:`from_keras` refuses them unless ``eval_only=True``, which converts for inference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from normkit.nn import BatchNorm1d, BatchNorm2d, BatchNorm3d
from normkit.tools.freeze import FREEZE_ATTR, freeze, is_frozen


class KerasConversionError(ValueError):
    """A layer, config or weights that cannot be converted (the message says why)."""


_NORMKIT_CLASSES = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}
_TORCH_CLASSES = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
# Keras input rank (with the batch axis) -> BatchNorm{dim}d, and back.
_DIM_OF_NDIM = {2: 1, 3: 1, 4: 2, 5: 3}
_NDIMS_OF_DIM = {1: (2, 3), 2: (4,), 3: (5,)}

_WEIGHT_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")
# Keras's batch renorm keeps three more arrays (after the four); inference ignores them.
_RENORM_NAMES = ("moving_stddev", "renorm_mean", "renorm_stddev")

_DEFAULTS = {"axis": -1, "momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True}
# Options that change only training; "off" is the value that changes nothing.
_TRAINING_ONLY = {
    "renorm": False,
    "synchronized": False,
    "virtual_batch_size": None,
    "adjustment": None,
    "beta_regularizer": None,
    "gamma_regularizer": None,
    "beta_constraint": None,
    "gamma_constraint": None,
    "activity_regularizer": None,
}
# Accepted and not needed: layer bookkeeping, initializers (the weights are given), the
# renorm settings (refused or ignored with renorm itself), tf.keras 2's "fused" (a kernel
# choice), input shapes (read for the rank).
_IGNORED = {
    "name",
    "dtype",
    "beta_initializer",
    "gamma_initializer",
    "moving_mean_initializer",
    "moving_variance_initializer",
    "renorm_clipping",
    "renorm_momentum",
    "fused",
    "batch_input_shape",
    "batch_shape",
    "input_shape",
}
_KNOWN = {*_DEFAULTS, "trainable", *_TRAINING_ONLY, *_IGNORED}

_WHY_TRAINING_ONLY = {
    "renorm": "Keras's batch renorm keeps its own renorm_mean/renorm_stddev with "
    "renorm_momentum and clips r to [rmin, rmax]; nk.nn.BatchRenorm2d corrects towards the "
    "running statistics with r in [1/rmax, rmax]",
    "synchronized": "cross-device batch statistics: nk.tools.convert(model, 'sync') after "
    "conversion gives them",
    "virtual_batch_size": "ghost batches: nk.tools.convert(model, 'ghost', "
    "virtual_batch_size=...) after conversion",
    "adjustment": "a random adjustment of the normalized output in training",
}

_KERAS_DTYPE = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
    torch.float64: "float64",
}


def flip_momentum(momentum: float) -> float:
    """``1 - momentum``, the other library's convention (Keras's 0.99 <-> torch's 0.01).

    Computed on the shortest decimal form of ``momentum`` so decimal values stay decimal
    (``1 - 0.99`` in floating point is 0.010000000000000009). Any value in ``[0.5, 1]``
    round-trips exactly; a value in ``[0, 0.5)`` with more than 15 significant digits can
    come back changed in its last bit (the other side's floating-point spacing is coarser).

    Examples::

        >>> from normkit.tools.keras import flip_momentum
        >>> flip_momentum(0.99), flip_momentum(0.1), flip_momentum(flip_momentum(0.997))
        (0.01, 0.9, 0.997)
    """
    return float(Decimal(1) - Decimal(repr(float(momentum))))


# ---------------------------------------------------------------------- Keras -> normkit


def from_keras(
    layer_or_config: Any,
    weights: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    dim: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    eval_only: bool = False,
) -> BatchNorm1d | BatchNorm2d | BatchNorm3d:
    """A normkit ``BatchNorm{1,2,3}d`` whose eval output is the Keras layer's inference output.

    ``y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta`` per channel,
    with torch's layout: run it on ``torch.movedim(x, axis, 1)`` (for NHWC data,
    ``torch.from_numpy(nhwc).permute(0, 3, 1, 2)``: no copy, a channels_last NCHW tensor)
    and move the channel axis of the output back with ``torch.movedim(y, 1, axis)``.

    Mapping: ``momentum = 1 - m`` (:func:`flip_momentum`), ``eps = epsilon``,
    ``running_mean/running_var = moving_mean/moving_variance`` as stored (Keras normalizes
    with the stored moving variance, as torch does with ``running_var``), ``center=False``
    -> ``bias=False``, ``scale=False`` -> gamma fixed at 1 (``requires_grad=False``: normkit
    has no beta-without-gamma layer), ``trainable=False`` -> :func:`normkit.tools.freeze`
    (Keras runs such a layer in inference mode and updates nothing); in a trainable layer,
    a gamma/beta variable with ``trainable=False`` -> ``requires_grad=False``. Training
    differs in the running-variance update (module docstring).

    Args:
        layer_or_config: a built Keras ``BatchNormalization`` (any backend); or its
            ``get_config()`` dict; or its serialized form (``{"class_name":
            "BatchNormalization", "config": ..., "build_config": ...}``).
        weights: with a config: the layer's ``get_weights()`` (gamma if ``scale``, beta if
            ``center``, moving_mean, moving_variance), or the four arrays with None for
            the absent ones, or a dict by those names. Not with a layer.
        dim: 1, 2 or 3 for ``BatchNorm{dim}d``. Default: from the layer's input rank (2 or
            3 -> 1, 4 -> 2, 5 -> 3), which a built layer or a serialized config records;
            required when the rank is unknown.
        dtype: of the new layer. Default: the moving_mean array's (float32 for a float32
            Keras layer), or torch's default dtype for non-floating arrays.
        device: of the new layer.
        eval_only: convert a layer that uses training-only options (``renorm``,
            ``synchronized``, regularizers, constraints) anyway, for inference: the layer
            is returned in eval mode. Default: False (refuse them).

    Returns:
        ``nk.nn.BatchNorm1d``, ``BatchNorm2d`` or ``BatchNorm3d``, in training mode (torch's
        default; frozen if the Keras layer was not trainable, eval mode with ``eval_only``).

    Raises:
        KerasConversionError: not a BatchNormalization, an unbuilt layer, unknown or
            training-only options, an unknown rank, weights that do not fit the config.

    Examples::

        >>> import numpy as np, normkit as nk, torch
        >>> config = {"axis": -1, "momentum": 0.99, "epsilon": 1e-3, "center": False}
        >>> gamma, mean, var = np.float32([2, 3]), np.float32([1, -1]), np.float32([4, 9])
        >>> bn = nk.tools.from_keras(config, [gamma, mean, var], dim=2).eval()
        >>> type(bn).__name__, bn.momentum, bn.eps, bn.bias is None
        ('BatchNorm2d', 0.01, 0.001, True)
        >>> nhwc = np.ones((1, 1, 1, 2), np.float32)                 # Keras's layout
        >>> y = bn(torch.from_numpy(nhwc).permute(0, 3, 1, 2))       # NCHW view, no copy
        >>> y.permute(0, 2, 3, 1).flatten().detach().numpy().round(4)  # gamma*(x-mean)/std
        array([0.    , 1.9999], dtype=float32)
    """
    fn = "from_keras"
    config, weights, variable_trainable, ndim = _read_source(layer_or_config, weights, fn)
    if isinstance(config.get("name"), str):
        fn = f"{fn}: Keras layer {config['name']!r}"
    options = _read_options(config, eval_only, fn)
    scale, center = options["scale"], options["center"]
    arrays = _read_weights(weights, scale, center, config.get("renorm"), fn)
    dim = _resolve_dim(dim, ndim, options["axis"], fn)
    mean = arrays["moving_mean"]
    if dtype is None:
        dtype = (
            torch.from_numpy(np.empty(0, mean.dtype)).dtype
            if np.issubdtype(mean.dtype, np.floating)
            else torch.get_default_dtype()
        )
    layer = _NORMKIT_CLASSES[dim](
        mean.shape[0],
        eps=options["epsilon"],
        momentum=flip_momentum(options["momentum"]),
        affine=scale or center,
        bias=center,
        device=device,
        dtype=dtype,
    )
    with torch.no_grad():
        layer.running_mean.copy_(torch.from_numpy(mean))
        layer.running_var.copy_(torch.from_numpy(arrays["moving_variance"]))
        if scale:
            layer.weight.copy_(torch.from_numpy(arrays["gamma"]))
        if center:
            layer.bias.copy_(torch.from_numpy(arrays["beta"]))
    if layer.weight is not None and not scale:
        layer.weight.requires_grad_(False)  # the no-gamma layer: gamma stays 1
    if options["trainable"]:
        for name, param in (("gamma", layer.weight), ("beta", layer.bias)):
            if param is not None and variable_trainable.get(name) is False:
                param.requires_grad_(False)
    else:  # Keras's layer flag overrides the variables' (trainable=True sets them all back)
        freeze(layer)
    if eval_only:
        layer.eval()
    return layer


def _read_source(
    source: Any, weights: Any, fn: str
) -> tuple[dict[str, Any], Any, dict[str, bool], int | None]:
    """``(config, weights, variable trainable flags by name, input rank or None)``."""
    if callable(getattr(source, "get_config", None)) and callable(
        getattr(source, "get_weights", None)
    ):
        return _read_layer(source, weights, fn)
    if not isinstance(source, Mapping):
        raise KerasConversionError(
            f"{fn}: expected a Keras BatchNormalization layer or its config dict, got "
            f"{type(source).__name__}"
        )
    ndim = None
    if "class_name" in source and "config" in source:  # keras.saving.serialize_keras_object
        _check_class_name(source["class_name"], fn)
        build = source.get("build_config") or {}
        ndim = _rank_of(build.get("input_shape"))
        source = source["config"]
    config = dict(source)
    for key in ("batch_input_shape", "batch_shape"):  # tf.keras 2 / an input layer's shape
        ndim = ndim if ndim is not None else _rank_of(config.get(key))
    if weights is None:
        raise KerasConversionError(
            f"{fn}: a config needs its weights (the layer's get_weights(): gamma, beta, "
            "moving_mean, moving_variance), got weights=None"
        )
    return config, weights, {}, ndim


def _read_layer(layer: Any, weights: Any, fn: str):
    _check_class_name(
        next(
            (c.__name__ for c in type(layer).__mro__ if c.__name__ == "BatchNormalization"),
            type(layer).__name__,
        ),
        fn,
    )
    if weights is not None:
        raise KerasConversionError(
            f"{fn}: weights come from the layer itself; pass weights= only with a config"
        )
    if not getattr(layer, "built", True) or not layer.weights:
        raise KerasConversionError(
            f"{fn}: the Keras layer {layer.name!r} is not built (no weights yet): call it on "
            "data or build(input_shape) first, or pass its config and weights"
        )
    arrays, trainable = {}, {}
    for variable, value in zip(layer.weights, layer.get_weights(), strict=True):
        name = variable.name.split("/")[-1].split(":")[0]  # tf.keras 2: "bn/gamma:0"
        arrays[name] = value
        trainable[name] = bool(variable.trainable)
    spec = getattr(layer, "input_spec", None)
    spec = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return layer.get_config(), arrays, trainable, getattr(spec, "ndim", None)


def _check_class_name(name: str, fn: str) -> None:
    if name != "BatchNormalization":
        raise KerasConversionError(f"{fn}: expected a Keras BatchNormalization, got {name}")


def _rank_of(shape: Any) -> int | None:
    return len(shape) if isinstance(shape, (list, tuple)) else None


def _read_weights(
    weights: Any, scale: bool, center: bool, renorm: Any, fn: str
) -> dict[str, np.ndarray]:
    present = [n for n, on in zip(_WEIGHT_NAMES, (scale, center, True, True), strict=True) if on]
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(_WEIGHT_NAMES) - set(_RENORM_NAMES))
        if unknown:
            raise KerasConversionError(
                f"{fn}: unknown weight name(s) {unknown}; expected {list(_WEIGHT_NAMES)}"
            )
        arrays = {k: v for k, v in weights.items() if v is not None}
    elif isinstance(weights, Sequence) and not isinstance(weights, (str, bytes)):
        weights = list(weights)
        with_renorm = present + list(_RENORM_NAMES) if renorm else present
        if len(weights) == 4 and len(present) < 4:  # the four arrays, None for absent ones
            arrays = {n: w for n, w in zip(_WEIGHT_NAMES, weights, strict=True) if w is not None}
        elif len(weights) in (len(present), len(with_renorm)):  # get_weights() order
            arrays = dict(zip(with_renorm, weights, strict=False))
        else:
            raise KerasConversionError(
                f"{fn}: expected {len(present)} arrays ({', '.join(present)}) for "
                f"scale={scale}, center={center}, or the four {list(_WEIGHT_NAMES)} with "
                f"None for the absent ones; got {len(weights)}"
            )
    else:
        raise KerasConversionError(
            f"{fn}: expected weights as a list of arrays or a dict by name, got "
            f"{type(weights).__name__}"
        )
    arrays = {k: _array(v) for k, v in arrays.items()}
    _check_arrays(arrays, scale, center, fn)
    return arrays


def _array(value: Any) -> np.ndarray:
    """A writable NumPy copy (Keras may hand out read-only arrays; tensors go to the CPU)."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
    return np.array(value, copy=True)


def _check_arrays(arrays: dict[str, np.ndarray], scale: Any, center: Any, fn: str) -> None:
    expected = {n for n, on in zip(_WEIGHT_NAMES, (scale, center, True, True), strict=True) if on}
    given = set(arrays) & set(_WEIGHT_NAMES)
    if given != expected:
        raise KerasConversionError(
            f"{fn}: scale={scale}, center={center} needs the arrays {sorted(expected)}, got "
            f"{sorted(given)}"
        )
    shapes = {n: arrays[n].shape for n in _WEIGHT_NAMES if n in arrays}
    if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise KerasConversionError(
            f"{fn}: expected 1-D weight arrays of one length C, got shapes {shapes}"
        )
    if shapes["moving_mean"][0] == 0:
        raise KerasConversionError(f"{fn}: expected at least one channel, got 0")


def _read_options(config: dict[str, Any], eval_only: bool, fn: str) -> dict[str, Any]:
    unknown = sorted(set(config) - _KNOWN)
    if unknown:
        raise KerasConversionError(
            f"{fn}: unknown BatchNormalization option(s) {unknown}: cannot tell whether they "
            "change the output; remove them from the config if they do not"
        )
    used = [k for k, off in _TRAINING_ONLY.items() if config.get(k, off) not in (off, {}, [])]
    if used and not eval_only:
        reasons = "; ".join(
            f"{k}={config[k]!r}"
            + (f" ({_WHY_TRAINING_ONLY[k]})" if k in _WHY_TRAINING_ONLY else "")
            for k in used
        )
        raise KerasConversionError(
            f"{fn}: the layer uses training-time option(s) normkit's BatchNorm does not have: "
            f"{reasons}. Inference does not depend on them: pass eval_only=True to convert "
            "for inference"
        )
    options = {k: config.get(k, v) for k, v in _DEFAULTS.items()}
    options["trainable"] = config.get("trainable", True)
    axis = options["axis"]
    if isinstance(axis, (list, tuple)) and len(axis) == 1:  # tf.keras 2 stored [3]
        axis = axis[0]
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise KerasConversionError(
            f"{fn}: expected one channel axis (an int), got axis={options['axis']!r}"
        )
    options["axis"] = int(axis)
    for key in ("center", "scale", "trainable"):
        if not isinstance(options[key], (bool, np.bool_)):
            raise KerasConversionError(f"{fn}: expected {key} True or False, got {options[key]!r}")
        options[key] = bool(options[key])
    momentum, epsilon = options["momentum"], options["epsilon"]
    if not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise KerasConversionError(
            f"{fn}: expected Keras's momentum (a decay) in [0, 1], got {momentum!r}"
        )
    if not isinstance(epsilon, (int, float)) or not epsilon >= 0.0:
        raise KerasConversionError(f"{fn}: expected epsilon >= 0, got {epsilon!r}")
    options["momentum"], options["epsilon"] = float(momentum), float(epsilon)
    return options


def _resolve_dim(dim: int | None, ndim: int | None, axis: int, fn: str) -> int:
    if dim is not None and dim not in _NDIMS_OF_DIM:
        raise KerasConversionError(f"{fn}: expected dim=1, 2 or 3, got {dim!r}")
    if ndim is not None:
        if ndim not in _DIM_OF_NDIM:
            raise KerasConversionError(
                f"{fn}: the layer takes inputs of rank {ndim}; BatchNorm1d/2d/3d take rank 2 "
                "to 5 (batch and channel axes included)"
            )
        if dim is not None and dim != _DIM_OF_NDIM[ndim]:
            raise KerasConversionError(
                f"{fn}: dim={dim} but the layer takes inputs of rank {ndim}, which is "
                f"BatchNorm{_DIM_OF_NDIM[ndim]}d"
            )
        dim = _DIM_OF_NDIM[ndim]
    if dim is None:
        raise KerasConversionError(
            f"{fn}: the input rank is unknown (a config without build_config): pass dim=1, "
            "2 or 3 for BatchNorm1d/2d/3d"
        )
    ndims = (ndim,) if ndim is not None else _NDIMS_OF_DIM[dim]
    if not any(-n < axis < n and axis % n != 0 for n in ndims):
        raise KerasConversionError(
            f"{fn}: axis={axis} is not a channel axis of a rank-{'/'.join(map(str, ndims))} "
            "input (axis 0 is the batch)"
        )
    return dim


# ---------------------------------------------------------------------- normkit -> Keras


def to_keras_config(
    layer: nn.Module, *, axis: int = -1, ndim: int | None = None, name: str | None = None
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The Keras ``BatchNormalization`` config and weight arrays of a BatchNorm; no keras needed.

    ``keras.layers.BatchNormalization.from_config(config)``, built on an input of rank
    ``ndim`` with ``C`` channels at ``axis``, then ``set_weights(arrays)``, is the layer
    (:func:`to_keras` does exactly that). Mapping: ``momentum = 1 - p``
    (:func:`flip_momentum`), ``epsilon = eps``, ``moving_mean/moving_variance =
    running_mean/running_var``; no bias -> ``center=False``; no gamma, or a gamma fixed at 1
    (``requires_grad=False``, all ones) -> ``scale=False``; frozen by
    :func:`normkit.tools.freeze` -> ``trainable=False``; ``dtype`` the layer's. Not carried
    (Keras has no place for them): ``num_batches_tracked`` and, in the config, the
    ``requires_grad`` flags of single parameters (:func:`to_keras` sets them on the
    variables).

    Args:
        layer: ``BatchNorm1d/2d/3d`` of normkit.nn or torch.nn, with running statistics and
            a float momentum (Keras has no cumulative average and always normalizes with the
            moving statistics in inference).
        axis: the Keras channel axis: -1 for channels-last data (Keras's default), 1 for
            channels-first. Default: -1
        ndim: the Keras input rank, to check ``axis`` (BatchNorm1d: 2 or 3; 2d: 4; 3d: 5).
        name: the Keras layer's name. Default: none (Keras picks one)

    Returns:
        ``(config, arrays)``: arrays in ``get_weights()`` order (gamma if ``scale``, beta if
        ``center``, moving_mean, moving_variance), NumPy, in the layer's dtype.

    Examples::

        >>> import normkit as nk
        >>> config, arrays = nk.tools.to_keras_config(nk.nn.BatchNorm2d(3, momentum=0.1))
        >>> config["momentum"], config["epsilon"], config["axis"], len(arrays)
        (0.9, 1e-05, -1, 4)
    """
    fn = "to_keras_config"
    dim = _check_layer(layer, fn)
    _check_axis(axis, dim, ndim, f"{fn}: {type(layer).__name__}({layer.num_features})")
    trainable = _keras_trainable(layer, fn)
    center = layer.bias is not None
    scale = layer.weight is not None and not _gamma_fixed_at_one(layer)
    config: dict[str, Any] = {} if name is None else {"name": name}
    config.update(
        trainable=trainable,
        dtype=_KERAS_DTYPE.get(layer.running_mean.dtype, str(layer.running_mean.dtype)),
        axis=int(axis),
        momentum=flip_momentum(layer.momentum),
        epsilon=float(layer.eps),
        center=center,
        scale=scale,
    )
    tensors = [layer.weight] if scale else []
    tensors += [layer.bias] if center else []
    tensors += [layer.running_mean, layer.running_var]
    return config, [t.detach().cpu().numpy().copy() for t in tensors]


def to_keras(
    layer: nn.Module, *, axis: int = -1, ndim: int | None = None, name: str | None = None
) -> Any:
    """A built ``keras.layers.BatchNormalization`` with the layer's state (needs keras).

    The Keras layer's inference output on data with channels at ``axis`` equals the
    layer's eval output on the same data with channels moved to dim 1. Built for inputs of
    rank ``ndim`` (Keras checks the rank of what it is called on). In a trainable layer,
    each gamma/beta with ``requires_grad=False`` gets a variable with ``trainable=False``.
    Arguments and mapping: :func:`to_keras_config`; the Keras backend is whatever keras
    was imported with.

    Args:
        layer: ``BatchNorm1d/2d/3d`` of normkit.nn or torch.nn.
        axis: the Keras channel axis (-1 channels last, 1 channels first). Default: -1
        ndim: the input rank with the batch axis. Default: 2 for BatchNorm1d (``(N, C)``;
            pass 3 for ``(N, L, C)``), 4 for BatchNorm2d, 5 for BatchNorm3d.
        name: the Keras layer's name. Default: Keras picks one

    Raises:
        ImportError: keras is not installed (:func:`to_keras_config` needs no keras).
        KerasConversionError: as :func:`to_keras_config`.
    """
    fn = "to_keras"
    dim = _check_layer(layer, fn)
    ndim = _NDIMS_OF_DIM[dim][0] if ndim is None else ndim
    config, arrays = to_keras_config(layer, axis=axis, ndim=ndim, name=name)
    try:
        import keras
    except ImportError as exc:
        raise ImportError(
            f"{fn}: needs keras (pip install keras); to_keras_config gives the config and "
            "arrays without it"
        ) from exc
    keras_layer = keras.layers.BatchNormalization.from_config(config)
    shape: list[int | None] = [None] * ndim
    shape[axis] = layer.num_features
    keras_layer.build(tuple(shape))
    keras_layer.set_weights(arrays)
    if config["trainable"]:  # a non-trainable Keras layer holds no flags of its own
        for var_name, param in (("gamma", layer.weight), ("beta", layer.bias)):
            variable = getattr(keras_layer, var_name, None)
            if variable is not None and param is not None:
                variable.trainable = param.requires_grad
    return keras_layer


def _check_layer(layer: Any, fn: str) -> int:
    """The layer's dim (1, 2, 3) if it is a plain BatchNorm Keras can hold."""
    for classes in (_NORMKIT_CLASSES, _TORCH_CLASSES):
        dim = next((d for d, c in classes.items() if type(layer) is c), None)
        if dim is not None:
            break
    else:
        raise KerasConversionError(
            f"{fn}: expected a BatchNorm1d/2d/3d of normkit.nn or torch.nn, got "
            f"{type(layer).__name__} (a normkit variant converts to BatchNorm with "
            "nk.tools.convert(model, 'batchnorm'))"
        )
    label = f"{type(layer).__name__}({layer.num_features})"
    if not layer.track_running_stats or layer.running_mean is None or layer.running_var is None:
        raise KerasConversionError(
            f"{fn}: {label} has no running statistics (track_running_stats=False: it "
            "normalizes with batch statistics in eval too); Keras always keeps moving ones"
        )
    if layer.momentum is None:
        raise KerasConversionError(
            f"{fn}: {label} has momentum=None (cumulative average); Keras has only the "
            "exponential moving average: set a float momentum first"
        )
    return dim


def _check_axis(axis: Any, dim: int, ndim: int | None, fn: str) -> None:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise KerasConversionError(f"{fn}: expected axis as an int, got {axis!r}")
    if ndim is not None and ndim not in _NDIMS_OF_DIM[dim]:
        raise KerasConversionError(
            f"{fn}: BatchNorm{dim}d takes inputs of rank "
            f"{' or '.join(map(str, _NDIMS_OF_DIM[dim]))}, got ndim={ndim!r}"
        )
    ndims = (ndim,) if ndim is not None else _NDIMS_OF_DIM[dim]
    if not any(-n < axis < n and axis % n != 0 for n in ndims):
        raise KerasConversionError(
            f"{fn}: axis={axis} is not a channel axis of a rank-{'/'.join(map(str, ndims))} "
            "input (axis 0 is the batch)"
        )


def _keras_trainable(layer: nn.Module, fn: str) -> bool:
    """False for a layer frozen by :func:`freeze` (statistics and affine), as Keras's
    ``trainable=False`` freezes both; a statistics-only freeze has no Keras equivalent."""
    frozen = is_frozen(layer)
    if frozen is None:
        return True
    has_params = any(True for _ in layer.parameters(recurse=False))
    if frozen["stats"] and (frozen["affine"] or not has_params):
        return False
    if frozen["stats"]:
        raise KerasConversionError(
            f"{fn}: {type(layer).__name__}({layer.num_features}) is frozen with stats only "
            "(eval mode, gamma/beta trained); Keras's trainable=False also fixes gamma and "
            "beta: nk.tools.freeze(layer) or nk.tools.unfreeze(layer) first"
        )
    return True


def _gamma_fixed_at_one(layer: nn.Module) -> bool:
    """gamma that stays 1 for good: Keras's ``scale=False``. Its own flag counts, the one
    from before :func:`freeze` for a frozen layer (``unfreeze`` would give it back)."""
    weight = layer.weight
    record = layer.__dict__.get(FREEZE_ATTR)
    requires_grad = weight.requires_grad
    if record is not None:
        requires_grad = record["requires_grad"].get("weight", requires_grad)
    return not requires_grad and bool(torch.all(weight.detach() == 1))


__all__ = ["KerasConversionError", "flip_momentum", "from_keras", "to_keras", "to_keras_config"]
