"""Record how the inputs of normalization layers (or any layers) are distributed, step by
step: mean, standard deviation and the 15th/50th/85th percentiles (the curves of Figure 1
of Ioffe & Szegedy 2015).

    with nk.tools.monitor(model, every=10) as mon:
        for x, y in loader:
            loss = criterion(model(x), y); ...
    mon.records                 # list of Record(step, layer, type, training, mean, std, p15, p50, p85, ...)
    mon.to_csv("stats.csv"); mon.to_json("stats.json"); print(mon.table())
    mon.plot("figure1.png")     # one panel per layer: p15/p50/p85 against the step
    mon.to_tensorboard("runs/norm")   # if tensorboard is installed

For Figure 1 itself (the input of a sigmoid, with and without BN), watch the sigmoid:
``monitor(model, layers=torch.nn.Sigmoid, channel=0)`` follows one unit.

A *step* is one call of ``model`` (``step_on="forward"``) or advanced by
``mon.next_step()`` (``step_on="manual"``, e.g. once per optimizer step); steps that are not
a multiple of ``every`` cost one integer comparison per watched layer. Mean and std are
exact over the layer's whole input; the percentiles come from a uniform random sample of at
most ``max_samples`` values (seeded). Each watched layer is recorded once per step.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from normkit.tools._report import text_table
from normkit.tools._walk import first_input, iter_norm_layers

QUANTILES = (0.15, 0.50, 0.85)


@dataclass
class Record:
    """One layer at one step. ``values`` is the number of values summarized (the whole
    input or one channel); ``sampled`` how many of them gave the percentiles."""

    step: int
    layer: str
    type: str
    where: str
    training: bool
    mean: float
    std: float
    p15: float
    p50: float
    p85: float
    values: int
    sampled: int


LayerSpec = Sequence[str] | type | tuple[type, ...] | Callable[[str, nn.Module], bool] | None


def _select(model: nn.Module, layers: LayerSpec) -> list[tuple[str, nn.Module]]:
    modules = dict(model.named_modules())
    if layers is None:
        chosen = list(iter_norm_layers(model))
        if not chosen:
            raise ValueError(
                "monitor: the model has no normalization layer to watch; pass layers= "
                "(names, module types or a predicate) to watch others"
            )
        return chosen
    if isinstance(layers, type) or (
        isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers)
    ):
        chosen = [(n, m) for n, m in modules.items() if isinstance(m, layers)]
    elif callable(layers):
        chosen = [(n, m) for n, m in modules.items() if layers(n, m)]
    else:
        missing = [n for n in layers if n not in modules]
        if missing:
            raise ValueError(
                f"monitor: no module named {missing} in the model; names are like "
                f"{[n for n in modules if n][:8]}"
            )
        chosen = [(n, modules[n]) for n in layers]
    if not chosen:
        raise ValueError(f"monitor: layers={layers!r} matches no module of the model")
    return chosen


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value
    if isinstance(items, (tuple, list)) or isinstance(value, dict):
        for item in items:
            if isinstance(item, Tensor):
                return item
    return None


class Monitor:
    """Collects :class:`Record` rows while attached (inside ``with``, or between
    :meth:`start` and :meth:`stop`). Build it with :func:`monitor`."""

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec = None,
        every: int = 1,
        where: str = "input",
        channel: int | None = None,
        max_samples: int = 4096,
        step_on: str = "forward",
        seed: int = 0,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"monitor: every must be a positive integer, got {every!r}")
        if where not in ("input", "output"):
            raise ValueError(f"monitor: where must be 'input' or 'output', got {where!r}")
        if step_on not in ("forward", "manual"):
            raise ValueError(f"monitor: step_on must be 'forward' or 'manual', got {step_on!r}")
        if max_samples < 1:
            raise ValueError(f"monitor: max_samples must be >= 1, got {max_samples}")
        self.model = model
        self.layers = _select(model, layers)
        self.every = every
        self.where = where
        self.channel = channel
        self.max_samples = max_samples
        self.step_on = step_on
        self.step = -1 if step_on == "forward" else 0
        self.records: list[Record] = []
        self._generator = torch.Generator().manual_seed(seed)
        self._done: set[tuple[int, str]] = set()
        self._handles: list = []

    # --------------------------------------------------------------- attaching
    def start(self) -> Monitor:
        if self._handles:
            return self
        if self.step_on == "forward":
            self._handles.append(self.model.register_forward_pre_hook(self._advance))
        for name, module in self.layers:
            if self.where == "input":
                hook = self._make_pre_hook(name)
                self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                self._handles.append(module.register_forward_hook(self._make_post_hook(name)))
        return self

    def stop(self) -> Monitor:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def next_step(self) -> None:
        """Advance the step counter (``step_on="manual"``)."""
        self.step += 1

    def _advance(self, module, args) -> None:
        self.step += 1

    # --------------------------------------------------------------- recording
    def _due(self, name: str) -> bool:
        step = max(self.step, 0)
        return step % self.every == 0 and (step, name) not in self._done

    def _make_pre_hook(self, name: str):
        def hook(module, args, kwargs):
            if self._due(name):
                self._record(name, module, first_input(args, kwargs))

        return hook

    def _make_post_hook(self, name: str):
        def hook(module, args, output):
            if self._due(name):
                self._record(name, module, _first_tensor(output))

        return hook

    @torch.no_grad()
    def _record(self, name: str, module: nn.Module, x: Tensor | None) -> None:
        if x is None or not x.is_floating_point() or x.numel() == 0:
            return
        x = x.detach()
        if self.channel is not None:
            if x.dim() < 2 or not -x.shape[1] <= self.channel < x.shape[1]:
                raise ValueError(
                    f"monitor: channel={self.channel} does not exist in the {self.where} of "
                    f"'{name}' of size {tuple(x.shape)} (channels are dim 1)"
                )
            x = x[:, self.channel]
        flat = x.reshape(-1).float()
        values = flat.numel()
        std, mean = torch.std_mean(flat, correction=0)
        if values > self.max_samples:
            index = torch.randint(values, (self.max_samples,), generator=self._generator)
            sample = flat[index.to(flat.device)]
        else:
            sample = flat
        q = torch.quantile(sample, torch.tensor(QUANTILES, device=sample.device)).tolist()
        step = max(self.step, 0)
        self._done.add((step, name))
        self.records.append(
            Record(
                step, name or "<root>", type(module).__name__, self.where, module.training,
                mean.item(), std.item(), q[0], q[1], q[2], values, sample.numel(),
            )
        )  # fmt: skip

    # --------------------------------------------------------------- exporting
    def to_rows(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(Record)])
            writer.writeheader()
            writer.writerows(self.to_rows())
        return path

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "every": self.every,
            "where": self.where,
            "channel": self.channel,
            "max_samples": self.max_samples,
            "step_on": self.step_on,
            "quantiles": list(QUANTILES),
            "layers": [n or "<root>" for n, _ in self.layers],
        }
        path.write_text(json.dumps({"config": config, "records": self.to_rows()}, indent=1))
        return path

    def layer_names(self) -> list[str]:
        return list(dict.fromkeys(r.layer for r in self.records))

    def series(self, layer: str, stat: str = "p50") -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one statistic of one layer."""
        rows = [r for r in self.records if r.layer == layer]
        return [r.step for r in rows], [getattr(r, stat) for r in rows]

    def table(self, last: int | None = None) -> str:
        """The records as text (the last ``last`` steps per layer; all by default)."""
        rows = self.records
        if last is not None:
            steps = sorted({r.step for r in rows})[-last:]
            rows = [r for r in rows if r.step in steps]
        cells = [
            (r.step, r.layer, r.type, "train" if r.training else "eval",
             *(f"{getattr(r, k):.4g}" for k in ("mean", "std", "p15", "p50", "p85")))
            for r in rows
        ]  # fmt: skip
        head = ["step", "layer", "type", "mode", "mean", "std", "p15", "p50", "p85"]
        return text_table(head, cells, "rlllrrrrr")

    def __str__(self) -> str:
        return (
            f"monitor: {len(self.records)} record(s), {len(self.layer_names())} layer(s)\n"
            + self.table(last=1)
        )

    def plot(
        self,
        path: str | Path | None = None,
        layers: Sequence[str] | None = None,
        band: bool = True,
        title: str | None = None,
    ):
        """Figure 1 style: per layer, p15/p50/p85 of the input against the step.

        Args:
            path: save the figure there (PNG, PDF, SVG by extension); None: only return it.
            layers: which layers (default: all recorded, at most 12 panels).
            band: shade between p15 and p85. Default: True
            title: figure title.

        Returns:
            The matplotlib Figure (needs matplotlib: ``pip install 'normkit[lab]'``).
        """
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("monitor.plot needs matplotlib: pip install matplotlib") from exc
        names = list(layers) if layers is not None else self.layer_names()[:12]
        if not names:
            raise ValueError("monitor.plot: nothing recorded yet")
        cols = min(3, len(names))
        rows = (len(names) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            steps, p15 = self.series(name, "p15")
            _, p50 = self.series(name, "p50")
            _, p85 = self.series(name, "p85")
            if band:
                ax.fill_between(steps, p15, p85, alpha=0.15, color="C0")
            ax.plot(steps, p85, color="C0", lw=1, ls="--", label="85th percentile")
            ax.plot(steps, p50, color="C0", lw=1.6, label="median")
            ax.plot(steps, p15, color="C0", lw=1, ls=":", label="15th percentile")
            kind = next((r.type for r in self.records if r.layer == name), "")
            ax.set_title(f"{name} ({kind}) {self.where}", fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=120)
        return fig

    def to_tensorboard(self, log_dir: str | Path | Any, prefix: str = "norm") -> None:
        """Write every record as scalars ``{prefix}/{layer}/{stat}`` at its step.

        ``log_dir`` is a directory or an existing ``SummaryWriter``. Needs the
        ``tensorboard`` package (``ImportError`` with the install hint otherwise).
        """
        if hasattr(log_dir, "add_scalar"):
            writer, own = log_dir, False
        else:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(
                    "monitor.to_tensorboard needs tensorboard: pip install tensorboard"
                ) from exc
            writer, own = SummaryWriter(str(log_dir)), True
        for r in self.records:
            for stat in ("mean", "std", "p15", "p50", "p85"):
                writer.add_scalar(f"{prefix}/{r.layer}/{stat}", getattr(r, stat), r.step)
        writer.flush()
        if own:
            writer.close()


def monitor(
    model: nn.Module,
    every: int = 1,
    *,
    layers: LayerSpec = None,
    where: str = "input",
    channel: int | None = None,
    max_samples: int = 4096,
    step_on: str = "forward",
    seed: int = 0,
) -> Monitor:
    """A context manager recording per-layer input statistics at every ``every``-th step.

    Args:
        model: the model whose calls define the steps.
        every: record at steps 0, every, 2*every, ... Default: 1
        layers: which layers: None (every normalization layer), a list of module names, a
            module type or tuple of types (e.g. ``torch.nn.Sigmoid``) or a predicate
            ``f(name, module) -> bool``.
        where: ``"input"`` (what the layer receives) or ``"output"``. Default: "input"
        channel: follow a single channel/feature (dim 1), e.g. one sigmoid unit.
            Default: None (all values)
        max_samples: values sampled for the percentiles. Default: 4096
        step_on: ``"forward"`` (each ``model(...)`` call is a step) or ``"manual"``
            (``mon.next_step()``). Default: "forward"
        seed: seed of the sampling. Default: 0

    Returns:
        A :class:`Monitor`; use it in ``with`` (hooks attached on enter, removed on exit).

    Examples::

        >>> import torch, normkit as nk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), nk.nn.BatchNorm1d(4))
        >>> with nk.tools.monitor(net) as mon:
        ...     for _ in range(3):
        ...         _ = net(torch.randn(8, 3))
        >>> [(r.step, r.layer) for r in mon.records]
        [(0, '1'), (1, '1'), (2, '1')]
    """
    return Monitor(model, layers, every, where, channel, max_samples, step_on, seed)
