"""The report page: :func:`build_report` reads the study, draws every section into one HTML file
(plotly.js embedded once) and, on request, writes each figure as a PNG."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from nas.errors import NasInputError
from nas.report import fidelity, figures, tables
from nas.search.ranking import leaderboard, study_target
from nas.search.records import TrialRecord, study_records
from nas.search.storage import study_info

__all__ = ["build_report", "check_report_path", "Report"]

TIME_TITLE = "Where the time went"


@dataclass
class Report:
    path: Path
    figures: list[tuple[str, Any]] = field(default_factory=list)  # (title, plotly figure)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    proxy_html: str = ""


def check_report_path(path: str | Path, flag: str) -> Path:
    """``path`` when the report may be written there: a new file in a folder that exists or can be made,
    an empty file, or an earlier report (overwritten); else a NasInputError naming ``flag`` and the path,
    and nothing is touched: a folder, a path under a file, or a file that is not a report."""
    from nas.export import check_output_path

    path = check_output_path(path, flag, file=True)
    try:
        if path.is_dir():
            raise NasInputError(flag, f"{path}: is a folder; give the report's file name, e.g. {path / 'report.html'}")
        if path.is_file() and path.stat().st_size and REPORT_MARK not in _head(path):
            raise NasInputError(flag, f"{path}: exists and is not a nas report; remove it or give another file name")
    except OSError as exc:  # a name too long, a file that cannot be read
        raise NasInputError(flag, f"{path}: not a usable file name ({exc.strerror or exc})") from None
    return path


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4096)


def build_report(study: optuna.Study, out: str | Path, png_dir: str | Path | None = None) -> Report:
    """Write the report to ``out``; with ``png_dir`` also static PNGs (kaleido + Chromium)."""
    check_report_path(out, "--out")
    started = time.perf_counter()
    report = Report(Path(out))
    info = study_info(study)
    records = study_records(study)
    done = [r for r in records if r.state == "complete" and r.usable and r.values]  # damaged ones: failures table
    ranked = [r for r in leaderboard(study) if r.rank is not None]
    objectives = info.objectives or [f"objective {i}" for i in range(len(study.directions))]
    sections = [tables.summary(info, records, ranked[0] if ranked else None, objectives)]
    if done:
        sections += _figure_sections(study, report, records, done, objectives, info.minimize)
    else:
        sections.append(
            tables.section(
                "No completed trial",
                "<p>This study has no completed trial yet, so there is "
                "nothing to rank or plot. Run <code>nas search</code> to continue it.</p>",
            )
        )
    sections.append(tables.leaderboard(ranked, objectives))
    sections.append(tables.failures(records))
    report.path.parent.mkdir(parents=True, exist_ok=True)
    report.path.write_text(_page(study.study_name, sections))
    if png_dir is not None:
        _write_pngs(report, Path(png_dir))
    report.seconds = time.perf_counter() - started
    return report


def _figure_sections(
    study: optuna.Study,
    report: Report,
    records: list[TrialRecord],
    done: list[TrialRecord],
    objectives: list[str],
    minimize: list[bool],
) -> list[str]:
    """One section per figure; a figure that fails becomes a warning in its section, not a lost report."""
    builders: list[tuple[str, Callable[[], Any]]] = [
        ("Optimisation history", lambda: figures.history(done, objectives[0], minimize[0])),
        ("Learning curves (held-out loss vs tokens)", lambda: figures.curves(records)),
        ("Parameter importances", lambda: figures.importances(study)),
        ("Parallel coordinates", lambda: figures.parallel(done, objectives[0])),
        ("Pareto fronts: quality vs cost", lambda: figures.pareto(done, objectives[0], minimize[0])),
        ("Hypervolume history", lambda: figures.hypervolume(done, minimize) if len(minimize) == 2 else None),
        ("Top 10 % vs all: knob distributions", lambda: figures.top_vs_all(done, minimize[0])),
        ("Prediction at the target budget", lambda: fidelity.prediction(records, study_target(study))),
        ("Proxy check", lambda: _proxy(done, minimize[0], report)),
        (TIME_TITLE, lambda: figures.time_figure(records)),
    ]
    sections = []
    for title, make in builders:
        try:
            figure = make()
        except Exception as exc:  # one section failing must not lose the rest of the report
            warning = f"<p class='warn'>could not draw this section: {html.escape(str(exc))}</p>"
            sections.append(tables.section(title, warning))
            continue
        if figure is None:  # said, not silently left out: the reader knows why the section is empty
            note = f"<p class='note'>not drawn: {html.escape(ABSENT.get(title, 'too few trained trials yet'))}</p>"
            sections.append(tables.section(title, note))
            continue
        if isinstance(figure, str):
            sections.append(tables.section(title, figure))
            continue
        report.figures.append((title, figure))
        extra = ""
        if title == "Proxy check":
            extra = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in report.warnings) + report.proxy_html
        elif title == TIME_TITLE:
            extra = figures.time_text(records)
        div = figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        sections.append(tables.section(title, div + extra))
    return sections


ABSENT = {  # why a section has nothing to draw
    "Hypervolume history": "it needs a study with exactly two objectives",
    "Prediction at the target budget": (
        "no trial has two annealed points (a WSD schedule with pretrain.schedule.cooldowns gives them)"
    ),
    "Pareto fronts: quality vs cost": "no trained trial has a finite objective and its costs yet",
}


def _proxy(done: list[TrialRecord], minimize: bool, report: Report) -> Any:
    """The proxy-check figure; its rank correlations go to ``report.proxy_html``, weak ones to warnings."""
    scores, rows = fidelity.proxy_scores(done, minimize)
    report.proxy_html, weak = fidelity.proxy_text(rows)
    report.warnings += weak
    return fidelity.proxy_figure(done, scores, rows)


def _page(study_name: str, sections: list[str]) -> str:
    import plotly.offline

    anchors = re.findall(r"<section id='([^']+)'><h2>(.*?)</h2>", "".join(sections))
    contents = " · ".join(f"<a href='#{anchor}'>{title}</a>" for anchor, title in anchors)
    return _PAGE.format(
        title=html.escape(f"nas report: {study_name}"),
        plotly=plotly.offline.get_plotlyjs(),
        body=f"<nav>{contents}</nav>\n" + "\n".join(sections),
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
    )


def _write_pngs(report: Report, folder: Path) -> None:
    import os
    import shutil

    browser = (
        os.environ.get("BROWSER_PATH")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )
    try:
        import kaleido  # noqa: F401
    except ImportError:
        report.warnings.append("PNG export needs kaleido: pip install 'nas[png]'")
        return
    if browser is None:
        report.warnings.append("PNG export needs a Chromium: apt-get install chromium (or set BROWSER_PATH)")
        return
    os.environ.setdefault("BROWSER_PATH", browser)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (title, figure) in enumerate(report.figures):
        figure.write_image(folder / f"{i:02d}-{tables.slug(title)}.png", width=1100, height=figure.layout.height or 500)


REPORT_MARK = b"<title>nas report: "  # how an earlier report is known (its first bytes)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>window.__nasErrors = [];
window.addEventListener('error', function (e) {{
  window.__nasErrors.push(String(e.message));
  var box = document.getElementById('js-errors'); if (box) box.textContent = window.__nasErrors.join('\\n');
}});</script>
<script type="text/javascript">{plotly}</script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
section {{ margin-bottom: 2.5em; }} h2 {{ border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} td, th {{ padding: 2px 8px; border-bottom: 1px solid #eee; }}
table.kv th {{ text-align: left; color: #555; }} .cols {{ display: flex; gap: 3em; }}
.card {{ border: 1px solid #ccc; border-radius: 6px; padding: 0.5em 1em; background: #fafafa; }}
.warn {{ color: #b35900; font-weight: bold; }} .scroll {{ max-height: 600px; overflow: auto; }}
th[onclick] {{ cursor: pointer; text-decoration: underline dotted; }}
</style></head><body>
<h1>{title}</h1><p>generated {generated}</p>
<div id="js-errors" style="color:red"></div>
{body}
<script>
function sortTable(th) {{
  var table = th.closest('table'), index = Array.prototype.indexOf.call(th.parentNode.children, th);
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  function key(row) {{ var t = row.cells[index].textContent.replace(/,/g, ''); var n = parseFloat(t);
    return isNaN(n) ? t : n; }}
  rows.sort(function (a, b) {{ var x = key(a), y = key(b); if (x === y) return 0;
    return (x < y ? -1 : 1) * (asc ? 1 : -1); }});
  rows.forEach(function (r) {{ body.appendChild(r); }});
}}
</script></body></html>
"""
