"""One self-contained ``report.html`` from one or more run directories.

Reads each directory's ``results.json`` and PNGs; images are embedded as base64
``data:`` URIs and there is no external stylesheet or script, so the file can be mailed
or opened offline. Parameters (the config), timing and the environment are recorded.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from normkit.lab.errors import LabError
from normkit.lab.i18n import DEFAULT, LANGUAGES, tr

# Korean pages name the common Korean system fonts before the generic family.
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,"Noto Sans CJK KR","Noto Sans KR",
"Apple SD Gothic Neo","Malgun Gothic",NanumGothic,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd}
.headline{font-size:1.15em;background:#eef5fb;border-left:4px solid #0072B2;padding:.5em .8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555} .explain{margin:.3em 0 1.2em} details{margin:.6em 0} pre{background:#f7f7f7;padding:.6em;
overflow-x:auto;font-size:.85em} .muted{color:#666;font-size:.9em}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(_cell(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(path: Path) -> str:
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as exc:
        raise LabError(f"cannot read figure {path}: {exc.strerror or exc}") from None
    return f"data:image/png;base64,{data}"


def load_results(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "results.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"{run_dir} has no results.json: is it a lab run directory?") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise LabError(f"cannot read {path}: {exc}") from None


def expand_run_dirs(path: str | Path) -> list[Path]:
    """``path`` itself for an experiment's run directory; its experiments' directories for
    the output of ``normkit lab all`` (whose ``results.json`` lists them)."""
    path = Path(path)
    results = load_results(path)
    if "experiments" in results:
        return [path / entry["experiment"] for entry in results["experiments"]]
    return [path]


def _language(results: dict[str, Any]) -> str:
    """The language a run's texts were written in (runs from before ``lang``: English)."""
    lang = results.get("lang", DEFAULT)
    return lang if lang in LANGUAGES else DEFAULT


def _section(run_dir: Path, results: dict[str, Any], level: int) -> str:
    h = f"h{level}"
    lang = _language(results)
    parts = [
        f'<section id="{_esc(results["experiment"])}">',
        f"<{h}>{_esc(results['title'])} <span class='muted'>({_esc(results['experiment'])})"
        f"</span></{h}>",
        f"<p class='headline'>{_esc(results['headline'])}</p>",
        _table(results["summary"]["columns"], results["summary"]["rows"]),
    ]
    for fig in results["figures"]:
        parts.append(
            f'<figure><img src="{_image(Path(run_dir) / fig["file"])}" '
            f'alt="{_esc(fig["caption"])}" data-file="{_esc(fig["file"])}">'
            f"<figcaption>{_esc(fig['caption'])}</figcaption></figure>"
        )
        if fig.get("explanation"):
            parts.append(
                f"<p class='explain'><strong>{_esc(tr('report.reading', lang=lang))}</strong> "
                f"{_esc(fig['explanation'])}</p>"
            )
    if results.get("notes"):
        parts.append(f"<h{level + 1}>{_esc(tr('report.notes', lang=lang))}</h{level + 1}>")
        parts.append("<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in results["notes"]) + "</ul>")
    seconds = tr("report.time", lang=lang, seconds=f"{results['seconds']:.1f}")
    parts.append(f"<p class='muted'>{_esc(seconds)}</p>")
    config = json.dumps(results["config"], indent=2)
    parts.append(
        f"<details><summary>{_esc(tr('report.parameters', lang=lang))}</summary>"
        f"<pre>{_esc(config)}</pre></details>"
    )
    parts.append("</section>")
    return "\n".join(parts)


def render(run_dirs: list[Path]) -> str:
    """The HTML page for ``run_dirs`` (one section each)."""
    loaded = [(Path(d), load_results(Path(d))) for d in run_dirs]
    if not loaded:
        raise LabError("no runs to report")
    single = len(loaded) == 1
    lang = _language(loaded[0][1])
    title = (
        tr("report.title_one", lang=lang, name=loaded[0][1]["experiment"])
        if single
        else tr("report.title_all", lang=lang)
    )
    date = loaded[0][1]["environment"].get("date_utc", "")
    body = [
        f"<h1>{_esc(title)}</h1>",
        f"<p class='muted'>{_esc(tr('report.run_at', lang=lang, date=date))}</p>",
    ]
    if not single:
        rows = [[r["experiment"], r["headline"], f"{r['seconds']:.1f} s"] for _, r in loaded]
        columns = [tr(f"report.col_{c}", lang=lang) for c in ("experiment", "headline", "time")]
        body.append(_table(columns, rows))
    body += [_section(d, r, 2) for d, r in loaded]
    env = loaded[0][1]["environment"]
    body.append(f"<h2>{_esc(tr('report.environment', lang=lang))}</h2>")
    body.append(_table(["", tr("report.col_value", lang=lang)], [[k, v] for k, v in env.items()]))
    return (
        f"<!DOCTYPE html>\n<html lang='{lang}'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(path: Path, run_dirs: list[Path]) -> Path:
    """Render ``run_dirs`` into ``path``; returns the path."""
    path = Path(path)
    path.write_text(render(run_dirs), encoding="utf-8")
    return path
