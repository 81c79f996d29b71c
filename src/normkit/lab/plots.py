"""Figures for the lab (matplotlib, Agg backend, PNG): line plots in side-by-side panels.

Every experiment describes its figure as :class:`Panel`\\ s of :class:`Series` and calls
:func:`save_panels`; styling lives here only.

Korean text (report language ``ko``) is drawn with NanumGothic, the font file that the
``koreanize-matplotlib`` package ships (a dependency of the ``lab`` extra), so no system
font is assumed. The font is registered with matplotlib's font manager when a Korean figure
is first drawn and selected only inside that figure's ``rc_context``; the package's own
module, which rewrites the global rcParams when imported, is never imported.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normkit.lab import i18n
from normkit.lab.errors import LabError

KOREAN_FONT_PACKAGE = "koreanize-matplotlib"
KOREAN_FONT_FILE = "koreanize_matplotlib/fonts/NanumGothic.ttf"

# Colour-blind-safe palette (Okabe & Ito 2008), one colour per label across all figures.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]


@dataclass
class Series:
    """One line: ``y`` against ``x``; ``band=(low, high)`` shades a range around it."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    band: tuple[Sequence[float], Sequence[float]] | None = None
    style: str = "-"
    color: str | None = None
    marker: str | None = None


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    logx: float | None = None  # log base of the x axis (None: linear)
    ylim: tuple[float, float] | None = None
    percent: bool = False  # y values are fractions shown as percentages
    xticks: Sequence[float] | None = None  # label exactly these x values (e.g. layer numbers)


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - part of the lab extra
        raise LabError("the lab's plots need matplotlib: pip install 'normkit[lab]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def korean_font_file() -> Path:
    """The NanumGothic TrueType file shipped by the ``koreanize-matplotlib`` package.

    Located through the package's installed metadata, without importing it.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(KOREAN_FONT_PACKAGE)
    except metadata.PackageNotFoundError:
        raise LabError(
            f"Korean plots need the font shipped by {KOREAN_FONT_PACKAGE}: "
            "pip install 'normkit[lab]'"
        ) from None
    path = Path(str(dist.locate_file(KOREAN_FONT_FILE)))
    if not path.is_file():
        raise LabError(f"{KOREAN_FONT_PACKAGE} is installed but has no {KOREAN_FONT_FILE}")
    return path


@functools.cache
def _registered_korean_family() -> str:
    """Register the Korean font with matplotlib (once) and return its family name."""
    from matplotlib import font_manager

    path = korean_font_file()
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


def font_settings(lang: str | None = None) -> dict[str, Any]:
    """The rcParams a figure in ``lang`` (default: the current language) is drawn with.

    Korean: NanumGothic first, DejaVu Sans (matplotlib's own) as the per-glyph fallback,
    and an ASCII hyphen for minus signs (NanumGothic has no U+2212). English: nothing.
    """
    if (lang or i18n.current()) != "ko":
        return {}
    return {
        "font.family": [_registered_korean_family(), "DejaVu Sans"],
        "axes.unicode_minus": False,
    }


def save_panels(path: Path, panels: list[Panel], suptitle: str | None = None) -> Path:
    """Draw ``panels`` side by side (at most 3 per row) into the PNG ``path``, with the
    font of the current report language."""
    plt = _pyplot()
    with plt.rc_context(font_settings()):
        return _draw(plt, path, panels, suptitle)


def _draw(plt, path: Path, panels: list[Panel], suptitle: str | None) -> Path:
    from matplotlib.ticker import NullLocator, PercentFormatter

    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False, dpi=110
    )
    colors: dict[str, str] = {}
    for ax, panel in zip(axes.flat, panels, strict=False):
        for s in panel.series:
            color = s.color or colors.setdefault(s.label, PALETTE[len(colors) % len(PALETTE)])
            ax.plot(s.x, s.y, s.style, color=color, marker=s.marker, ms=4, lw=1.6, label=s.label)
            if s.band is not None:
                ax.fill_between(s.x, s.band[0], s.band[1], color=color, alpha=0.18, lw=0)
        if panel.logx:
            ax.set_xscale("log", base=panel.logx)
            ticks = sorted({float(v) for s in panel.series for v in s.x})
            if len(ticks) <= 12:  # label the measured points with plain numbers
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
                ax.xaxis.set_minor_locator(NullLocator())
        if panel.xticks is not None:
            ax.set_xticks(list(panel.xticks), [f"{t:g}" for t in panel.xticks])
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        if panel.percent:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))
        ax.set_title(panel.title, fontsize=10.5)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if any(s.label for s in panel.series):
            ax.legend(fontsize=8, frameon=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return path
