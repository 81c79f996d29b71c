"""docs/learn: both languages have the same chapters, every code cell runs, and every
output shown right after a cell (a ```text block) is what the cell prints.

The chapters are Markdown notebooks: jupytext reads each one into a notebook (code cells =
its ```python blocks), and the cells of a chapter run in order in one namespace, as in a
Jupyter kernel.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[2]
LEARN = ROOT / "docs" / "learn"
LANGS = ("en", "ko")
CHAPTERS = {lang: sorted((LEARN / lang).glob("[0-9][0-9]-*.md")) for lang in LANGS}
HANGUL = re.compile("[\uac00-\ud7a3]")


def cells_with_outputs(path: Path) -> list[tuple[str, str | None]]:
    """(source, expected output or None) per code cell: the output is the ```text block
    that directly follows the cell, if any. (The lab commands a page quotes are ```console
    blocks, which jupytext keeps in the Markdown cells: they are not run here.)"""
    notebook = jupytext.read(path, fmt="md")
    assert notebook.metadata["jupytext"]["main_language"] == "python", path
    cells = notebook.cells
    pairs = []
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        assert not cell.source.startswith("%%"), f"{path}: a code cell in another language"
        expected = None
        following = cells[i + 1].source.strip() if i + 1 < len(cells) else ""
        if cells[i + 1 : i + 2] and cells[i + 1].cell_type == "markdown":
            match = re.match(r"```text\n(.*?)```", following, flags=re.S)
            if match:
                expected = match.group(1)
        pairs.append((cell.source, expected))
    return pairs


def test_both_languages_have_the_same_eight_chapters():
    names = {lang: [p.name for p in CHAPTERS[lang]] for lang in LANGS}
    assert len(names["en"]) == 8
    assert names["en"] == names["ko"]
    for path in CHAPTERS["ko"]:
        assert HANGUL.search(path.read_text(encoding="utf-8")), path
    index = (LEARN / "README.md").read_text(encoding="utf-8")
    for lang in LANGS:
        for path in CHAPTERS[lang]:
            assert f"{lang}/{path.name}" in index, path
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/learn/README.md" in readme and "docs/learn/ko/" in readme


def test_every_chapter_has_code_and_the_command_behind_its_numbers():
    for lang in LANGS:
        for path in CHAPTERS[lang]:
            text = path.read_text(encoding="utf-8")
            assert cells_with_outputs(path), f"{path} has no code cell"
            # jupytext sees every ```python block as a cell (none hidden in other markup)
            assert len(cells_with_outputs(path)) == text.count("```python\n"), path
            # the command that reproduces what the chapter quotes (or the reference it reads)
            assert "```console\n$ normkit " in text or "`normkit.reference`" in text, path


def test_chapter_images_exist():
    for lang in LANGS:
        for path in CHAPTERS[lang]:
            for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text(encoding="utf-8")):
                assert (path.parent / target).is_file(), f"{path}: missing image {target}"


@pytest.mark.parametrize(
    "path",
    [p for lang in LANGS for p in CHAPTERS[lang]],
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_chapter_cells_run_and_print_what_the_page_shows(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # cells may write files
    namespace: dict = {"__name__": "__main__"}
    for index, (source, expected) in enumerate(cells_with_outputs(path)):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(source, f"{path.name} cell {index}", "exec"), namespace)
        if expected is not None:
            assert out.getvalue() == expected, (
                f"{path.name} cell {index} printed:\n{out.getvalue()}"
            )
