"""The language of the lab's reports: a context, and message look-up in the catalog.

    with i18n.language("ko"):
        i18n.tr("ics.title")                 # the Korean title
        i18n.tr("common.steps_to", pct="90%")  # templates take keyword fields
    i18n.tr("report.environment", lang="ko")  # an explicit language, whatever the context

Every user-facing string of a report (titles, headlines, table headers, captions, the
explanation of each plot, notes, the page's own words) lives in
:mod:`normkit.lab.messages`, one entry per key with one template per language. The
language is a context variable (default English), so setting it never changes anything
outside the ``with`` block, and nothing changes at import time.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from normkit.lab.errors import LabError

LANGUAGES = ("en", "ko")
DEFAULT = "en"
NAMES = {"en": "English", "ko": "한국어"}

_LANG: contextvars.ContextVar[str] = contextvars.ContextVar("normkit_lab_lang", default=DEFAULT)


def check_language(lang: str) -> str:
    """``lang`` if it is a supported language; :class:`LabError` naming the choices otherwise."""
    if lang not in LANGUAGES:
        raise LabError(f"--lang must be one of {', '.join(LANGUAGES)}, got {lang!r}")
    return lang


@contextlib.contextmanager
def language(lang: str | None) -> Iterator[str]:
    """Messages in ``lang`` inside the block (``None``: keep the current language)."""
    if lang is None:
        yield _LANG.get()
        return
    token = _LANG.set(check_language(lang))
    try:
        yield lang
    finally:
        _LANG.reset(token)


def current() -> str:
    """The language messages are looked up in now."""
    return _LANG.get()


def tr(key: str, *, lang: str | None = None, **fields: object) -> str:
    """The message ``key`` in ``lang`` (default: the current language), formatted with ``fields``."""
    from normkit.lab.messages import MESSAGES

    try:
        entry = MESSAGES[key]
    except KeyError:
        raise KeyError(f"no message {key!r} in normkit.lab.messages") from None
    return entry[check_language(lang or _LANG.get())].format(**fields)
