"""Swap the normalization layers of a model, keeping weights and statistics.

    model = nk.tools.convert(model, "normkit")     # torch.nn norms -> normkit.nn twins
    model = nk.tools.convert(model, "torch")       # and back
    model = nk.tools.convert(model, "frozen")      # BatchNorm -> FrozenBatchNorm
    model = nk.tools.convert(model, "group")       # BatchNorm -> GroupNorm(gcd(C, 32), C)
    model = nk.tools.convert(model, "original")    # undo frozen/group/renorm/ghost/sync

Targets (see :data:`TARGETS`; ``nk.tools.convert_targets()`` lists them):

=============  ==================================================  ========================
target         replaces                                            outputs
=============  ==================================================  ========================
``normkit``    torch.nn norms with a normkit.nn twin               identical (train + eval)
``torch``      normkit.nn norms with a torch.nn twin               identical (train + eval)
``sync``       BatchNorm1d/2d/3d -> normkit SyncBatchNorm          identical on one process
``frozen``     BatchNorm -> FrozenBatchNorm1d/2d/3d                the BN's eval output
``renorm``     BatchNorm -> BatchRenorm1d/2d/3d                    identical in eval
``ghost``      BatchNorm1d/2d -> GhostBatchNorm1d/2d               identical in eval
``group``      BatchNorm -> GroupNorm (gamma, beta kept)           change: per-sample stats
``batchnorm``  normkit variants -> normkit BatchNorm1d/2d/3d       identical in eval
``original``   undoes any of the above exactly                     the original layer
=============  ==================================================  ========================

GroupNorm group rule (``to="group"``): ``num_groups = gcd(C, 32)``: the paper's default of
32 groups (Wu & He 2018) when ``C`` is a multiple of 32, else the largest power of two
dividing ``C`` (16 for C=48, 8 for C=24, 1 for odd C). Pass ``num_groups=`` (an int or a
function of ``C``) to choose otherwise. GroupNorm has no running statistics: the converted
model normalizes each sample by itself, so outputs change and the model usually needs
fine-tuning; the BN's running statistics are kept aside so ``"original"`` can restore it.

A normkit layer's ``single_sample`` policy (a training batch with one value per channel)
carries over to its normkit replacement; torch's layers have no such option, so
``"torch"`` drops it, with a note in the report and a :class:`ConversionWarning` (the
torch layer raises where the normkit one did not); ``"frozen"`` and ``"group"`` note that
their layers need none. From torch the policy is the default, torch's error.

Everything but the replaced layers is untouched; by default the model is deep-copied first
(``inplace=True`` converts in place). Each new layer keeps its predecessor's device, dtype,
train/eval flag and ``requires_grad`` flags. A lossy conversion records the original
layer's class, arguments and state on the new layer (``_normkit_origin``) so that
``convert(..., "original")`` is its exact inverse.
"""

from __future__ import annotations

import copy
import importlib
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin

from normkit.tools import converters
from normkit.tools._report import text_table
from normkit.tools._walk import (
    factory_kwargs_of,
    has_running_stats,
    is_batch_norm,
    is_frozen_batch_norm,
    norm_kind,
    normkit_class,
    replace_modules,
)
from normkit.tools.freeze import transfer_freeze
from normkit.tools.fuse import fuse_activations, unfuse_markers
from normkit.tools.fuse_blocks import fuse_blocks, unfuse_blocks
from normkit.tools.single_sample import carry_single_sample, policy_of

ORIGIN_ATTR = "_normkit_origin"
_PLAIN_BN = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


class ConversionError(ValueError):
    """A layer cannot be converted to the requested target."""


class ConversionWarning(UserWarning):
    """``convert(model, "normkit")`` left normalization-like layers as they are."""


@dataclass
class Replacement:
    name: str
    old: str
    new: str
    note: str = ""


@dataclass
class ConvertReport:
    """What :func:`convert` replaced (``replaced``) and left alone on purpose (``skipped``)."""

    target: str
    replaced: list[Replacement] = field(default_factory=list)
    skipped: list[Replacement] = field(default_factory=list)
    fused: list = field(default_factory=list)  # FusedPair(norm, activation, act, residual)
    not_fused: list = field(default_factory=list)  # NotFused(block, cls, reason)

    def __len__(self) -> int:
        return len(self.replaced)

    def left_summary(self) -> str:
        """One sentence: which classes were left, how many of each, and why."""
        groups: dict[tuple[str, str], int] = {}
        for r in self.skipped:
            groups[(r.old, r.note)] = groups.get((r.old, r.note), 0) + 1
        parts = [f"{count} x {cls} ({why})" for (cls, why), count in groups.items()]
        return (
            f"convert(to={self.target!r}) left {len(self.skipped)} normalization-like layer(s) "
            f"as they are: {'; '.join(parts)}"
        )

    def __str__(self) -> str:
        head = f"convert(to={self.target!r}): {len(self.replaced)} layer(s) replaced"
        rows = [(r.name, r.old, r.new, r.note) for r in self.replaced]
        rows += [(r.name, r.old, "(kept)", r.note) for r in self.skipped]
        rows += [(p.norm, _fused_from(p), f"act={p.act!r}", "fused") for p in self.fused]
        rows += [(b.block, b.cls, "(not fused)", b.reason) for b in self.not_fused]
        if not rows:
            return head + " (no matching layer)"
        return head + "\n" + text_table(["layer", "from", "to", "note"], rows)


def _fused_from(pair) -> str:
    steps = (["residual"] if pair.residual else []) + ([pair.activation] if pair.activation else [])
    return "+ " + " + ".join(steps)


# --------------------------------------------------------------------------- constructors


def _origin_of(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _is_torch(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.nn.")


def _is_normkit(module: nn.Module) -> bool:
    return type(module).__module__.startswith("normkit.nn.")


def _bias_kw(module: nn.Module, affine: bool) -> dict[str, bool]:
    # Passed only when False: older torch versions do not accept ``bias=``.
    return {"bias": False} if affine and getattr(module, "bias", None) is None else {}


def ctor_kwargs(module: nn.Module) -> dict[str, Any]:
    """Constructor arguments that rebuild a torch/normkit norm layer (without device/dtype)."""
    kind = norm_kind(module)
    if kind in ("batch", "instance") and hasattr(module, "track_running_stats"):
        kw = {
            "num_features": module.num_features,
            "eps": module.eps,
            "momentum": module.momentum,
            "affine": module.affine,
            "track_running_stats": module.track_running_stats,
        }
        if type(module).__name__ == "SyncBatchNorm":
            kw["process_group"] = getattr(module, "process_group", None)
        if policy_of(module) != "error":  # normkit's option: only its classes take it
            kw["single_sample"] = policy_of(module)
        return kw | _bias_kw(module, module.affine)
    if kind == "layer":
        kw = {
            "normalized_shape": tuple(module.normalized_shape),
            "eps": module.eps,
            "elementwise_affine": module.elementwise_affine,
        }
        return kw | _bias_kw(module, module.elementwise_affine)
    if kind == "group":
        kw = {
            "num_groups": module.num_groups,
            "num_channels": module.num_channels,
            "eps": module.eps,
            "affine": module.affine,
        }
        return kw | _bias_kw(module, module.affine)
    if kind == "rms":
        return {
            "normalized_shape": tuple(module.normalized_shape),
            "eps": module.eps,
            "elementwise_affine": module.elementwise_affine,
        }
    raise ConversionError(
        f"cannot read the constructor arguments of {type(module).__name__} "
        "(not a BatchNorm/InstanceNorm/LayerNorm/GroupNorm/RMSNorm)"
    )


def _finish(new: nn.Module, old: nn.Module, tensors: dict[str, Tensor]) -> nn.Module:
    """Load ``tensors`` into ``new`` (through load_state_dict, so its hooks run), copy the
    train/eval flag and the parameters' requires_grad flags."""
    state = new.state_dict()
    for key, value in tensors.items():
        if key in state:
            if tuple(state[key].shape) != tuple(value.shape):
                raise ConversionError(
                    f"{type(old).__name__} -> {type(new).__name__}: {key} has shape "
                    f"{tuple(value.shape)}, the new layer expects {tuple(state[key].shape)}"
                )
            state[key] = value.detach().to(state[key].dtype)
    new.load_state_dict(state)
    for pname, param in new.named_parameters(recurse=False):
        old_param = getattr(old, pname, None)
        if isinstance(old_param, nn.Parameter):
            param.requires_grad_(old_param.requires_grad)
    new.train(old.training)
    return new


def _build_twin(cls: type[nn.Module], old: nn.Module) -> nn.Module:
    new = cls(**ctor_kwargs(old), **factory_kwargs_of(old))
    return _finish(new, old, old.state_dict())


def _bn_dim(module: nn.Module, options: dict[str, Any]) -> int:
    origin = getattr(module, ORIGIN_ATTR, None) or {}
    for class_name in (type(module).__name__, origin.get("class", "")):
        match = re.search(r"([123])d$", class_name)
        if match:
            return int(match.group(1))
    if "dim" in options:
        return int(options["dim"])
    raise ConversionError(
        f"{type(module).__name__} does not tell its input rank: pass dim=1, 2 or 3 to convert "
        "it to a rank-specific layer"
    )


def _remember_origin(new: nn.Module, old: nn.Module) -> nn.Module:
    """Record what ``convert(..., "original")`` needs to rebuild ``old`` exactly."""
    origin = getattr(old, ORIGIN_ATTR, None)
    if origin is None:  # the first lossy conversion of this layer: remember the original
        origin = {
            "class": _origin_of(old),
            "kwargs": ctor_kwargs(old),
            "state": {k: v.detach().clone() for k, v in old.state_dict().items()},
            "requires_grad": {n: p.requires_grad for n, p in old.named_parameters()},
            "training": old.training,
        }
    setattr(new, ORIGIN_ATTR, origin)
    return new


def _bn_tensors(old: nn.Module) -> dict[str, Tensor]:
    """weight, bias, running_mean, running_var (+ num_batches_tracked) of a BN-like layer."""
    out = {}
    for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        value = getattr(old, key, None)
        if isinstance(value, Tensor):
            out[key] = value
    return out


def _require_running_stats(old: nn.Module, target: str) -> None:
    if not has_running_stats(old):
        raise ConversionError(
            f"{type(old).__name__}(track_running_stats=False) has no running statistics: it "
            f"normalizes with batch statistics in eval too, which {target} cannot reproduce"
        )


# ------------------------------------------------------------------------------ targets


def _convertible(module: nn.Module) -> bool:
    converter = converters.find_converter(module)
    return converter is not None and converter.reason(module) is None


def _to_normkit(old: nn.Module, options: dict[str, Any]) -> nn.Module:
    new = converters.find_converter(old).build(old)
    if type(old) not in converters._TWINS:  # plain torch classes come back by their twin
        converters.remember_source(new, old)
    return new


def _to_torch(old: nn.Module, options: dict[str, Any]) -> nn.Module:
    if converters.source_of(old) is not None:
        old = converters.restore(old)
        if not _is_normkit(old):
            return old
    cls = converters.torch_twin_of(old)
    if cls is None:
        raise ConversionError(
            f"{type(old).__name__} has no torch.nn twin; convert it with to='original' (if it "
            "came from a conversion) or to='batchnorm' first"
        )
    return converters.twin(cls, old)


def _to_sync(old: nn.Module, options: dict[str, Any]) -> nn.Module:
    cls = normkit_class("SyncBatchNorm")
    kwargs = ctor_kwargs(old)
    kwargs["process_group"] = options.get("process_group")
    new = cls(**kwargs, **factory_kwargs_of(old))
    return _remember_origin(_finish(new, old, old.state_dict()), old)


def _to_frozen(old: nn.Module, options: dict[str, Any]) -> nn.Module:
    _require_running_stats(old, "FrozenBatchNorm")
    cls = normkit_class(f"FrozenBatchNorm{_bn_dim(old, options)}d")
    new = cls(old.num_features, eps=old.eps, **factory_kwargs_of(old))
    tensors = _bn_tensors(old)
    tensors.pop("num_batches_tracked", None)
    if getattr(old, "weight", None) is None:  # affine=False: gamma = 1, beta = 0
        tensors.pop("weight", None)
    if getattr(old, "bias", None) is None:
        tensors.pop("bias", None)
    return _remember_origin(_finish(new, old, tensors), old)


def _to_renorm(old: nn.Module, options: dict[str, Any]) -> nn.Module:
    _require_running_stats(old, "BatchRenorm")
    cls = normkit_class(f"BatchRenorm{_bn_dim(old, options)}d")
    kwargs = {k: options[k] for k in ("rmax", "dmax", "warmup_steps") if k in options}
    new = cls(
        old.num_features,
        eps=old.eps,
        momentum=old.momentum if old.momentum is not None else 0.1,
        affine=old.affine,
        **kwargs,
        **factory_kwargs_of(old),
    )
    return _remember_origin(_finish(new, old, _bn_tensors(old)), old)


def _to_ghost(old: nn.Module, options: dict[str, Any]) -> nn.Module:
    _require_running_stats(old, "GhostBatchNorm")
    dim = _bn_dim(old, options)
    if dim == 3:
        raise ConversionError("GhostBatchNorm exists for 1d and 2d inputs, not BatchNorm3d")
    cls = normkit_class(f"GhostBatchNorm{dim}d")
    new = cls(
        old.num_features,
        virtual_batch_size=int(options.get("virtual_batch_size", 32)),
        eps=old.eps,
        momentum=old.momentum if old.momentum is not None else 0.1,
        affine=old.affine,
        **factory_kwargs_of(old),
    )
    return _remember_origin(_finish(new, old, _bn_tensors(old)), old)


def default_num_groups(num_channels: int) -> int:
    """The documented rule: ``gcd(C, 32)`` (32 groups when C is a multiple of 32)."""
    return math.gcd(num_channels, 32)


def _to_group(old: nn.Module, options: dict[str, Any]) -> nn.Module:
    channels = old.num_features
    rule = options.get("num_groups", default_num_groups)
    groups = rule(channels) if callable(rule) else int(rule)
    if groups < 1 or channels % groups:
        raise ConversionError(
            f"num_groups ({groups}) must divide the {channels} channels of {type(old).__name__}"
        )
    affine = getattr(old, "weight", None) is not None
    cls = normkit_class("GroupNorm")
    new = cls(groups, channels, eps=old.eps, affine=affine, **factory_kwargs_of(old))
    tensors = {k: v for k, v in _bn_tensors(old).items() if k in ("weight", "bias")}
    if affine and getattr(old, "bias", None) is None:
        tensors["bias"] = torch.zeros(channels)
    return _remember_origin(_finish(new, old, tensors), old)


def _to_batchnorm(old: nn.Module, options: dict[str, Any]) -> nn.Module:
    if type(old).__name__.startswith("BatchNormAct") and getattr(old, "act", "identity") not in (
        "identity",
        None,
    ):
        raise ConversionError(
            f"{type(old).__name__}(act={old.act!r}) fuses an activation; a plain BatchNorm "
            "would drop it"
        )
    origin = getattr(old, ORIGIN_ATTR, None) or {}
    cls = normkit_class(f"BatchNorm{_bn_dim(old, options)}d")
    kwargs = {"num_features": old.num_features, "eps": old.eps}
    for key in ("momentum", "affine", "track_running_stats"):
        if key in origin.get("kwargs", {}):
            kwargs[key] = origin["kwargs"][key]
        elif hasattr(old, key) and not is_frozen_batch_norm(old):
            kwargs[key] = getattr(old, key)
    new = cls(**kwargs, **factory_kwargs_of(old))
    tensors = _bn_tensors(old)
    if "num_batches_tracked" not in tensors and "num_batches_tracked" in origin.get("state", {}):
        tensors["num_batches_tracked"] = origin["state"]["num_batches_tracked"]
    return _finish(new, old, tensors)


def _to_original(old: nn.Module, options: dict[str, Any]) -> nn.Module:
    origin = getattr(old, ORIGIN_ATTR)
    module_name, _, class_name = origin["class"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    new = cls(**origin["kwargs"], **factory_kwargs_of(old))
    state = dict(origin["state"])
    current = old.state_dict()
    for key in state:  # tensors the converted layer carried (and may have trained) win
        if key in current and current[key].shape == state[key].shape:
            state[key] = current[key]
    new.load_state_dict(state)
    for name, param in new.named_parameters():
        param.requires_grad_(origin["requires_grad"].get(name, True))
    new.train(old.training)
    return new


def _plain_bn(module: nn.Module) -> bool:
    return (
        is_batch_norm(module)
        and (_is_torch(module) or _is_normkit(module))
        and type(module).__name__ in (*_PLAIN_BN, "SyncBatchNorm")
    )


@dataclass(frozen=True)
class Target:
    """A conversion target: which layers it takes, how it builds the replacement."""

    name: str
    description: str
    accepts: Callable[[nn.Module], bool]
    build: Callable[[nn.Module, dict[str, Any]], nn.Module]
    preserves: str  # "exact", "eval" or "no"


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "normkit",
            "norm layers of torch, timm, torchvision and registered classes -> normkit.nn",
            _convertible,
            _to_normkit,
            "exact",
        ),
        Target(
            "torch",
            "normkit.nn norm layers -> the classes they were converted from, or torch.nn's",
            lambda m: (
                _is_normkit(m) and (converters.source_of(m) is not None or norm_kind(m) is not None)
            ),
            _to_torch,
            "exact",
        ),
        Target(
            "sync",
            "BatchNorm1d/2d/3d -> normkit.nn.SyncBatchNorm",
            lambda m: _plain_bn(m) and type(m).__name__ != "SyncBatchNorm",
            _to_sync,
            "exact",
        ),
        Target(
            "frozen",
            "BatchNorm -> normkit.nn.FrozenBatchNorm{1,2,3}d",
            _plain_bn,
            _to_frozen,
            "eval",
        ),
        Target(
            "renorm", "BatchNorm -> normkit.nn.BatchRenorm{1,2,3}d", _plain_bn, _to_renorm, "eval"
        ),
        Target(
            "ghost", "BatchNorm -> normkit.nn.GhostBatchNorm{1,2}d", _plain_bn, _to_ghost, "eval"
        ),
        Target(
            "group", "BatchNorm -> normkit.nn.GroupNorm(gcd(C, 32), C)", _plain_bn, _to_group, "no"
        ),
        Target(
            "batchnorm",
            "normkit BN variants (frozen, renorm, ghost, sync, act) -> normkit BatchNorm",
            lambda m: (
                (is_frozen_batch_norm(m) or is_batch_norm(m)) and type(m).__name__ not in _PLAIN_BN
            ),
            _to_batchnorm,
            "eval",
        ),
        Target(
            "original",
            "undo a lossy conversion (frozen, group, renorm, ghost, sync)",
            lambda m: getattr(m, ORIGIN_ATTR, None) is not None,
            _to_original,
            "exact",
        ),
    )
}


def convert_targets() -> dict[str, str]:
    """``{target: description}`` of the conversion targets."""
    return {name: t.description for name, t in TARGETS.items()}


def convert(
    model: nn.Module,
    to: str,
    *,
    inplace: bool = False,
    include: Callable[[str, nn.Module], bool] | None = None,
    return_report: bool = False,
    quiet: bool = False,
    fuse: bool = True,
    **options: Any,
) -> nn.Module | tuple[nn.Module, ConvertReport]:
    """Replace the normalization layers of ``model`` by those of target ``to``.

    Args:
        model: any module (nested modules, Sequential, ModuleList, ModuleDict; the model
            itself may be a norm layer).
        to: a key of :data:`TARGETS`: ``"normkit"``, ``"torch"``, ``"sync"``, ``"frozen"``,
            ``"renorm"``, ``"ghost"``, ``"group"``, ``"batchnorm"``, ``"original"``.
        inplace: convert ``model`` itself instead of a deep copy. Default: False
        include: ``include(name, module) -> bool`` restricts the conversion to some layers.
        return_report: also return a :class:`ConvertReport`. Default: False
        quiet: no :class:`ConversionWarning` for the layers ``"normkit"`` left as they are
            (the report lists them either way). Default: False
        fuse: with ``"normkit"``, also fuse each BatchNorm with the activation module that
            alone consumes its output (:mod:`normkit.tools.fuse`), and inside blocks'
            forwards BatchNorm -> residual add -> ReLU and BatchNorm -> shared or functional
            activation (:mod:`normkit.tools.fuse_blocks`); exact, same state dict and
            classes for ``isinstance``; ``"torch"`` undoes it. Default: True
        **options: target options: ``num_groups`` (int or ``f(C)``, group), ``rmax``,
            ``dmax``, ``warmup_steps`` (renorm), ``virtual_batch_size`` (ghost),
            ``process_group`` (sync), ``dim`` (rank for SyncBatchNorm sources).

    Returns:
        The converted model (the root itself is replaced when it is a norm layer), and the
        report when ``return_report``.

    Raises:
        ConversionError: unknown target, or a layer the target takes but cannot convert
            (e.g. ``track_running_stats=False`` to frozen); nothing is changed then.

    Examples::

        >>> import torch, normkit as nk
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
        >>> ours, report = nk.tools.convert(net, "normkit", return_report=True)
        >>> type(ours[1]).__module__, len(report)
        ('normkit.nn.batchnorm', 1)
    """
    if to not in TARGETS:
        raise ConversionError(
            f"unknown conversion target {to!r}; expected one of {sorted(TARGETS)}"
        )
    target = TARGETS[to]
    lazy = [
        name or "<root>"
        for name, m in model.named_modules()
        if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params()
    ]
    if lazy:
        raise ConversionError(
            f"convert(to={to!r}): {', '.join(lazy[:5])} {'is' if len(lazy) == 1 else 'are'} "
            "lazy and not initialized yet: run one forward pass first (a dry run under "
            "torch.no_grad() materializes them)"
        )
    report = ConvertReport(to)
    root = model if inplace else copy.deepcopy(model)
    if to == "torch":
        root = unfuse_blocks(unfuse_markers(root))

    def predicate(name: str, module: nn.Module) -> bool:
        return target.accepts(module) and (include is None or include(name or "", module))

    # Build every replacement first, so a failure leaves the model unchanged.
    built: dict[int, nn.Module] = {}
    dropped: list[str] = []  # layers whose single_sample policy the replacement lacks
    for name, module in root.named_modules():
        if predicate(name, module) and id(module) not in built:
            try:
                new = target.build(module, options)
            except (ConversionError, TypeError, ValueError) as exc:
                raise type(exc)(f"convert(to={to!r}): layer '{name or '<root>'}': {exc}") from exc
            transfer_freeze(module, new)
            built[id(module)] = new
            note = {"exact": "", "eval": "same eval output", "no": "outputs change"}[
                target.preserves
            ]
            carried = carry_single_sample(module, new)
            if carried is not None:
                note = f"{note}; {carried[0]}" if note else carried[0]
                if carried[1]:
                    dropped.append(name or "<root>")
            report.replaced.append(
                Replacement(name, type(module).__name__, type(new).__name__, note)
            )
    root = replace_modules(root, predicate, lambda name, module: built[id(module)])
    if to == "normkit":
        if fuse:
            policies = {n: policy_of(m) for n, m in root.named_modules()}
            root, report.fused = fuse_activations(root, include)
            _carry_into_fused(root, report, policies)
            fused, report.not_fused = fuse_blocks(root, include)
            report.fused += fused
        _report_left(root, report, include)
        if report.skipped and not quiet:
            warnings.warn(report.left_summary(), ConversionWarning, stacklevel=2)
    if dropped and not quiet:
        warnings.warn(
            f"convert(to={to!r}): the single_sample policy of {len(dropped)} layer(s) "
            f"({', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''}) was dropped: "
            "their replacements have no such option and raise on a training batch with one "
            "value per channel",
            ConversionWarning,
            stacklevel=2,
        )
    return (root, report) if return_report else root


def _carry_into_fused(root: nn.Module, report: ConvertReport, policies: dict[str, str]) -> None:
    """A fused BatchNormAct keeps the single_sample policy of the BatchNorm it replaced
    (``policies``: each module's before fusing; ``fuse_activations`` builds the fused layer
    from the constructor arguments torch's BatchNorm has)."""
    modules = dict(root.named_modules())
    for pair in report.fused:
        if policies.get(pair.norm, "error") != "error":
            modules[pair.norm].single_sample = policies[pair.norm]


def _report_left(root: nn.Module, report: ConvertReport, include) -> None:
    """Every normalization-like layer the conversion left, with the reason (never silent)."""
    for name, module in root.named_modules():
        if include is not None and not include(name or "", module):
            continue
        reason = converters.reason_not_converted(module)
        if reason is not None:
            report.skipped.append(Replacement(name, type(module).__name__, "", reason))
