"""The registry of named experiments (``@experiment("ics", ...)``), their configs and results.

An experiment is a function ``run(cfg, out_dir) -> Result`` registered with its defaults,
a tiny smoke configuration (what CI runs) and the options it adds to the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normkit.lab.errors import LabError

SWEEPABLE = ("lr", "batch_size")


@dataclass(frozen=True)
class Config:
    """What one experiment run does.

    ``lr`` and ``batch_size`` are tuples: an experiment that sweeps one of them (``lr``,
    ``batch-size``) takes several values, the others take exactly one. ``eval_every`` is
    the number of training steps between evaluations; ``options`` holds the experiment's
    own settings (e.g. the normalizations of a sweep).
    """

    steps: int
    seed: int = 0
    lr: tuple[float, ...] = (0.1,)
    batch_size: tuple[int, ...] = (32,)
    data: str = "mnist1d"
    eval_every: int = 50
    options: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes``; ``None`` values are ignored, options are merged."""
        changes = {k: v for k, v in changes.items() if v is not None}
        options = {**self.options, **changes.pop("options", {})}
        for key in SWEEPABLE:
            if key in changes and not isinstance(changes[key], tuple | list):
                changes[key] = (changes[key],)
            if key in changes:
                changes[key] = tuple(changes[key])
        return dataclasses.replace(self, options=options, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, experiment: Experiment) -> None:
        """Raise :class:`LabError` for values no experiment can run with."""
        _positive_int("--steps", self.steps)
        _positive_int("--eval-every", self.eval_every)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise LabError(f"--seed must be an integer, got {self.seed!r}")
        for key in SWEEPABLE:
            values = getattr(self, key)
            flag = "--" + key.replace("_", "-")
            if len(values) == 0:
                raise LabError(f"{flag} needs at least one value")
            if len(values) > 1 and key not in experiment.sweeps:
                raise LabError(
                    f"{experiment.name} takes one {flag} value, got {len(values)}: "
                    f"{','.join(str(v) for v in values)}"
                )
        for b in self.batch_size:
            _positive_int("--batch-size", b)
            if b < 2:
                raise LabError(
                    f"--batch-size must be at least 2 (BatchNorm needs two examples per "
                    f"batch in training), got {b}"
                )
        for lr in self.lr:
            if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
                raise LabError(f"--lr must be a positive number, got {lr!r}")
        for option in experiment.options:
            if option.check is not None:
                option.check(self.options.get(option.name, option.default))


def _positive_int(flag: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LabError(f"{flag} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class Figure:
    """A PNG written into the run directory, with its caption and, for the reader, two or
    three plain sentences on what the plot shows and how to read it."""

    file: str
    caption: str
    explanation: str = ""


@dataclass
class Result:
    """What an experiment returns; the runner adds the config, timing and environment.

    ``headline``: one sentence with the key numbers. ``columns``/``rows``: the summary
    table. ``metrics``: structured numbers (``results.json``). ``records``: tidy rows (one
    measurement each) written to ``results.csv``. ``figures``: PNGs in the run directory.
    ``notes``: how to read the results, caveats. ``lang``: the language of every text
    field (set by the runner from :func:`normkit.lab.i18n.current`).
    """

    experiment: str
    title: str
    headline: str
    columns: list[str]
    rows: list[list[Any]]
    metrics: dict[str, Any]
    records: list[dict[str, Any]]
    figures: list[Figure]
    notes: list[str] = field(default_factory=list)
    config: Config | None = None
    seconds: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    lang: str = "en"


@dataclass(frozen=True)
class Option:
    """An experiment-specific setting, exposed as ``--name`` on the command line.

    ``parse`` turns the command-line string into the value; ``check`` raises
    :class:`LabError` for an invalid value.
    """

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any]
    check: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    summary: str
    run: Callable[[Config, Path], Result]
    defaults: Config
    smoke: dict[str, Any]
    sweeps: frozenset[str] = frozenset()
    options: tuple[Option, ...] = ()

    def config(self, smoke: bool = False, **overrides: Any) -> Config:
        """The default (or smoke) config with ``overrides`` (``None`` means "keep")."""
        options = {o.name: o.default for o in self.options}
        base = self.defaults.replace(options=options)
        if smoke:
            base = base.replace(**self.smoke)
        return base.replace(**overrides)


_REGISTRY: dict[str, Experiment] = {}
_LOADED = False


def experiment(
    name: str,
    *,
    title: str,
    summary: str,
    defaults: Config,
    smoke: dict[str, Any],
    sweeps: tuple[str, ...] = (),
    options: tuple[Option, ...] = (),
) -> Callable[[Callable[[Config, Path], Result]], Callable[[Config, Path], Result]]:
    """Register ``run(cfg, out_dir) -> Result`` under ``name``."""

    def decorator(fn: Callable[[Config, Path], Result]) -> Callable[[Config, Path], Result]:
        if name in _REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        _REGISTRY[name] = Experiment(
            name, title, summary, fn, defaults, dict(smoke), frozenset(sweeps), options
        )
        return fn

    return decorator


def _load() -> None:
    global _LOADED
    if not _LOADED:
        importlib.import_module("normkit.lab.experiments")
        _LOADED = True


def names() -> list[str]:
    """Registered experiment names, in registration order."""
    _load()
    return list(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment called ``name``; :class:`LabError` (with suggestions) otherwise."""
    _load()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LabError(
            f"unknown experiment {name!r} (choose from {', '.join(_REGISTRY)}, all){hint}"
        )
    return _REGISTRY[name]
