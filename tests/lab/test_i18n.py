"""Report language: the catalog is complete in both languages, and `--lang ko` writes a
Korean report whose figures are drawn with a font that has the Korean glyphs."""

from __future__ import annotations

import json
import re
import string
import warnings
from pathlib import Path

import pytest

from normkit.lab import i18n, registry
from normkit.lab.errors import LabError
from normkit.lab.messages import MESSAGES
from normkit.lab.plots import Panel, Series, korean_font_file, save_panels

from .helpers import check_report, run_small

HANGUL = re.compile("[\uac00-\ud7a3]")
ENGLISH_ONLY = {"plural"}
LAB_SRC = Path(__file__).resolve().parents[2] / "src" / "normkit" / "lab"


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_message_exists_in_both_languages_with_the_same_fields():
    for key, entry in MESSAGES.items():
        assert set(entry) == set(i18n.LANGUAGES), key
        assert all(entry[lang].strip() for lang in i18n.LANGUAGES), key
        # English-only grammar fields (a plural "s") may be absent from the Korean.
        assert _fields(entry["en"]) - ENGLISH_ONLY == _fields(entry["ko"]), key


def test_korean_messages_are_written_in_korean():
    """A Korean template that differs from the English one is Korean text; the ones that
    are the same are names (BatchNorm, 'normkit lab: {name}', ...), a small minority."""
    same = [k for k, e in MESSAGES.items() if e["ko"] == e["en"]]
    assert len(same) <= 0.1 * len(MESSAGES), same
    for key, entry in MESSAGES.items():
        if entry["ko"] != entry["en"]:
            assert HANGUL.search(entry["ko"]), key
        assert not HANGUL.search(entry["en"]), key


def test_every_literal_key_in_the_lab_exists():
    keys = set()
    for path in LAB_SRC.rglob("*.py"):
        keys |= set(re.findall(r"\btr\(\s*\"([a-z-]+\.[a-z0-9_]+)\"", path.read_text()))
    assert len(keys) > 100
    assert sorted(keys - set(MESSAGES)) == []
    for name in registry.names():  # titles are looked up as f"{name}.title"
        assert f"{name}.title" in MESSAGES


def test_language_context_and_errors():
    assert i18n.current() == "en"
    with i18n.language("ko"):
        assert i18n.tr("report.environment") == "실행 환경"
        assert i18n.tr("report.environment", lang="en") == "Environment"
    assert i18n.tr("report.environment") == "Environment"
    with pytest.raises(LabError, match="--lang must be one of en, ko, got 'fr'"):
        with i18n.language("fr"):
            pass
    with pytest.raises(KeyError, match=r"no message 'nope\.key'"):
        i18n.tr("nope.key")


class _TextSpy:
    """Records (text, resolved font file) for every text matplotlib draws."""

    def __init__(self, monkeypatch):
        import matplotlib.text
        from matplotlib import font_manager

        self.drawn: list[tuple[str, str]] = []
        original = matplotlib.text.Text.draw
        spy = self

        def draw(text, renderer):
            if text.get_text():
                font = font_manager.findfont(text.get_fontproperties(), fallback_to_default=False)
                spy.drawn.append((text.get_text(), font))
            return original(text, renderer)

        monkeypatch.setattr(matplotlib.text.Text, "draw", draw)


def _korean_run(tmp_path, monkeypatch):
    spy = _TextSpy(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_small("ics", tmp_path, lang="ko")
    return result, spy, caught


def test_korean_report_text_and_font(tmp_path, monkeypatch):
    result, spy, caught = _korean_run(tmp_path, monkeypatch)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert missing == []
    korean = [(text, font) for text, font in spy.drawn if HANGUL.search(text)]
    assert len(korean) >= 5  # titles, axis labels, legend entries
    assert {Path(font) for _, font in korean} == {korean_font_file()}

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["lang"] == "ko" and result.lang == "ko"
    assert results["title"] == MESSAGES["ics.title"]["ko"]
    assert results["headline"] == result.headline and "스텝" in result.headline
    assert HANGUL.search(results["figures"][0]["explanation"])
    assert all(HANGUL.search(note) for note in results["notes"])
    assert all(HANGUL.search(column) for column in results["summary"]["columns"])
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<html lang='ko'>" in page
    text = "".join(check_report(tmp_path / "report.html", ["ics.png"]).text)
    for key in ("report.environment", "report.parameters", "report.reading", "ics.explanation"):
        assert MESSAGES[key]["ko"] in text, key
    assert "Environment" not in text and "What the plot shows" not in text
    # The numbers do not depend on the language.
    english = run_small("ics", tmp_path / "en")
    assert english.metrics == result.metrics and english.lang == "en"
    assert not HANGUL.search((tmp_path / "en" / "report.html").read_text(encoding="utf-8"))


def test_english_figures_use_matplotlibs_default_font(tmp_path, monkeypatch):
    spy = _TextSpy(monkeypatch)
    panel = Panel("accuracy", "step", "value", [Series("a", [0, 1], [0.1, 0.2])])
    save_panels(tmp_path / "en.png", [panel])
    assert spy.drawn and all("DejaVu" in Path(font).name for _, font in spy.drawn)


def test_report_rerender_keeps_the_language(tmp_path):
    from normkit.lab import report

    run_small("ics", tmp_path, lang="ko")
    html = report.render([tmp_path])
    assert "<html lang='ko'>" in html and MESSAGES["report.environment"]["ko"] in html


def test_cli_lang_ko_prints_korean_and_rejects_unknown_languages(tmp_path, capsys):
    from normkit.cli import main

    code = main(["lab", "ics", "--smoke", "--lang", "ko", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert ">> ics: " in out and "스텝" in out.split(">> ics: ")[1].splitlines()[0]
    with pytest.raises(SystemExit) as exc:
        main(["lab", "ics", "--lang", "fr"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --lang: invalid choice: 'fr'" in err and len(err.strip().splitlines()) == 1
