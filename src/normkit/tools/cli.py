"""``normkit summary`` and ``normkit doctor``: the tools on a model built by a factory.

    normkit summary torchvision.models:resnet18 --input-size 1,3,224,224
    normkit doctor mypkg.models:build_model --input-size 32,3,32,32
    normkit doctor path/to/models.py:make --json

``pkg.module:factory`` (or ``file.py:factory``) names a callable returning a model, or a
``(model, example_batch)`` pair, or an ``nn.Module`` instance. No logic lives here: the
commands call :func:`normkit.tools.summary` and :func:`normkit.tools.doctor`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from normkit.errors import CommandError


def _error(message: str) -> CommandError:
    return CommandError(message)


def load_factory(spec: str) -> tuple[Any, Any]:
    """``"pkg.module:factory"`` -> ``(model, example or None)``."""
    from torch import nn

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise _error(f"expected MODULE:FACTORY such as mypkg.models:build, got {spec!r}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise _error(f"no such file: {module_name}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _error(f"cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise _error(f"{module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if isinstance(target, nn.Module):
        result = target
    elif callable(target):
        try:
            result = target()
        except Exception as exc:
            raise _error(f"{spec}() failed: {type(exc).__name__}: {exc}") from exc
    else:
        raise _error(f"{spec} is neither a callable nor an nn.Module ({type(target).__name__})")
    example = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module):
        result, example = result
    if not isinstance(result, nn.Module):
        raise _error(
            f"{spec} returned {type(result).__name__}; expected an nn.Module or a "
            "(model, example_batch) pair"
        )
    return result, example


def _input(args: argparse.Namespace, example: Any) -> Any:
    from normkit.tools._inputs import parse_size

    if args.input_size:
        try:
            return parse_size(args.input_size)
        except ValueError as exc:
            raise _error(f"--input-size: {exc}") from exc
    return example


def _summary(args: argparse.Namespace) -> int:
    from normkit.tools.summary import SummaryError, summary

    model, example = load_factory(args.factory)
    try:
        result = summary(model, _input(args, example))
    except SummaryError as exc:
        raise _error(str(exc)) from exc
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    elif args.plain:
        print(result)
    else:
        result.show()
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from normkit.tools.doctor import doctor

    model, example = load_factory(args.factory)
    if args.eval:
        model.eval()
    try:
        findings = doctor(model, _input(args, example))
    except (ValueError, TypeError) as exc:
        raise _error(str(exc)) from exc
    if args.json:
        print(json.dumps(findings.to_dicts(), indent=1))
    else:
        findings.show()
    if findings.errors or (args.strict and findings.warnings):
        return 1
    return 0


def register(subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("factory", help="MODULE:FACTORY (or file.py:FACTORY) building the model")
    common.add_argument(
        "--input-size",
        help="input size with the batch dim, e.g. 8,3,32,32 (several inputs: 2,3;2,10); "
        "default: the example the factory returns, if any",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")

    summary = subparsers.add_parser(
        "summary",
        parents=[common],
        help="Keras-style table: output shapes, trainable / non-trainable counts, norm health",
    )
    summary.add_argument("--plain", action="store_true", help="plain text even in a terminal")
    summary.set_defaults(func=_summary)

    doctor = subparsers.add_parser(
        "doctor",
        parents=[common],
        help="find classic normalization mistakes (exit status 1 if any error is found)",
    )
    doctor.add_argument("--eval", action="store_true", help="call model.eval() first")
    doctor.add_argument("--strict", action="store_true", help="exit status 1 on warnings too")
    doctor.set_defaults(func=_doctor)


if __name__ == "__main__":  # pragma: no cover
    from normkit.cli import main

    sys.exit(main())
