"""Exceptions shared across normkit's layers (kept here so any module can raise them without
importing the command line)."""

from __future__ import annotations


class CommandError(Exception):
    """A user-facing failure of a ``normkit`` command: printed as one line, exit status 2,
    no traceback."""
