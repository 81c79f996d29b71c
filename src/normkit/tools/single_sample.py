"""The batch-of-1 policy across a model: :func:`set_single_sample_policy`, and how
``nk.tools.convert`` carries a layer's ``single_sample`` to its replacement.

``single_sample`` (see :mod:`normkit.functional.single_sample`) is normkit's: torch's layers
have no such option and always raise on a training batch with one value per channel, so a
conversion to torch drops it (the convert report and a warning say so).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from normkit.functional import single_sample as one
from normkit.nn._single_sample import SingleSamplePolicy
from normkit.tools._walk import is_batch_norm, layer_label


class SingleSamplePolicyError(ValueError):
    """:func:`set_single_sample_policy` cannot give the policy to some layers of the model."""


def policy_of(module: nn.Module) -> str:
    """The layer's ``single_sample``; ``"error"`` for every layer without the option
    (torch's, timm's): they raise on a training batch with one value per channel."""
    return module._single_sample if isinstance(module, SingleSamplePolicy) else one.DEFAULT


def set_single_sample_policy(
    model: nn.Module,
    policy: str,
    *,
    include: Callable[[str, nn.Module], bool] | None = None,
) -> list[str]:
    """Give every normkit BatchNorm-family layer of ``model`` the ``single_sample`` policy
    (``"error"``, ``"running_stats"`` or ``"skip_update"``), in place.

    The layers are normkit's ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, ``BatchRenorm*``,
    ``GhostBatchNorm*``, ``BatchNormAct*`` and lazy BatchNorms. All or nothing: the model
    is left unchanged, with an error naming the layers, when a selected BatchNorm cannot
    take the policy: torch's or another library's BatchNorm (no such option; run
    ``nk.tools.convert(model, "normkit")`` first, or leave it out with ``include``), or
    ``"running_stats"`` for a layer with ``track_running_stats=False``.

    Args:
        model: any module (the model itself may be the layer).
        policy: the policy for each layer.
        include: ``include(name, module) -> bool`` restricts the change to some layers.

    Returns:
        The qualified names of the layers given the policy (``""`` for the model itself).

    Examples::

        >>> import torch, normkit as nk
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), nk.nn.BatchNorm1d(8))
        >>> nk.tools.set_single_sample_policy(model, "running_stats")
        ['1']
        >>> model.train()(torch.randn(1, 4)).shape   # a batch of one: eval-mode output
        torch.Size([1, 8])
    """
    one.check_policy(policy, "set_single_sample_policy")
    chosen, foreign, no_stats = [], [], []
    for name, module in model.named_modules():
        if include is not None and not include(name, module):
            continue
        if isinstance(module, SingleSamplePolicy):
            if policy == "running_stats" and not module.track_running_stats:
                no_stats.append(layer_label(name, module))
            else:
                chosen.append((name, module))
        elif is_batch_norm(module):
            foreign.append(layer_label(name, module))
    problems = []
    if foreign:
        problems.append(
            f"{', '.join(foreign)}: not normkit's, no single_sample option (torch's layers "
            "always raise): nk.tools.convert(model, 'normkit') first, or leave them out "
            "with include="
        )
    if no_stats:
        problems.append(
            f"{', '.join(no_stats)}: track_running_stats=False, no running statistics for "
            "'running_stats' to normalize with: give them 'skip_update' or leave them out "
            "with include="
        )
    if problems:
        raise SingleSamplePolicyError(
            f"set_single_sample_policy({policy!r}): nothing changed: " + "; ".join(problems)
        )
    for _, module in chosen:
        module.single_sample = policy
    return [name for name, _ in chosen]


def carry_single_sample(old: nn.Module, new: nn.Module) -> tuple[str, bool] | None:
    """Give ``new`` (a conversion's replacement of ``old``) ``old``'s ``single_sample``.

    Returns None when carried (or ``old`` has the default), else ``(note, dropped)``:
    ``dropped`` when ``new`` is a BatchNorm that trains with batch statistics and has no
    such option (it raises where ``old`` did not); a layer without batch statistics
    (FrozenBatchNorm, GroupNorm) needs none."""
    policy = policy_of(old)
    if policy == one.DEFAULT:
        return None
    if isinstance(new, SingleSamplePolicy) and (
        policy != "running_stats" or new.track_running_stats
    ):
        new.single_sample = policy
        return None
    cls = type(new).__name__
    if is_batch_norm(new):
        return f"single_sample={policy!r} dropped ({cls} has no such option)", True
    return f"single_sample={policy!r} not needed ({cls} has no batch statistics)", False
