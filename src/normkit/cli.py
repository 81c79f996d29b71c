"""The ``normkit`` command line: a thin argparse layer over the Python API.

Each subcommand lives in the module that owns its logic and registers itself through a
``register(subparsers)`` function; this file only lists those modules. No logic lives only
in the command line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from normkit.errors import CommandError

__all__ = ["COMMAND_MODULES", "CommandError", "build_parser", "main"]

# Modules providing subcommands, each with ``register(subparsers) -> None``; a registered
# parser sets ``func(args) -> int`` as its default.
COMMAND_MODULES: list[str] = [
    "normkit.demo",
    "normkit.tools.cli",
    "normkit.lab.cli",
    "normkit.backends.warmup",
    "normkit.backends.tuning",
]


def build_parser() -> argparse.ArgumentParser:
    from normkit import __version__

    parser = argparse.ArgumentParser(
        prog="normkit",
        description="Normalization layers for PyTorch: lab, tools and benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"normkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"normkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
