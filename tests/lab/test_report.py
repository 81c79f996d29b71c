"""The HTML report: self-contained (parsed and checked); test_browser.py opens it in Chromium."""

from __future__ import annotations

import pytest

from normkit.lab import report
from normkit.lab.errors import LabError

from .helpers import check_report, run_small


@pytest.fixture(scope="module")
def ics_run(tmp_path_factory):
    from normkit.lab.runner import quiet

    out = tmp_path_factory.mktemp("ics")
    with quiet():
        run_small("ics", out)
    return out


def test_report_is_self_contained(ics_run):
    parsed = check_report(ics_run / "report.html", ["ics.png"])
    text = "".join(parsed.text)
    assert "Environment" in text and "torch" in text and "Parameters" in text
    assert '"steps": 30' in text  # the config is recorded


def test_report_escapes_text(tmp_path, ics_run):
    import json
    import shutil as sh

    run = tmp_path / "run"
    sh.copytree(ics_run, run)
    results = json.loads((run / "results.json").read_text())
    results["headline"] = "<script>alert(1)</script>"
    (run / "results.json").write_text(json.dumps(results))
    html = report.render([run])
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_report_missing_figure(tmp_path, ics_run):
    import shutil as sh

    run = tmp_path / "run"
    sh.copytree(ics_run, run)
    (run / "ics.png").unlink()
    with pytest.raises(LabError, match="cannot read figure"):
        report.render([run])
