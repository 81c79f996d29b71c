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


def data_summary(data) -> str:
    """The dataset in one line, in the report language
    ('digits: 1438 train / 359 test, input 1x8x8, 10 classes')."""
    from normkit.lab.i18n import tr

    return tr(
        "data.summary",
        name=data.name,
        train=len(data.y_train),
        test=len(data.y_test),
        shape="x".join(str(s) for s in data.input_shape),
        classes=data.num_classes,
    )


def never_or(step: int | None) -> str | int:
    """A step, or 'never' in the report language."""
    from normkit.lab.i18n import tr

    return tr("common.never") if step is None else step
