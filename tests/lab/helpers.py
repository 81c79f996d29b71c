"""Checks shared by the lab tests: run an experiment small, validate its files and report."""

from __future__ import annotations

import base64
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

from normkit.lab import registry, runner

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_small(name: str, out: Path, lang: str | None = None, **overrides):
    """The experiment's smoke config (plus overrides) run into ``out``, in ``lang``."""
    cfg = registry.get(name).config(smoke=True, **overrides)
    return runner.run_experiment(name, cfg, out, lang=lang)


class ReportParser(HTMLParser):
    """Collects <img> attributes, external references and the text of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.external: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs)
        for key in ("src", "href"):
            value = attrs.get(key)
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)

    def handle_data(self, data):
        self.text.append(data)


def check_report(path: Path, expected_figures: list[str]) -> ReportParser:
    """Parse ``path``: every image an embedded PNG data URI, the expected figures present,
    nothing loaded from outside the file."""
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.tags[:1] == ["html"] or "html" in parser.tags
    assert not parser.external, f"external references: {parser.external}"
    assert "script" not in parser.tags and "link" not in parser.tags
    files = [img.get("data-file") for img in parser.images]
    for name in expected_figures:
        assert name in files, f"{name} missing from {path} (has {files})"
    for img in parser.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix), img["src"][:40]
        data = base64.b64decode(img["src"][len(prefix) :], validate=True)
        assert data.startswith(PNG_SIGNATURE) and len(data) > 2000
        assert img.get("alt")
    return parser


def check_run_dir(out: Path, name: str, figures: list[str]) -> dict:
    """The files every run writes; returns results.json."""
    for file in ("config.json", "results.json", "results.csv", "report.html", *figures):
        assert (out / file).is_file(), f"{file} missing in {out}"
    config = json.loads((out / "config.json").read_text())
    assert config["experiment"] == name
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == name and results["headline"]
    assert [f["file"] for f in results["figures"]] == figures
    assert results["config"]["steps"] == config["steps"]
    assert results["environment"]["torch"] and results["seconds"] >= 0
    assert len(results["summary"]["rows"]) >= 1
    for row in results["summary"]["rows"]:
        assert len(row) == len(results["summary"]["columns"])
    with open(out / "results.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) >= 1
    for figure in figures:
        assert (out / figure).read_bytes().startswith(PNG_SIGNATURE)
    text = check_report(out / "report.html", figures)
    assert results["headline"] in "".join(text.text)
    return results
