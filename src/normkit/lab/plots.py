"""Figures for the lab (matplotlib, Agg backend, PNG): line plots in side-by-side panels.

Every experiment describes its figure as :class:`Panel`\\ s of :class:`Series` and calls
:func:`save_panels`; styling lives here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from normkit.lab.errors import LabError

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


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - part of the lab extra
        raise LabError("the lab's plots need matplotlib: pip install 'normkit[lab]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_panels(path: Path, panels: list[Panel], suptitle: str | None = None) -> Path:
    """Draw ``panels`` side by side (at most 3 per row) into the PNG ``path``."""
    plt = _pyplot()
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
