"""LazyBatchNorm1d/2d/3d and LazyInstanceNorm1d/2d/3d: torch.nn's lazy modules whose first
call infers ``num_features`` and turns them into normkit's BatchNorm/InstanceNorm.

Each class subclasses torch's lazy class (``nk.nn.LazyBatchNorm2d(..., torch.nn.LazyBatchNorm2d)``),
so before the first call the module *is* torch's lazy module for ``isinstance`` and for
torch's lazy-module machinery (:class:`torch.nn.modules.lazy.LazyModuleMixin`: uninitialized
parameters, ``load_state_dict`` before the first call, ``has_uninitialized_params``,
torch.compile's lazy-module handling). The first call's forward pre-hook materializes
``weight``, ``bias``, ``running_mean`` and ``running_var`` with ``C`` elements and switches the
module's class to ``cls_to_become``, normkit's ``BatchNorm2d`` (itself a subclass of
``torch.nn.BatchNorm2d``), which then computes every call, the first included.

Where this differs from torch 2.13's lazy modules (each a failure or a wrong value there):

- ``C`` is read at the channel dim of an accepted input: an unbatched InstanceNorm input
  ``(C, L)`` gives ``C`` (torch reads ``input.shape[1]``, ``L``, and fails).
- The first input's dtype and rank are checked before anything is materialized: a bad
  first call raises an error naming the layer and leaves the module lazy (torch
  materializes with ``input.shape[1]`` first, then fails).
- ``num_features`` is always the channel count: also without affine and running
  statistics (torch leaves 0, and its InstanceNorm then warns on every call) and after
  ``load_state_dict`` before the first call (the loaded size; torch leaves 0).
- Before the first call the module deep-copies, and pickles keeping the dtype and device
  set by ``.to()``/``.double()`` (torch's ``UninitializedBuffer`` cannot be deep-copied and
  its uninitialized tensors pickle without dtype or device).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

from normkit.functional import _validate as v
from normkit.nn._single_sample import SingleSamplePolicy
from normkit.nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from normkit.nn.instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d

# The per-channel tensors a lazy layer materializes, with torch's initial values
# (``_NormBase.reset_parameters``: gamma 1, beta 0, running mean 0, running variance 1).
_INITIAL_VALUES = {"weight": 1.0, "bias": 0.0, "running_mean": 0.0, "running_var": 1.0}
# Key in a pickled/deep-copied state: (dict name, entry) -> (requires_grad, dtype, device)
_LAZY_SPECS = "_normkit_uninitialized"


class _LazyPerChannel:
    """Placed before torch's ``_LazyNormBase`` subclass. The families differ in
    :meth:`_accepted_ranks` and :meth:`_channel_dim`."""

    cls_to_become: type[nn.Module]
    num_features: int
    _parameters: dict[str, Any]
    _buffers: dict[str, Any]

    def __init__(
        self,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        name = type(self).__name__
        v.check_momentum(momentum, name)
        v.check_eps(eps, False, name)
        super().__init__(  # type: ignore[call-arg]
            eps, momentum, affine, track_running_stats, device, dtype, bias=bias
        )

    def _accepted_ranks(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _channel_dim(self, input: Tensor) -> int:
        raise NotImplementedError

    def _per_channel_tensors(self) -> dict[str, Tensor]:
        return {n: t for n in _INITIAL_VALUES if (t := getattr(self, n)) is not None}

    def initialize_parameters(self, input: Tensor) -> None:
        """The first call's forward pre-hook (torch's ``_infer_parameters`` runs it, then
        switches the class): check ``input``, take ``C`` from it unless a loaded state
        already fixed ``num_features``, and materialize the still uninitialized tensors
        with ``C`` elements and torch's initial values."""
        name = type(self).__name__
        v.check_floating(input, name)
        v.check_rank(input, self._accepted_ranks(), name)
        if self.num_features == 0:
            self.num_features = int(input.shape[self._channel_dim(input)])
        with torch.no_grad():
            for attr, tensor in self._per_channel_tensors().items():
                if is_lazy(tensor):
                    tensor.materialize((self.num_features,))
                    tensor.fill_(_INITIAL_VALUES[attr])

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # torch's pre-hook (LazyModuleMixin._lazy_load_hook) materializes each loaded
        # tensor with the loaded shape; num_features follows them.
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if self.num_features != 0:
            return
        shapes = {tuple(t.shape) for t in self._per_channel_tensors().values() if not is_lazy(t)}
        if len(shapes) == 1 and len(shape := next(iter(shapes))) == 1:
            self.num_features = shape[0]
        elif shapes:
            where = f" at {prefix[:-1]!r}" if prefix else ""
            error_msgs.append(
                f"{type(self).__name__}{where}: expected the loaded weight, bias, running_mean "
                f"and running_var of one shape (C,), got shapes {sorted(shapes)}"
            )

    def forward(self, input: Tensor) -> Tensor:
        # Called through __call__, the pre-hook has already made this module a
        # cls_to_become, whose forward computes the first call too.
        if isinstance(self, LazyModuleMixin):
            raise RuntimeError(
                f"{type(self).__name__}: not initialized; call the module itself "
                "(module(input)), whose first call infers num_features, not module.forward"
            )
        return type(self).forward(self, input)

    # torch's uninitialized tensors pickle without dtype and device and UninitializedBuffer
    # has no __deepcopy__: a state without them, and what rebuilds them.
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        specs = {}
        for table in ("_parameters", "_buffers"):
            entries = dict(state[table])
            for key, tensor in entries.items():
                if is_lazy(tensor):
                    specs[table, key] = (tensor.requires_grad, tensor.dtype, tensor.device)
                    entries[key] = None
            state[table] = entries
        state[_LAZY_SPECS] = specs
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        specs = state.pop(_LAZY_SPECS, {})
        super().__setstate__(state)  # type: ignore[misc]
        for (table, key), (requires_grad, dtype, device) in specs.items():
            kind = UninitializedParameter if table == "_parameters" else UninitializedBuffer
            getattr(self, table)[key] = kind(requires_grad, device, dtype)


class _LazyBatchNorm(SingleSamplePolicy, _LazyPerChannel):
    """``single_sample`` (keyword, normkit's; see :class:`normkit.nn.BatchNorm2d`) is set
    before the first call and kept by the materialized layer."""

    def __init__(
        self,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
        single_sample: str = "error",
    ) -> None:
        super().__init__(eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.single_sample = single_sample

    def extra_repr(self) -> str:
        return super().extra_repr() + self._single_sample_repr()

    def _accepted_ranks(self) -> tuple[int, ...]:
        return self.cls_to_become._ranks  # type: ignore[attr-defined]

    def _channel_dim(self, input: Tensor) -> int:
        return 1


class _LazyInstanceNorm(_LazyPerChannel):
    def _accepted_ranks(self) -> tuple[int, ...]:
        unbatched = self.cls_to_become._no_batch_dim  # type: ignore[attr-defined]
        return (unbatched, unbatched + 1)

    def _channel_dim(self, input: Tensor) -> int:
        return input.dim() - self.cls_to_become._no_batch_dim  # type: ignore[attr-defined]


_DOC_TEMPLATE = """A :class:`torch.nn.{torch_name}` whose first call infers ``num_features``
    from the input's channel dim ({shapes}) and turns it into :class:`normkit.nn.{name}`.

    Arguments and defaults are torch's lazy module's: ``eps=1e-5, momentum=0.1,
    affine=True, track_running_stats=True, bias=True``{note}{policy}. Before the first call
    ``weight``, ``bias``, ``running_mean`` and ``running_var`` are uninitialized (move the
    module with ``.to(dtype/device)`` then, or load a state dict, which materializes them);
    the first call (a "dry run" under ``torch.no_grad()`` is enough) gives them ``C``
    elements and torch's initial values, after which the module is a ``{name}`` (and a
    ``torch.nn.{name}``): same outputs, running statistics and state_dict as torch's lazy
    module. See :mod:`normkit.nn.lazy` for where it does better than torch's.

    Examples::

        >>> import torch, normkit as nk
        >>> layer = nk.nn.{lazy_name}()
        >>> y = layer(torch.randn({example}))
        >>> type(layer).__name__, layer.num_features, tuple(layer.weight.shape)
        ('{name}', 3, (3,))
"""

_BN_POLICY = (
    ", and normkit's keyword ``single_sample`` (a training batch with one value per channel, "
    "see :class:`normkit.nn.BatchNorm2d`)"
)
_IN_NOTE = " (unlike InstanceNorm's ``affine=False, track_running_stats=False``)"


class LazyBatchNorm1d(_LazyBatchNorm, nn.LazyBatchNorm1d):
    __doc__ = _DOC_TEMPLATE.format(
        torch_name="LazyBatchNorm1d",
        name="BatchNorm1d",
        lazy_name="LazyBatchNorm1d",
        policy=_BN_POLICY,
        shapes="``(N, C)`` or ``(N, C, L)``",
        note="",
        example="4, 3",
    )
    cls_to_become = BatchNorm1d


class LazyBatchNorm2d(_LazyBatchNorm, nn.LazyBatchNorm2d):
    __doc__ = _DOC_TEMPLATE.format(
        torch_name="LazyBatchNorm2d",
        name="BatchNorm2d",
        lazy_name="LazyBatchNorm2d",
        policy=_BN_POLICY,
        shapes="``(N, C, H, W)``",
        note="",
        example="4, 3, 2, 2",
    )
    cls_to_become = BatchNorm2d


class LazyBatchNorm3d(_LazyBatchNorm, nn.LazyBatchNorm3d):
    __doc__ = _DOC_TEMPLATE.format(
        torch_name="LazyBatchNorm3d",
        name="BatchNorm3d",
        lazy_name="LazyBatchNorm3d",
        policy=_BN_POLICY,
        shapes="``(N, C, D, H, W)``",
        note="",
        example="2, 3, 2, 2, 2",
    )
    cls_to_become = BatchNorm3d


class LazyInstanceNorm1d(_LazyInstanceNorm, nn.LazyInstanceNorm1d):
    __doc__ = _DOC_TEMPLATE.format(
        torch_name="LazyInstanceNorm1d",
        name="InstanceNorm1d",
        lazy_name="LazyInstanceNorm1d",
        policy="",
        shapes="``(N, C, L)`` or unbatched ``(C, L)``",
        note=_IN_NOTE,
        example="2, 3, 5",
    )
    cls_to_become = InstanceNorm1d


class LazyInstanceNorm2d(_LazyInstanceNorm, nn.LazyInstanceNorm2d):
    __doc__ = _DOC_TEMPLATE.format(
        torch_name="LazyInstanceNorm2d",
        name="InstanceNorm2d",
        lazy_name="LazyInstanceNorm2d",
        policy="",
        shapes="``(N, C, H, W)`` or unbatched ``(C, H, W)``",
        note=_IN_NOTE,
        example="2, 3, 4, 4",
    )
    cls_to_become = InstanceNorm2d


class LazyInstanceNorm3d(_LazyInstanceNorm, nn.LazyInstanceNorm3d):
    __doc__ = _DOC_TEMPLATE.format(
        torch_name="LazyInstanceNorm3d",
        name="InstanceNorm3d",
        lazy_name="LazyInstanceNorm3d",
        policy="",
        shapes="``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``",
        note=_IN_NOTE,
        example="2, 3, 2, 3, 3",
    )
    cls_to_become = InstanceNorm3d
