"""The English and the Korean report opened in a real browser (headless Chromium driven by
Playwright; the distribution's /usr/bin/chromium, no browser download).

Each page must load without a script error or a failed request, every figure must decode
(``naturalWidth > 0``), the screenshot must show the plot (the orange "with BN" curve is
there), and the Korean page's text must be drawn with an installed font that covers Korean
(Chromium's own report of the fonts it used for the node, checked against fontconfig).

Skipped when Chromium or Playwright is missing, except under CI (``CI`` set), where that is
a failure: ``.ci/run`` installs both through ``.ci/browser-deps`` and the ``dev`` extra.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from .helpers import run_small

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ORANGE = np.array([0xD5, 0x5E, 0x00])  # the palette's second colour: "with BN" in ics.png


def _require(ok: bool, what: str) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what}: CI must run the browser test (bash .ci/browser-deps installs it)")
    pytest.skip(what)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def korean_font_families() -> set[str]:
    """Families of the installed fonts that cover Korean, according to fontconfig."""
    if shutil.which("fc-list") is None:
        return set()
    out = subprocess.run(
        ["fc-list", ":lang=ko", "family"], capture_output=True, text=True, check=False
    ).stdout
    return {name.strip() for line in out.splitlines() for name in line.split(",") if name.strip()}


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    _require(chromium is not None, "chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            yield instance
        finally:
            instance.close()


@dataclass
class PageCheck:
    """What a page did in the browser."""

    errors: list[str] = field(default_factory=list)  # console errors, page errors, failed loads
    images: list[dict] = field(default_factory=list)  # {"file", "complete", "width"} per <img>
    lang: str = ""
    fonts: dict[str, list[dict]] = field(default_factory=dict)  # selector -> platform fonts
    screenshot: Path | None = None


def open_page(browser, url: str, shot: Path, font_selectors: tuple[str, ...] = ()) -> PageCheck:
    """Load ``url``, collect errors, image states and fonts, and screenshot the whole page."""
    check = PageCheck()
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.on(
            "console",
            lambda msg: (
                check.errors.append(f"console: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda exc: check.errors.append(f"script error: {exc}"))
        page.on("requestfailed", lambda req: check.errors.append(f"failed load: {req.url[:80]}"))
        page.goto(url, wait_until="load", timeout=60_000)
        check.images = page.evaluate(
            """() => [...document.images].map(img => ({
                file: img.dataset.file || img.src.slice(0, 40),
                complete: img.complete,
                width: img.naturalWidth,
            }))"""
        )
        check.lang = page.evaluate("() => document.documentElement.lang")
        if font_selectors:
            cdp = page.context.new_cdp_session(page)
            cdp.send("DOM.enable")
            cdp.send("CSS.enable")
            root = cdp.send("DOM.getDocument")["root"]["nodeId"]
            for selector in font_selectors:
                node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})
                fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})
                check.fonts[selector] = fonts["fonts"]
        page.screenshot(path=str(shot), full_page=True)
        check.screenshot = shot
    finally:
        page.close()
    return check


def _pixels(path: Path) -> np.ndarray:
    import matplotlib.image

    return (matplotlib.image.imread(path)[..., :3] * 255).astype(int)


def assert_rendered(check: PageCheck, figures: list[str]) -> None:
    assert check.errors == [], check.errors
    assert [img["file"] for img in check.images] == figures
    broken = [img for img in check.images if not (img["complete"] and img["width"] > 0)]
    assert broken == [], f"images that did not decode: {broken}"
    pixels = _pixels(check.screenshot)
    assert pixels.shape[0] > 900 and pixels.std() > 20, "the screenshot is (nearly) blank"
    close = np.abs(pixels - ORANGE).sum(-1) < 40
    assert close.sum() > 50, "the plot's orange curve is not on the screenshot"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    from normkit.lab.runner import quiet

    out = {}
    with quiet():
        for lang in ("en", "ko"):
            run_dir = tmp_path_factory.mktemp(f"ics-{lang}")
            run_small("ics", run_dir, lang=lang)
            out[lang] = run_dir / "report.html"
    return out


@pytest.mark.slow
def test_english_report_renders_in_chromium(browser, reports, tmp_path):
    check = open_page(browser, reports["en"].resolve().as_uri(), tmp_path / "en.png")
    assert check.lang == "en"
    assert_rendered(check, ["ics.png"])


@pytest.mark.slow
def test_korean_report_renders_in_chromium_with_a_korean_font(browser, reports, tmp_path):
    families = korean_font_families()
    _require(bool(families), "no installed font covers Korean (fonts-noto-cjk)")
    check = open_page(
        browser,
        reports["ko"].resolve().as_uri(),
        tmp_path / "ko.png",
        font_selectors=("h2", ".headline", "p.explain"),  # Korean text (h1 is "normkit lab: ics")
    )
    assert check.lang == "ko"
    assert_rendered(check, ["ics.png"])
    for selector, fonts in check.fonts.items():
        used = {f["familyName"] for f in fonts if f["glyphCount"] > 0}
        assert used and used & families, f"{selector}: drawn with {used}, Korean fonts {families}"


@pytest.mark.slow
def test_the_checks_catch_a_broken_page(browser, tmp_path):
    """The checks above can fail: a script error and an image that does not decode."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html lang='en'><body><h1>x</h1>"
        "<img data-file='ics.png' src='data:image/png;base64,iVBORw0KGgo='>"
        "<script>throw new Error('boom')</script></body></html>"
    )
    check = open_page(browser, page.as_uri(), tmp_path / "broken.png")
    assert any("boom" in e for e in check.errors)
    with pytest.raises(AssertionError):
        assert_rendered(check, ["ics.png"])
    check.errors = []
    with pytest.raises(AssertionError, match="did not decode"):
        assert_rendered(check, ["ics.png"])
