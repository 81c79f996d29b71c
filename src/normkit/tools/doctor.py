"""Find the classic normalization mistakes in a model and say how to fix each.

    findings = nk.tools.doctor(model, example_batch)
    print(findings)                    # a table: severity, layer, problem, evidence, fix
    findings.errors, findings.warnings, [f.code for f in findings]

Checks (``CHECKS``; each finding has a ``code``, a ``severity`` of ``"error"``,
``"warning"`` or ``"info"``, the ``layer``, the ``evidence`` and the ``fix``):

==========================  ==================================================================
code                        what
==========================  ==================================================================
``bias-before-bn``          Conv/Linear with a bias feeding a BatchNorm (the BN removes it)
``train-mode``              model in training mode (at inference BN would use batch stats)
``bn-training-in-eval``     a BN left in training mode inside an eval-mode model
``small-batch``             too few samples / values per channel in the example batch
``single-sample``           a loader batch of 1 sample gives a BN one value per channel
``never-trained``           running statistics never updated (still mean 0, var 1)
``keras-momentum``          momentum >= 0.5: Keras's decay (0.99) copied into torch's factor
``nonfinite-stats``         NaN/Inf or negative running statistics
``train-eval-gap``          train-mode and eval-mode outputs differ on the example batch
``stats-mismatch``          a BN's running statistics do not fit its input on the example
``dropout-before-bn``       Dropout feeding a BatchNorm (variance shift between train/eval)
``group-norm-groups``       GroupNorm with more groups than channels per group (< 4 each)
``batch-stats-in-eval``     BN with track_running_stats=False: eval output depends on the batch
``eps-below-dtype``         eps smaller than the layer dtype's smallest normal number
``no-norm-layers``          no normalization layer at all
==========================  ==================================================================

``single-sample`` needs the ``loader`` (its sizes: ``len(sampler)``, ``batch_size``,
``drop_last``; it is never iterated) and the example batch (which layers see one value per
channel per sample); without a loader nothing is guessed.

The example batch is used read-only: the train-mode measurement runs on a deep copy in
which only the BatchNorm layers are in training mode (Dropout off), so the gap measures
the normalization alone. Thresholds are arguments of :func:`doctor`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from normkit.functional.single_sample import SingleSampleWarning
from normkit.tools._graph import ModuleGraph, module_graph
from normkit.tools._inputs import make_inputs, run_model
from normkit.tools._report import rich_table, text_table, use_rich
from normkit.tools._walk import (
    first_input,
    has_running_stats,
    is_batch_norm,
    iter_norm_layers,
    norm_kind,
)
from normkit.tools.freeze import is_frozen
from normkit.tools.single_sample import policy_of

SEVERITIES = ("error", "warning", "info")


@dataclass
class Finding:
    """One problem: where (``layer``), how bad, what was seen (``evidence``), what to do.

    A problem found in several layers is one finding: ``layers`` lists them all (with
    ``details``, each layer's own evidence), ``layer`` says how many and names the first few,
    ``evidence`` is the first layer's.
    """

    code: str
    severity: str
    layer: str
    evidence: str
    fix: str
    layers: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"[{self.severity}] {self.layer}: {self.code}: {self.evidence} Fix: {self.fix}"


_NAMED = 4  # layers named in a grouped finding's title


def group_findings(findings: list[Finding]) -> list[Finding]:
    """Merge the findings of one check and severity found in several layers into one (in
    the order of the first occurrence); each layer's evidence, and its fix where the fixes
    differ, stays in ``details``."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.code, f.severity), []).append(f)
    merged = []
    for items in groups.values():
        first = items[0]
        if len(items) == 1:
            first.layers = first.layers or [first.layer]
            first.details = first.details or [first.evidence]
            merged.append(first)
            continue
        names = [f.layer for f in items]
        same_fix = all(f.fix == first.fix for f in items)
        details = [f.evidence if same_fix else f"{f.evidence} (fix: {f.fix})" for f in items]
        shown = ", ".join(names[:_NAMED])
        if len(names) > _NAMED:
            shown += f", ... ({len(names) - _NAMED} more)"
        merged.append(
            Finding(
                first.code,
                first.severity,
                f"{len(names)} layers: {shown}",
                f"{first.evidence} (first of {len(names)} layers; each layer's in .details)",
                first.fix if same_fix else f"{first.fix} (for the first; each layer's in .details)",
                names,
                details,
            )
        )
    return merged


class Findings(list):
    """The list of :class:`Finding` returned by :func:`doctor`, most severe first; printable."""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self if f.severity == "warning"]

    def codes(self) -> list[str]:
        return [f.code for f in self]

    def to_dicts(self) -> list[dict[str, str]]:
        return [asdict(f) for f in self]

    def _cells(self):
        return [(f.severity, f.layer, f.code, f.evidence, f.fix) for f in self]

    _HEAD = ("severity", "layer", "problem", "evidence", "fix")

    def __str__(self) -> str:
        if not self:
            return "doctor: no normalization problem found"
        head = (
            f"doctor: {len(self.errors)} error(s), {len(self.warnings)} warning(s), "
            f"{len(self) - len(self.errors) - len(self.warnings)} note(s)"
        )
        return (
            head
            + "\n\n"
            + "\n\n".join(
                f"{i}. [{f.severity}] {f.layer}: {f.code}\n   evidence: {f.evidence}\n   fix: {f.fix}"
                for i, f in enumerate(self, 1)
            )
        )

    def table(self) -> str:
        return text_table(self._HEAD, self._cells())

    def __rich__(self):
        if not self:
            return str(self)
        return rich_table("normkit doctor", self._HEAD, self._cells())

    def show(self, file=None) -> None:
        if use_rich(file):
            from rich.console import Console

            Console(file=file).print(self)
        else:
            print(self, file=file)


@dataclass
class Context:
    """What the checks read: the model, its modules, the data-flow graph, and (with an
    example batch) per-BN input statistics measured in train mode and the two outputs."""

    model: nn.Module
    modules: dict[str, nn.Module]
    graph: ModuleGraph
    options: dict[str, float]
    example: tuple[tuple, dict] | None = None
    batch_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # N, values/channel
    batch_stats: dict[str, tuple[int, int, Tensor, Tensor]] = field(default_factory=dict)
    running: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    gap: float | None = None
    train_error: str | None = None
    loader: LoaderSizes | None = None

    def example_batch_size(self) -> int | None:
        """The example's batch size (its first tensor's dim 0)."""
        if self.example is None:
            return None
        args, kwargs = self.example
        tensors = _flat_tensors([*args, *kwargs.values()])
        return int(tensors[0].shape[0]) if tensors and tensors[0].dim() > 0 else None

    def values_per_sample(self, name: str) -> int | None:
        """Values per channel a BN gets per sample of the model's input: its count on the
        example divided by the example's batch size (None when it does not divide)."""
        batch, size = self.example_batch_size(), self.batch_sizes.get(name)
        if not batch or size is None or size[1] % batch:
            return None
        return size[1] // batch

    def label(self, name: str) -> str:
        return f"{name or '<root>'} ({type(self.modules[name]).__name__})"

    def batch_norms(self) -> Iterator[tuple[str, nn.Module]]:
        for name, module in self.modules.items():
            if is_batch_norm(module):
                yield name, module


@dataclass(frozen=True)
class LoaderSizes:
    """A DataLoader's epoch: ``samples`` in ``batches`` of ``batch_size``, the last one of
    ``last`` samples (``drop_last`` drops a short one); ``known=False`` when the loader does
    not tell (an IterableDataset, a custom ``batch_sampler``, no automatic batching)."""

    known: bool
    samples: int = 0
    batch_size: int = 0
    last: int = 0
    drop_last: bool = False

    def describe(self) -> str:
        return f"{self.samples} samples, batch_size={self.batch_size}, drop_last={self.drop_last}"


def loader_sizes(loader: Any) -> LoaderSizes:
    """The batch sizes a map-style ``torch.utils.data.DataLoader`` (or any object with a
    ``batch_sampler`` holding ``batch_size``, ``drop_last`` and a sized ``sampler``) gives
    in one epoch, read from its attributes: the loader is not iterated."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    batch_size = getattr(batch_sampler, "batch_size", None)
    sampler = getattr(batch_sampler, "sampler", None)
    if not isinstance(batch_size, int) or batch_size < 1 or sampler is None:
        return LoaderSizes(False)
    try:
        samples = len(sampler)
    except TypeError:
        return LoaderSizes(False)
    drop_last = bool(getattr(batch_sampler, "drop_last", False))
    rest = samples % batch_size
    last = batch_size if rest == 0 or drop_last else rest
    return LoaderSizes(True, samples, batch_size, last, drop_last)


Check = Callable[[Context], Iterator[Finding]]
CHECKS: dict[str, Check] = {}


def check(code: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[code] = fn
        return fn

    return register


# ----------------------------------------------------------------------------- checks


@check("bias-before-bn")
def _bias_before_bn(ctx: Context) -> Iterator[Finding]:
    for edge in ctx.graph.edges:
        layer, bn = ctx.modules.get(edge.producer), ctx.modules.get(edge.consumer)
        if not (isinstance(layer, (_ConvNd, nn.Linear)) and bn is not None and is_batch_norm(bn)):
            continue
        if getattr(layer, "bias", None) is None or len(edge.producer_users) > 1:
            continue
        yield Finding(
            "bias-before-bn",
            "warning",
            ctx.label(edge.producer),
            f"its bias ({layer.bias.numel()} values) feeds {ctx.label(edge.consumer)}, which "
            "subtracts the per-channel mean: the bias cancels out, and its gradient is zero",
            f"build {type(layer).__name__}(..., bias=False); the BatchNorm's beta is the bias",
        )


@check("train-mode")
def _train_mode(ctx: Context) -> Iterator[Finding]:
    bns = [n for n, m in ctx.batch_norms() if m.training and not is_frozen(m)]
    if ctx.model.training and bns:
        yield Finding(
            "train-mode",
            "warning",
            "<model>",
            f"the model is in training mode: its {len(bns)} BatchNorm layer(s) normalize each "
            "batch with that batch's statistics and update the running statistics on every "
            "call; predictions then depend on the rest of the batch",
            "call model.eval() before inference (and model.train() before training)",
        )


@check("bn-training-in-eval")
def _bn_training_in_eval(ctx: Context) -> Iterator[Finding]:
    if ctx.model.training:
        return
    for name, module in ctx.batch_norms():
        if module.training:
            yield Finding(
                "bn-training-in-eval",
                "warning",
                ctx.label(name),
                "the model is in eval mode but this BatchNorm is in training mode (a "
                "submodule's .train() was called after model.eval()?)",
                "call model.eval() last; to keep BN in eval while training, use "
                "nk.tools.freeze(model)",
            )


@check("small-batch")
def _small_batch(ctx: Context) -> Iterator[Finding]:
    min_batch = int(ctx.options["min_batch"])
    min_values = int(ctx.options["min_values_per_channel"])
    for name, (batch, values) in ctx.batch_sizes.items():
        fix = (
            "use larger batches if this is your training batch size; otherwise "
            "nk.tools.convert(model, 'group') (GroupNorm, batch-independent) or 'renorm' "
            "(BatchRenorm)"
        )
        policy = policy_of(ctx.modules[name])
        if values <= 1 and policy != "error":
            severity = "warning"
            why = (
                f"with single_sample={policy!r} such a training batch does not fail, but it "
                "updates no running statistics: a model trained only on such batches never "
                "learns them"
            )
        elif values <= 1:
            severity, why = "error", "training fails (torch needs more than 1 value per channel)"
            fix += (
                "; if only some batches are this small (the last batch of an epoch, a "
                "summary pass): DataLoader(drop_last=True), or single_sample='running_stats' "
                "(nk.tools.set_single_sample_policy(model, 'running_stats') on normkit "
                "layers), see docs/single_sample.md"
            )
        elif batch < min_batch or values < min_values:
            severity = "warning"
            rel = math.sqrt(2 / max(values - 1, 1))
            why = (
                f"the batch statistics are noisy (the variance estimate alone has ~{rel:.0%} "
                "relative error) and samples influence each other's outputs"
            )
        else:
            continue
        yield Finding(
            "small-batch",
            severity,
            ctx.label(name),
            f"the example batch gives {batch} sample(s) and {values} value(s) per channel "
            f"(thresholds: {min_batch} samples, {min_values} values): {why}",
            fix,
        )


@check("single-sample")
def _single_sample(ctx: Context) -> Iterator[Finding]:
    sizes = ctx.loader
    if sizes is None:
        return
    if not sizes.known:
        yield Finding(
            "single-sample",
            "info",
            "<loader>",
            "not measured: the loader does not tell its batch sizes (an IterableDataset, a "
            "custom batch_sampler, or batch_size=None)",
            "check that no training batch has a single sample where a BatchNorm sees one "
            "value per sample (a BatchNorm1d after global pooling or on (N, C) features)",
        )
        return
    every = sizes.batch_size == 1
    if not every and sizes.last != 1:
        return
    which = (
        "every batch of the loader has 1 sample"
        if every
        else "the loader's last batch has 1 sample"
    )
    if ctx.example is None:
        yield Finding(
            "single-sample",
            "info",
            "<loader>",
            f"{which} ({sizes.describe()}); without an example batch doctor cannot tell "
            "which BatchNorm layers then see one value per channel",
            "pass example_batch (a training-size batch) to name the layers",
        )
        return
    for name, module in ctx.batch_norms():
        if is_frozen(module) or policy_of(module) != "error":
            continue
        if ctx.values_per_sample(name) != 1:
            continue
        evidence = (
            f"{which} ({sizes.describe()}), and this layer gets one value per channel per "
            f"sample (on the example, {ctx.batch_sizes[name][1]} values for "
            f'{ctx.example_batch_size()} samples): in training that batch raises "Expected '
            'more than 1 value per channel"'
        )
        if every:
            fix = (
                "BatchNorm learns nothing from one value per channel: use larger batches, or "
                "a batch-independent norm (nk.tools.convert(model, 'group'), LayerNorm)"
            )
        elif not getattr(module, "track_running_stats", True):
            fix = (
                "DataLoader(..., drop_last=True); this layer keeps no running statistics "
                "(track_running_stats=False) for single_sample='running_stats' to use"
            )
        else:
            how = (
                "nk.tools.set_single_sample_policy(model, 'running_stats')"
                if type(module).__module__.startswith("normkit.")
                else "nk.tools.convert(model, 'normkit'), then "
                "nk.tools.set_single_sample_policy(model, 'running_stats')"
            )
            fix = (
                "DataLoader(..., drop_last=True), or let that batch use the running "
                f"statistics: single_sample='running_stats' ({how}; docs/single_sample.md)"
            )
        yield Finding("single-sample", "error", ctx.label(name), evidence, fix)


@check("never-trained")
def _never_trained(ctx: Context) -> Iterator[Finding]:
    for name, module in ctx.batch_norms():
        if not has_running_stats(module):
            continue
        tracked = getattr(module, "num_batches_tracked", None)
        untouched = (
            isinstance(tracked, Tensor)
            and int(tracked) == 0
            and bool((module.running_mean == 0).all())
            and bool((module.running_var == 1).all())
        )
        if untouched:
            yield Finding(
                "never-trained",
                "warning" if not ctx.model.training else "info",
                ctx.label(name),
                "num_batches_tracked is 0 and the running statistics are still mean 0, var 1: "
                "in eval mode this layer does not normalize",
                "train the model, load the checkpoint that has the statistics, or run "
                "nk.tools.recalibrate(model, batches)",
            )


@check("keras-momentum")
def _keras_momentum(ctx: Context) -> Iterator[Finding]:
    limit = ctx.options["max_momentum"]
    for name, module in ctx.batch_norms():
        momentum = getattr(module, "momentum", None)
        if momentum is not None and momentum >= limit:
            yield Finding(
                "keras-momentum",
                "warning",
                ctx.label(name),
                f"momentum={momentum}: torch updates running = {1 - momentum:.3g} * running + "
                f"{momentum} * batch, so the running statistics are mostly the last batch's. "
                f"Keras/TensorFlow's momentum={momentum} is torch's momentum={1 - momentum:.3g}",
                f"use momentum={1 - momentum:.3g} (the Keras equivalent) or torch's default 0.1",
            )


@check("nonfinite-stats")
def _nonfinite(ctx: Context) -> Iterator[Finding]:
    for name, module in ctx.batch_norms():
        if not has_running_stats(module):
            continue
        mean, var = module.running_mean, module.running_var
        bad = (~torch.isfinite(mean)).sum().item() + (~torch.isfinite(var)).sum().item()
        negative = (var < 0).sum().item()
        if bad or negative:
            yield Finding(
                "nonfinite-stats",
                "error",
                ctx.label(name),
                f"{bad} non-finite and {negative} negative running-statistics value(s)",
                "find the NaN/Inf source in training (normkit's layers refuse to update from "
                "such batches), then nk.tools.recalibrate(model, batches)",
            )


@check("train-eval-gap")
def _train_eval_gap(ctx: Context) -> Iterator[Finding]:
    if ctx.train_error is not None:
        yield Finding(
            "train-eval-gap",
            "info",
            "<model>",
            f"not measured: the train-mode forward pass failed ({ctx.train_error})",
            "pass an example batch of training size",
        )
        return
    if ctx.gap is not None and ctx.gap > ctx.options["max_gap"]:
        trained = [
            n
            for n, m in ctx.batch_norms()
            if has_running_stats(m) and int(getattr(m, "num_batches_tracked", 1) or 0) > 0
        ]
        yield Finding(
            "train-eval-gap",
            "warning",
            "<model>",
            f"on the example batch the output with batch statistics (train mode) differs from "
            f"the output with running statistics (eval mode) by {ctx.gap:.1%} (relative); "
            f"threshold {ctx.options['max_gap']:.0%}",
            "recalibrate the running statistics on training-like data "
            "(nk.tools.recalibrate); if the example comes from a new domain, recalibrating on "
            "it is AdaBN; check the preprocessing matches training"
            + ("" if trained else "; the BN layers were never trained"),
        )


@check("stats-mismatch")
def _stats_mismatch(ctx: Context) -> Iterator[Finding]:
    limit = ctx.options["max_mean_shift"]
    for name, (_, values, mean, var) in ctx.batch_stats.items():
        if name not in ctx.running or values < 2:
            continue
        r_mean, r_var = ctx.running[name]
        module = ctx.modules[name]
        tracked = getattr(module, "num_batches_tracked", None)
        if isinstance(tracked, Tensor) and int(tracked) == 0:
            continue  # never-trained says it
        std = (r_var + module.eps).sqrt()
        shift = ((mean - r_mean).abs() / std).max().item()
        ratio = (var + module.eps) / (r_var + module.eps)
        low, high = ratio.min().item(), ratio.max().item()
        if shift > limit or high > limit**2 or low < 1 / limit**2:
            channel = int(((mean - r_mean).abs() / std).argmax())
            yield Finding(
                "stats-mismatch",
                "warning",
                ctx.label(name),
                f"on the example batch the input mean differs from running_mean by up to "
                f"{shift:.2f} running std (channel {channel}); batch var / running var is in "
                f"[{low:.3g}, {high:.3g}]",
                "nk.tools.recalibrate(model, batches) on data like the example; check the "
                "preprocessing (scale, mean) against training",
            )


@check("dropout-before-bn")
def _dropout_before_bn(ctx: Context) -> Iterator[Finding]:
    dropouts = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    for edge in ctx.graph.edges:
        layer, bn = ctx.modules.get(edge.producer), ctx.modules.get(edge.consumer)
        if isinstance(layer, dropouts) and bn is not None and is_batch_norm(bn) and layer.p > 0:
            yield Finding(
                "dropout-before-bn",
                "warning",
                ctx.label(edge.consumer),
                f"its input comes from {ctx.label(edge.producer)} (p={layer.p}): dropout "
                "scales the variance in training but not in eval, so the running variance "
                "does not fit at inference (variance shift, Li et al. 2019)",
                "put Dropout after the last BatchNorm (e.g. only before the classifier)",
            )


def _suggest_groups(channels: int) -> int:
    """The largest divisor G <= 32 of C with at least 8 channels per group (else 1)."""
    return max((g for g in range(1, 33) if channels % g == 0 and channels // g >= 8), default=1)


@check("group-norm-groups")
def _group_norm_groups(ctx: Context) -> Iterator[Finding]:
    for name, module in ctx.modules.items():
        if norm_kind(module) != "group":
            continue
        groups, channels = module.num_groups, module.num_channels
        per_group = channels // groups
        if per_group == 1 and channels > 1:
            severity, what = "warning", "one channel per group: this is InstanceNorm"
        elif groups > per_group and per_group < 4:
            severity, what = "info", f"{per_group} channels per group"
        else:
            continue
        yield Finding(
            "group-norm-groups",
            severity,
            ctx.label(name),
            f"GroupNorm({groups}, {channels}): num_groups ({groups}) is larger than the "
            f"channels per group ({per_group}); {what}, so each group's statistics mix few "
            "channels",
            f"use fewer groups, e.g. GroupNorm({_suggest_groups(channels)}, {channels}) "
            "(<= 32 groups of >= 8 channels where possible), or InstanceNorm if intended",
        )


@check("batch-stats-in-eval")
def _batch_stats_in_eval(ctx: Context) -> Iterator[Finding]:
    for name, module in ctx.batch_norms():
        if not getattr(module, "track_running_stats", True):
            alone = ""
            if ctx.values_per_sample(name) == 1 and policy_of(module) == "error":
                alone = (
                    "; it gets one value per channel per sample, so a batch of one sample "
                    "raises even in eval mode (single_sample='skip_update' would output beta)"
                )
            yield Finding(
                "batch-stats-in-eval",
                "info",
                ctx.label(name),
                "track_running_stats=False: this BatchNorm uses batch statistics in eval mode "
                f"too, so an eval output depends on the other samples of its batch{alone}",
                "keep it only if intended (e.g. test-time adaptation); otherwise "
                "track_running_stats=True and nk.tools.recalibrate(model, batches)",
            )


@check("eps-below-dtype")
def _eps_below_dtype(ctx: Context) -> Iterator[Finding]:
    for name, module in iter_norm_layers(ctx.model):
        eps = getattr(module, "eps", None)
        tensor = next(
            iter([*module.parameters(recurse=False), *module.buffers(recurse=False)]), None
        )
        if eps is None or tensor is None or not tensor.is_floating_point():
            continue
        tiny = torch.finfo(tensor.dtype).tiny
        if 0 < eps < tiny:
            yield Finding(
                "eps-below-dtype",
                "info",
                ctx.label(name),
                f"eps={eps:g} is below {tensor.dtype}'s smallest normal number ({tiny:.2g}) "
                "and is lost (or subnormal) when added to a small variance",
                f"use eps >= {tiny:.1g} for {tensor.dtype}, or compute the norm in float32",
            )


@check("no-norm-layers")
def _no_norms(ctx: Context) -> Iterator[Finding]:
    if not any(True for _ in iter_norm_layers(ctx.model)):
        yield Finding(
            "no-norm-layers",
            "info",
            "<model>",
            "no normalization layer (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm) "
            "was found",
            "nothing to check; normalization layers are recognized from torch.nn and normkit.nn",
        )


# ------------------------------------------------------------------------- measuring


def _flat_tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat_tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flat_tensors(v)]
    return []


def _measure(ctx: Context) -> None:
    """Eval-mode and BN-train-mode outputs on the example (on deep copies), per-BN input
    statistics in train mode and the running statistics they are compared with."""
    eval_model = copy.deepcopy(ctx.model)
    train_model = copy.deepcopy(ctx.model)
    for m in eval_model.modules():
        m.training = False
    names = {}
    for name, m in train_model.named_modules():
        m.training = is_batch_norm(m)
        names[id(m)] = name
    handles = []

    def size_hook(module, args, kwargs):
        x = first_input(args, kwargs)
        name = names[id(module)]
        if x is not None and x.dim() >= 2 and name not in ctx.batch_sizes:
            ctx.batch_sizes[name] = (x.shape[0], x.shape[0] * math.prod(x.shape[2:]))

    def hook(module, args, kwargs):
        x = first_input(args, kwargs)
        if x is None or x.dim() < 2:
            return
        name = names[id(module)]
        if name in ctx.batch_stats:
            return
        flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
        var, mean = torch.var_mean(flat, dim=1, correction=0)
        ctx.batch_stats[name] = (x.shape[0], flat.shape[1], mean, var)
        if has_running_stats(module):
            ctx.running[name] = (
                module.running_mean.detach().double().clone(),
                module.running_var.detach().double().clone(),
            )

    for name, m in eval_model.named_modules():
        if is_batch_norm(m):
            names[id(m)] = name
            handles.append(m.register_forward_pre_hook(size_hook, with_kwargs=True))
    for m in train_model.modules():
        if is_batch_norm(m):
            handles.append(m.register_forward_pre_hook(hook, with_kwargs=True))
    with torch.no_grad():
        try:
            y_eval = _flat_tensors(run_model(eval_model, ctx.example))
        except Exception as exc:
            raise ValueError(
                f"doctor: the model fails on the example batch in eval mode: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        try:
            with warnings.catch_warnings():  # a layer's skip_update policy: its own concern
                warnings.simplefilter("ignore", SingleSampleWarning)
                y_train = _flat_tensors(run_model(train_model, ctx.example))
        except Exception as exc:  # e.g. one value per channel
            ctx.train_error = f"{type(exc).__name__}: {exc}"
            return
        finally:
            for h in handles:
                h.remove()
    num = sum(((a.double() - b.double()) ** 2).sum() for a, b in zip(y_train, y_eval, strict=False))
    den = sum((b.double() ** 2).sum() for b in y_eval)
    if y_eval and float(den) > 0:
        ctx.gap = math.sqrt(float(num) / float(den))


def doctor(
    model: nn.Module,
    example_batch: Any = None,
    *,
    loader: Any = None,
    checks: list[str] | None = None,
    max_gap: float = 0.1,
    max_mean_shift: float = 3.0,
    min_batch: int = 8,
    min_values_per_channel: int = 32,
    max_momentum: float = 0.5,
) -> Findings:
    """Diagnose the normalization layers of ``model``.

    Args:
        model: any module (torch.nn and normkit.nn layers); never modified.
        example_batch: a representative batch (tensor, tuple of inputs, dict of keyword
            inputs, or an input size such as ``(32, 3, 32, 32)``); without it the checks
            that need data (small-batch, single-sample, train-eval-gap, stats-mismatch)
            are skipped.
        loader: the training ``DataLoader`` (read, never iterated): a batch of one sample
            in its epoch (the last one, with ``drop_last=False``) is checked against the
            layers that then see one value per channel (``single-sample``).
        checks: run only these codes (see :data:`CHECKS`). Default: all
        max_gap: relative train/eval output difference reported. Default: 0.1
        max_mean_shift: running-std units of input-mean shift reported (and its square as
            the variance ratio). Default: 3.0
        min_batch, min_values_per_channel: below these the batch is called small.
            Default: 8 and 32
        max_momentum: momentum at or above which a Keras-style value is suspected.
            Default: 0.5

    Returns:
        :class:`Findings`, errors first, then warnings, then notes.

    Examples::

        >>> import torch, normkit as nk
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), nk.nn.BatchNorm1d(8, momentum=0.99))
        >>> [f.code for f in nk.tools.doctor(net.eval())]
        ['bias-before-bn', 'never-trained', 'keras-momentum']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"doctor: expected a torch.nn.Module, got {type(model).__name__}")
    unknown = set(checks or ()) - set(CHECKS)
    if unknown:
        raise ValueError(f"doctor: unknown check(s) {sorted(unknown)}; known: {sorted(CHECKS)}")
    options = {
        "max_gap": max_gap,
        "max_mean_shift": max_mean_shift,
        "min_batch": min_batch,
        "min_values_per_channel": min_values_per_channel,
        "max_momentum": max_momentum,
    }
    ctx = Context(model, dict(model.named_modules()), module_graph(model), options)
    if loader is not None:
        ctx.loader = loader_sizes(loader)
    if example_batch is not None:
        ctx.example = make_inputs(example_batch, model, None, ValueError, "doctor")
        _measure(ctx)
    found = []
    for code, fn in CHECKS.items():
        if checks is None or code in checks:
            found.extend(fn(ctx))
    findings = Findings(group_findings(found))
    findings.sort(key=lambda f: SEVERITIES.index(f.severity))
    return findings
