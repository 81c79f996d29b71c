"""Running experiments: seeding, output directory, progress bars, timing, files written.

``run_experiment(name, cfg, out_dir)`` validates the config, checks the output directory
is writable before any training, seeds every generator, runs the experiment and writes::

    out_dir/config.json     the config (and the experiment name)
    out_dir/results.json    headline, summary table, metrics, figures, timing, environment
    out_dir/results.csv     tidy rows: one measurement each
    out_dir/*.png           the figures
    out_dir/report.html     one self-contained page (images embedded)

``run_all`` runs every experiment into ``out_dir/<name>/`` and writes one combined report.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from normkit._progress import progress_bar
from normkit.lab import i18n, registry
from normkit.lab.errors import LabError
from normkit.lab.registry import Config, Result

_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("normkit_lab_quiet", default=False)


# ----------------------------------------------------------------------------- progress
@contextlib.contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar for one training run (:func:`normkit._progress.progress_bar`); yields
    ``update(completed_steps)``; silent when the lab runs quietly."""
    with progress_bar(label, total, False if _QUIET.get() else None) as update:
        yield update


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Silence progress bars and printed summaries inside the block."""
    token = _QUIET.set(enabled)
    try:
        yield
    finally:
        _QUIET.reset(token)


def is_quiet() -> bool:
    return _QUIET.get()


# ----------------------------------------------------------------------------- environment
def environment() -> dict[str, Any]:
    """Versions, machine and thread settings: what a reader needs to compare runs."""
    import normkit

    env: dict[str, Any] = {
        "normkit": normkit.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    from importlib import metadata

    for dist in ("numba", "matplotlib", "scikit-learn", "mnist1d", "rich", "koreanize-matplotlib"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    env["git_commit"] = _git_commit()
    return env


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ----------------------------------------------------------------------------- files
def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` and check a file can be written there (before any training)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise LabError(f"output path {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".normkit-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise LabError(f"cannot write to output directory {path}: {exc.strerror or exc}") from None
    return path


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN/Inf
    if isinstance(value, np.generic):
        return _to_json(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(_to_json(value), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def result_dict(result: Result) -> dict[str, Any]:
    """The content of ``results.json``."""
    return {
        "experiment": result.experiment,
        "lang": result.lang,
        "title": result.title,
        "headline": result.headline,
        "summary": {"columns": result.columns, "rows": result.rows},
        "metrics": result.metrics,
        "figures": [
            {"file": f.file, "caption": f.caption, "explanation": f.explanation}
            for f in result.figures
        ],
        "notes": result.notes,
        "config": result.config.to_dict() if result.config else None,
        "seconds": round(result.seconds, 2),
        "environment": result.environment,
    }


# ----------------------------------------------------------------------------- running
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - code that still uses the global generator
    torch.manual_seed(seed)


def check_config(name: str, cfg: Config) -> None:
    """Validate ``cfg`` for experiment ``name`` and load its data (fail before training)."""
    from normkit.lab.datasets import load_dataset

    cfg.validate(registry.get(name))
    data = load_dataset(cfg.data)
    if max(cfg.batch_size) > len(data.y_train):
        raise LabError(
            f"--batch-size {max(cfg.batch_size)} is larger than the training set of "
            f"{data.name} ({len(data.y_train)} examples)"
        )


def run_experiment(
    name: str,
    cfg: Config | None = None,
    out_dir: str | Path | None = None,
    *,
    report: bool = True,
    lang: str | None = None,
) -> Result:
    """Run experiment ``name`` with ``cfg`` (its defaults if None) and write its files.

    ``lang`` (``"en"``, ``"ko"``; ``None``: the current :mod:`~normkit.lab.i18n` language)
    is the language of the report, the plots and every text in ``results.json``; the
    numbers do not depend on it.
    """
    from normkit.lab import report as report_mod

    exp = registry.get(name)
    cfg = cfg if cfg is not None else exp.config()
    check_config(name, cfg)
    if lang is not None:
        i18n.check_language(lang)
    out = prepare_out_dir(out_dir if out_dir is not None else Path("lab-output") / name)
    write_json(out / "config.json", {"experiment": name, **cfg.to_dict()})
    seed_everything(cfg.seed)
    start = time.perf_counter()
    with i18n.language(lang) as chosen:
        result = exp.run(cfg, out)
    result.lang = chosen
    result.seconds = time.perf_counter() - start
    result.config = cfg
    result.environment = environment()
    result.out_dir = out
    try:
        write_json(out / "results.json", result_dict(result))
        write_csv(out / "results.csv", result.records)
        if report:
            report_mod.write_report(out / "report.html", [out])
    except OSError as exc:
        raise LabError(f"cannot write results to {out}: {exc.strerror or exc}") from None
    return result


def run_all(
    out_dir: str | Path | None = None,
    *,
    smoke: bool = False,
    names: list[str] | None = None,
    on_result: Callable[[Result], None] | None = None,
    lang: str | None = None,
    **overrides: Any,
) -> list[Result]:
    """Every experiment (or ``names``) into ``out_dir/<name>/`` plus a combined report.

    ``overrides`` (steps, seed, lr, batch_size, data, eval_every; ``None`` = keep) apply to
    every experiment. All configs are validated before the first one runs. ``lang`` as in
    :func:`run_experiment`.
    """
    from normkit.lab import report as report_mod

    if lang is not None:
        i18n.check_language(lang)
    chosen = names if names is not None else registry.names()
    plans = []
    for name in chosen:
        cfg = registry.get(name).config(smoke=smoke, **overrides)
        check_config(name, cfg)
        plans.append((name, cfg))
    out = prepare_out_dir(out_dir if out_dir is not None else Path("lab-output") / "all")
    results = []
    for name, cfg in plans:
        result = run_experiment(name, cfg, out / name, lang=lang)
        results.append(result)
        if on_result:
            on_result(result)
    try:
        report_mod.write_report(out / "report.html", [r.out_dir for r in results])
        write_json(
            out / "results.json",
            {
                "lang": results[0].lang if results else i18n.current(),
                "experiments": [
                    {
                        "experiment": r.experiment,
                        "headline": r.headline,
                        "seconds": round(r.seconds, 2),
                    }
                    for r in results
                ],
            },
        )
    except OSError as exc:
        raise LabError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return results
