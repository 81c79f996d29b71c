"""``nk.tools.fuse_model``: the exact fusions of ``convert(model, "normkit")`` (its default
``fuse=True``) applied on their own to a model whose BatchNorm layers are already normkit's
(built with :mod:`normkit.nn`, or converted with ``fuse=False``)::

    model = nk.tools.fuse_model(model)              # FusionError if nothing fuses
    model, report = nk.tools.fuse_model(model, return_report=True)
    print(report)                                   # what fused, what did not and why

Two rewrites, both exact and keeping every state-dict key:

- BatchNorm -> activation module used only there: both modules become one
  :class:`~normkit.nn.BatchNormAct2d` (:mod:`normkit.tools.fuse`);
- inside a block's forward, ``act(bn(x) + residual)`` (ResNet BasicBlock/Bottleneck) and
  ``act(bn(x))`` with a shared or functional activation: one fused call each
  (:mod:`normkit.tools.fuse_blocks`).

A model where nothing fuses raises :class:`FusionError` naming why; blocks that call a
BatchNorm followed by an add or an activation but could not be fused are listed in the
report and, unless ``quiet``, in a :class:`FusionWarning`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from normkit.tools._report import text_table
from normkit.tools._walk import is_batch_norm
from normkit.tools.fuse import FusedPair, fuse_activations
from normkit.tools.fuse_blocks import FusionWarning, NotFused, fuse_blocks, is_fused_block


class FusionError(ValueError):
    """Nothing in the model could be fused."""


@dataclass
class FusionReport:
    """What :func:`fuse_model` fused and which blocks it could not fuse."""

    fused: list[FusedPair] = field(default_factory=list)
    not_fused: list[NotFused] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.fused)

    def __str__(self) -> str:
        head = f"fuse_model: {len(self.fused)} site(s) fused, {len(self.not_fused)} block(s) not"
        rows = [
            (p.norm, "residual" if p.residual else "", p.activation or "-", p.act)
            for p in self.fused
        ]
        rows += [(b.block or "(root)", b.cls, "(not fused)", b.reason) for b in self.not_fused]
        if not rows:
            return head
        return head + "\n" + text_table(["batch norm / block", "add", "activation", "act"], rows)


def _describe_nothing(model: nn.Module, not_fused: list[NotFused]) -> str:
    name = type(model).__name__
    if not_fused:
        return f"{name}: nothing fused; " + "; ".join(
            f"{b.block or '(root)'} ({b.cls}): {b.reason}" for b in not_fused
        )
    norms = [m for m in model.modules() if is_batch_norm(m)]
    torch_norms = [m for m in norms if type(m).__module__.startswith("torch.")]
    if torch_norms:
        return (
            f"{name}: nothing fused; its {len(torch_norms)} BatchNorm layer(s) are torch.nn's: "
            'nk.tools.convert(model, "normkit") converts and fuses them'
        )
    done = sum(1 for m in model.modules() if is_fused_block(m))
    done += sum(1 for m in model.modules() if type(m).__name__ == "FusedActivation")
    if done:
        return f"{name}: nothing left to fuse ({done} module(s) fused already)"
    if not norms:
        return f"{name}: nothing fused; it has no BatchNorm layer"
    return (
        f"{name}: nothing fused; none of its {len(norms)} BatchNorm layer(s) is followed by an "
        "activation or a residual add that fuses exactly"
    )


def fuse_model(
    model: nn.Module,
    *,
    include: Callable[[str, nn.Module], bool] | None = None,
    inplace: bool = False,
    return_report: bool = False,
    quiet: bool = False,
) -> nn.Module | tuple[nn.Module, FusionReport]:
    """Fuse ``model``'s BatchNorm -> activation and BatchNorm -> residual add -> ReLU sites.

    Args:
        model: a model with normkit BatchNorm layers.
        include: ``include(qualified_name, module) -> bool``; a site fuses only if it accepts
            its BatchNorm and its activation module. Default: every site
        inplace: rewrite ``model`` itself instead of a deep copy. Default: False
        return_report: also return the :class:`FusionReport`. Default: False
        quiet: no :class:`FusionWarning` for blocks that could not be fused. Default: False

    Raises:
        FusionError: nothing fused (the message says why: torch.nn layers, nothing
            fusable, or each block's reason).
    """
    root = model if inplace else copy.deepcopy(model)
    root, fused = fuse_activations(root, include)
    in_blocks, not_fused = fuse_blocks(root, include)
    report = FusionReport(fused + in_blocks, not_fused)
    if not report.fused:
        raise FusionError(_describe_nothing(root, not_fused))
    if not_fused and not quiet:
        warnings.warn(
            f"{type(model).__name__}: {len(not_fused)} block(s) not fused: "
            + "; ".join(f"{b.block or '(root)'}: {b.reason}" for b in not_fused),
            FusionWarning,
            stacklevel=2,
        )
    return (root, report) if return_report else root
