"""The dispatch table: which implementation computes an op for a given input.

Two backends implement the same ops (same signatures, same semantics; see
:mod:`normkit.backends.torch_backend` for the contract of each op):

* ``"numba"``: normkit's compiled CPU kernels (float32/float64 CPU tensors).
* ``"torch"``: torch's own kernels (``torch.native_batch_norm``, ``torch.layer_norm``, ...)
  with normkit's semantics on top (guarded running statistics); every device and dtype.

Choice at each call, in this order: an explicit ``backend=`` argument, the innermost
:func:`normkit.use_backend` block, the ``NORMKIT_BACKEND`` environment variable (read once,
at the first dispatch of the process), else automatic. A backend asked for by name that
cannot take the input raises :class:`~normkit.config.BackendUnavailableError`.

Automatic choice: ``"numba"`` where it supports the input and the input's size lies in the
range where ``benchmarks/bench_crossover.py`` measured it faster for the op, dtype and layout
(``crossover.json`` beside this module, with this machine's own measurements over it when
``normkit tune`` made them: :mod:`normkit.backends.tuning`); ``"torch"`` otherwise. Layouts are those of
:func:`layout_of`; an op without an entry for ``"short_planes"`` uses its ``"contiguous"``
one. A per-channel op followed by
an activation is measured on its own (the entry ``"<op>+act"``): numba computes the
activation in the same pass, torch's kernel leaves it to a second one. While ``torch.compile``
traces, the automatic choice is ``"torch"``: the compiler fuses torch's ops with the
convolutions and activations around them, which an opaque kernel call prevents (measured
whole-model: compiled training steps 0.80-0.92x of ``torch.compile`` of the torch model with
normkit's kernels in the graph). Name a backend to compile normkit's kernels in.

The decision is computed once per (op, device, dtype, layout, request) and cached; what
remains per call is one dictionary lookup and a size comparison. The numba backend (Numba
itself takes about half a second to import) is loaded when an input first needs it.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from normkit._shared import constant_under_compile
from normkit.config import BackendUnavailableError, requested_backend

_log = logging.getLogger(__name__)

BACKENDS = ("numba", "torch")
_MODULES = {"numba": "normkit.backends.numba_backend", "torch": "normkit.backends.torch_backend"}


class _Backend:
    __slots__ = ("name", "ops", "supports")

    def __init__(self, name: str, supports: Callable[[torch.dtype, str], bool], ops: dict) -> None:
        self.name, self.supports, self.ops = name, supports, ops


_LOADED: dict[str, _Backend] = {}
_LOAD_FAILED: dict[str, str] = {}
# (op, device type, dtype, layout, requested, fused activation) -> (backend, fallback or "",
# min, max numel)
_DECISIONS: dict[tuple, tuple[str, str, int, int | None]] = {}
_CROSSOVER: dict[str, dict[str, dict[str, int]]] = {}
_COMPILING = "auto, compiling"  # the automatic choice while torch.compile traces


def register_backend(name: str, supports: Callable[[torch.dtype, str], bool], ops: dict) -> None:
    """Declare a backend: ``supports(dtype, device_type)`` telling which inputs it takes,
    and its ops."""
    _LOADED[name] = _Backend(name, supports, ops)
    _DECISIONS.clear()


def forget_decisions() -> None:
    """Drop the cached decisions (after a fork, or when a backend's support changes)."""
    _DECISIONS.clear()


def _load(name: str) -> _Backend | None:
    backend = _LOADED.get(name)
    if backend is not None or name in _LOAD_FAILED:
        return backend
    try:
        importlib.import_module(_MODULES[name])
    except ImportError as exc:  # numba missing or broken
        _LOAD_FAILED[name] = str(exc)
        _log.debug("normkit backend %r unavailable: %s", name, exc)
        return None
    return _LOADED.get(name)


def available() -> list[str]:
    """Backends that load on this machine."""
    return [name for name in BACKENDS if _load(name) is not None]


#: Contiguous ``(N, C, *)`` inputs whose planes (``*``) hold fewer values than this are the
#: ``"short_planes"`` layout: the numba kernels sweep them as rows of ``C * L`` values
#: (``SHORT_PLANE`` of ``normkit.kernels.batch_norm_ncl``, which this module cannot import
#: without loading Numba), and the sizes where they win differ (late-stage 7x7 and 4x4
#: tensors, in benchmarks/bench_crossover.py).
SHORT_PLANES = 64


def layout_of(x: Tensor) -> str:
    """``"2d"`` (a matrix: BatchNorm1d's ``(N, C)``, rows of LayerNorm), ``"contiguous"``,
    ``"short_planes"`` (contiguous ``(N, C, *)`` with fewer than :data:`SHORT_PLANES`
    values per plane), ``"channels_last"`` (channels fastest, 4-D or 5-D) or
    ``"strided"``."""
    if x.dim() == 2:
        return "2d"
    if x.is_contiguous():
        if x.dim() >= 3 and x.shape[2:].numel() < SHORT_PLANES:
            return "short_planes"
        return "contiguous"
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return "channels_last"
    return "strided"


def _load_crossover() -> None:
    """The shipped table, then this machine's measured cells over it (``normkit tune``,
    :mod:`normkit.backends.tuning`); an unreadable machine table is logged and ignored."""
    from normkit.backends.tuning import tuned_table_path

    path = Path(__file__).with_name("crossover.json")
    table = json.loads(path.read_text()) if path.exists() else {}
    tuned = tuned_table_path()
    if tuned is not None and tuned.exists():
        try:
            measured = json.loads(tuned.read_text())
            for op, by_dtype in measured.items():
                for dtype, by_layout in by_dtype.items():
                    for layout, found in by_layout.items():
                        cell = {"min": int(found["min"]), "max": found["max"]}
                        table.setdefault(op, {}).setdefault(dtype, {})[layout] = cell
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            _log.warning("normkit: ignoring the measured crossover table %s: %s", tuned, exc)
    _CROSSOVER.update(table or {"": {}})


def reload_crossover() -> None:
    """Read the crossover tables again at the next decision (after ``normkit tune``)."""
    _CROSSOVER.clear()
    _DECISIONS.clear()


def crossover(
    op: str, dtype: torch.dtype, layout: str, fused_act: bool = False
) -> tuple[int, int | None]:
    """``(min, max)`` input size (in elements; ``max`` None: no limit) for which the numba
    kernel was measured faster than torch's; ``(1, None)`` where nothing was measured.

    The entry read is the first measured of: the layout's own, then (for ``"short_planes"``)
    the ``"contiguous"`` one; within each, with an activation after the op (``fused_act``)
    the ``"<op>+act"`` entry before ``op``'s."""
    if not _CROSSOVER:
        _load_crossover()
    found = lookup(_CROSSOVER, op, str(dtype).removeprefix("torch."), layout, fused_act)
    if found is None:
        return 1, None
    return max(1, int(found["min"])), found["max"]


def lookup(table: dict, op: str, dtype: str, layout: str, fused_act: bool = False) -> dict | None:
    """The cell of a crossover ``table`` that decides ``(op, dtype name, layout)``, in the
    order :func:`crossover` documents; None when nothing was measured."""
    layouts = (layout, "contiguous") if layout == "short_planes" else (layout,)
    names = (f"{op}+act", op) if fused_act else (op,)
    for candidate in layouts:
        for name in names:
            found = table.get(name, {}).get(dtype, {}).get(candidate)
            if found is not None:
                return found
    return None


@constant_under_compile
def _decision(
    op: str,
    device_type: str,
    dtype: torch.dtype,
    layout: str,
    requested: str | None,
    fused_act: bool,
) -> tuple[str, str, int, int | None]:
    """``(backend, fallback backend or "", min numel, max numel or None)``: ``backend``
    for inputs of ``min <= numel <= max``, ``fallback`` for the others; computed once per key.
    Under torch.compile this runs at trace time (it may import a backend module)."""
    key = (op, device_type, dtype, layout, requested, fused_act)
    decision = _DECISIONS.get(key)
    if decision is None:
        decision = _DECISIONS[key] = _decide(*key)
    return decision


def _decide(
    op: str,
    device_type: str,
    dtype: torch.dtype,
    layout: str,
    requested: str | None,
    fused_act: bool,
):
    if requested == _COMPILING:
        # Under torch.compile, torch's ops enter the graph as what they are and the compiler
        # fuses them with their neighbours; normkit's kernels would stay opaque calls between
        # the fused regions (measured in benchmarks/bench_models.py --compile).
        _load("torch")
        return "torch", "", 0, None
    if requested is not None:
        if requested not in _MODULES:
            raise BackendUnavailableError(
                f"unknown normkit backend {requested!r}; expected one of {['auto', *BACKENDS]}"
            )
        backend = _load(requested)
        if backend is None:
            raise BackendUnavailableError(
                f"normkit backend {requested!r} could not be loaded: {_LOAD_FAILED[requested]}"
            )
        if op not in backend.ops:
            raise BackendUnavailableError(
                f"normkit backend {requested!r} does not implement {op!r}"
            )
        if not backend.supports(dtype, device_type):
            raise BackendUnavailableError(
                f"normkit backend {requested!r} cannot run {op!r} on a {dtype} tensor on "
                f"device {device_type!r}"
            )
        return requested, "", 1 if requested == "numba" else 0, None
    _load("torch")
    numba = _LOADED.get("numba")
    if numba is None:
        from normkit.backends._arrays import NUMPY_DTYPES  # numba_backend.supports' dtypes

        if "numba" in _LOAD_FAILED or device_type != "cpu" or dtype not in NUMPY_DTYPES:
            return "torch", "", 0, None
        # Importing Numba and loading its kernels takes about half a second: it happens in
        # `select`, when an input first falls in numba's range, which then decides again.
        return ("numba", "torch", *crossover(op, dtype, layout, fused_act))
    if op not in numba.ops or not numba.supports(dtype, device_type):
        return "torch", "", 0, None
    return ("numba", "torch", *crossover(op, dtype, layout, fused_act))


def select(op: str, x: Tensor, backend: str | None = None, act: str = "identity") -> Callable:
    """The implementation of ``op`` for input ``x`` (see the module docstring); ``act``:
    the activation the call applies after the op (its measured range may differ)."""
    requested = requested_backend(backend)
    if requested is None and torch.compiler.is_compiling():
        requested = _COMPILING
    device_type = "cpu" if x.is_cpu else x.device.type  # x.device builds an object
    name, fallback, low, high = _decision(
        op, device_type, x.dtype, layout_of(x), requested, act != "identity"
    )
    numel = x.numel()
    if numel < low or (high is not None and numel > high):
        if not fallback:  # numba asked for by name, on an empty tensor
            raise BackendUnavailableError(
                f"normkit backend {requested!r} cannot run {op!r} on an empty tensor "
                f"(size {tuple(x.shape)})"
            )
        name = fallback
    chosen = _LOADED.get(name)
    if chosen is None:  # the automatic choice of a backend not loaded yet (see _decide)
        _load(name)
        forget_decisions()
        return select(op, x, backend, act)
    return chosen.ops[op]


def backend_name(impl: Callable) -> str:
    """Which backend an implementation returned by :func:`select` belongs to."""
    for name, backend in _LOADED.items():
        if impl in backend.ops.values():
            return name
    raise ValueError(f"{impl!r} is not a registered normkit op")
