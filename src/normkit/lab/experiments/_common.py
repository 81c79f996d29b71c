"""Small helpers shared by the experiments: option parsers and number formatting."""

from __future__ import annotations

from collections.abc import Sequence

from normkit.lab.errors import LabError


def pct(value: float | None, digits: int = 1) -> str:
    """0.945 -> '94.5%'."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def first_reaching(steps: Sequence[int], values: Sequence[float], threshold: float) -> int | None:
    """The first step whose value is >= threshold (None if never)."""
    for step, value in zip(steps, values, strict=True):
        if value >= threshold:
            return step
    return None


def parse_list(text: str, convert, what: str) -> tuple:
    """'a,b,c' -> (convert(a), convert(b), convert(c)); LabError naming ``what``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise LabError(f"{what} needs at least one value")
    try:
        return tuple(convert(t) for t in items)
    except ValueError:
        raise LabError(f"{what}: cannot parse {text!r}") from None
