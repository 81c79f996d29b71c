"""The lab's user-facing error type."""

from __future__ import annotations


class LabError(ValueError):
    """A problem the user can fix (bad argument, unreadable data, unwritable output).

    The command line prints its message as one line and exits with a non-zero status; the
    Python API lets it propagate as a ``ValueError``.
    """
