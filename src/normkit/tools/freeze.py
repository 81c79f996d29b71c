"""Fine-tuning with frozen normalization: BatchNorm statistics fixed (eval-mode behaviour
while the rest of the model trains) and/or affine parameters fixed (no gradients).

    nk.tools.freeze(model)            # BN: running statistics used, never updated; gamma/beta fixed
    model.train()                     # the frozen BNs stay in eval mode
    ...
    nk.tools.unfreeze(model)          # exactly as before freeze (flags, requires_grad)

    with nk.tools.frozen(model, affine=False):   # statistics frozen inside the block only
        ...

How it survives ``model.train()``: a frozen layer gets an instance-level ``train`` that
records the mode asked for and keeps the layer in eval. :func:`unfreeze` removes it, puts
back the mode last asked for (or the one before freezing) and the parameters'
``requires_grad`` flags: ``unfreeze(freeze(m))`` leaves ``m`` as it was. The state_dict is
never changed; the frozen state survives ``copy.deepcopy`` and pickling (``torch.save``).
Frozen parameters get no gradient, so optimizers leave them alone (their ``grad`` is None).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

from torch import nn

from normkit.tools._walk import has_running_stats, norm_kind

FREEZE_ATTR = "_normkit_freeze"


def _frozen_train(module: nn.Module, mode: bool = True) -> nn.Module:
    getattr(module, FREEZE_ATTR)["requested_training"] = bool(mode)
    nn.Module.train(module, False)
    return module


def _freeze_layer(module: nn.Module, stats: bool, affine: bool) -> None:
    record = {
        "stats": stats,
        "affine": affine,
        "requested_training": module.training,
        "requires_grad": {},
    }
    if affine:
        for name, param in module.named_parameters(recurse=False):
            record["requires_grad"][name] = param.requires_grad
            param.requires_grad_(False)
    setattr(module, FREEZE_ATTR, record)
    if stats:
        module.train = functools.partial(_frozen_train, module)
        nn.Module.train(module, False)


def _unfreeze_layer(module: nn.Module) -> None:
    record = module.__dict__.pop(FREEZE_ATTR)
    for name, requires_grad in record["requires_grad"].items():
        getattr(module, name).requires_grad_(requires_grad)
    if record["stats"]:
        module.__dict__.pop("train", None)
        nn.Module.train(module, record["requested_training"])


def transfer_freeze(old: nn.Module, new: nn.Module) -> None:
    """Carry :func:`freeze`'s state from a layer to its replacement (used by convert)."""
    record = old.__dict__.get(FREEZE_ATTR)
    if record is None:
        return
    record = {**record, "requires_grad": dict(record["requires_grad"])}
    for name in list(record["requires_grad"]):
        param = new._parameters.get(name)
        if param is None:
            record["requires_grad"].pop(name)
        else:
            param.requires_grad_(False)
    setattr(new, FREEZE_ATTR, record)
    if record["stats"] and not has_running_stats(new):  # nothing to keep in eval any more
        record["stats"] = False
        nn.Module.train(new, record["requested_training"])
    if record["stats"]:
        new.train = functools.partial(_frozen_train, new)
        nn.Module.train(new, False)


def is_frozen(module: nn.Module) -> dict[str, bool] | None:
    """``{"stats": ..., "affine": ...}`` for a layer frozen by :func:`freeze`, else None."""
    record = module.__dict__.get(FREEZE_ATTR)
    return None if record is None else {"stats": record["stats"], "affine": record["affine"]}


def freeze(
    model: nn.Module,
    stats: bool = True,
    affine: bool = True,
    *,
    kinds: tuple[str, ...] = ("batch",),
    include: Callable[[str, nn.Module], bool] | None = None,
) -> nn.Module:
    """Freeze the normalization layers of ``model`` in place; returns ``model``.

    Args:
        model: any module (torch.nn and normkit.nn norm layers).
        stats: keep BatchNorm layers in eval mode, whatever ``model.train()`` says: they
            normalize with their running statistics and never update them (only layers with
            running statistics). Default: True
        affine: stop gradients to gamma/beta (``requires_grad=False``). Default: True
        kinds: which norm kinds (see :func:`normkit.tools.norm_kind`: ``"batch"``,
            ``"layer"``, ``"group"``, ``"instance"``, ``"rms"``) are frozen; only the affine
            part applies to kinds without running statistics. Default: ("batch",)
        include: ``include(name, layer) -> bool`` limits the layers (e.g. the backbone).

    Freezing a frozen layer again replaces its flags (the state before the first freeze is
    kept for :func:`unfreeze`).

    Examples::

        >>> import torch, normkit as nk
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), nk.nn.BatchNorm1d(4))
        >>> _ = nk.tools.freeze(net).train()
        >>> net[1].training, net[1].weight.requires_grad, net[0].training
        (False, False, True)
        >>> _ = nk.tools.unfreeze(net)
        >>> net[1].training, net[1].weight.requires_grad
        (True, True)
    """
    if not (stats or affine):
        raise ValueError("freeze: nothing to freeze (stats=False and affine=False)")
    for name, module in model.named_modules():
        kind = norm_kind(module)
        if kind is None or kind not in kinds or (include is not None and not include(name, module)):
            continue
        layer_stats = stats and kind == "batch" and has_running_stats(module)
        if not (layer_stats or (affine and any(True for _ in module.parameters(recurse=False)))):
            continue
        if FREEZE_ATTR in module.__dict__:
            _unfreeze_layer(module)
        _freeze_layer(module, layer_stats, affine)
    return model


def unfreeze(
    model: nn.Module, *, include: Callable[[str, nn.Module], bool] | None = None
) -> nn.Module:
    """Undo :func:`freeze` exactly: ``requires_grad`` flags as before, the train/eval mode last
    asked for (by ``model.train()``/``eval()`` while frozen, else the one before freezing).
    Layers that are not frozen are left alone. Returns ``model``."""
    for name, module in model.named_modules():
        if FREEZE_ATTR in module.__dict__ and (include is None or include(name, module)):
            _unfreeze_layer(module)
    return model


@contextlib.contextmanager
def frozen(
    model: nn.Module, stats: bool = True, affine: bool = True, **kwargs
) -> Iterator[nn.Module]:
    """Freeze inside a ``with`` block, unfreeze on the way out (also on errors). Layers
    frozen before the block are left as they are."""
    already = {id(m) for m in model.modules() if FREEZE_ATTR in m.__dict__}
    user_include = kwargs.pop("include", None)

    def include(name: str, module: nn.Module) -> bool:
        return id(module) not in already and (user_include is None or user_include(name, module))

    freeze(model, stats, affine, include=include, **kwargs)
    try:
        yield model
    finally:
        unfreeze(model, include=lambda name, m: id(m) not in already)
