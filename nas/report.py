"""One offline HTML report of a study, for deciding which architecture to train for real.

plotly.js is embedded once for the whole page; every figure is a div that uses it. Sections:
summary and best-architecture card, optimisation history, learning curves, parameter importances,
parallel coordinates, Pareto fronts (quality vs each cost) with hypervolume history, top-10 % vs
all, proxy check (Spearman's rho), a sortable leaderboard and a failures table. A study with no
completed trial gives a report that says so.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.proxy import LOW_RHO, ZERO_COST, fidelity

__all__ = ["build_report", "Report"]

COSTS = (
    ("params", "params", 1),
    ("flops_per_token", "FLOPs/token", 1),
    ("kv_cache_bytes_per_token", "KV bytes/token", 1),
    ("tokens_per_second", "train tokens/s", -1),
)


@dataclass
class Record:
    number: int
    state: str
    status: str
    values: list[float] | None
    attrs: dict[str, Any]

    @property
    def arch(self) -> dict[str, Any]:
        return self.attrs.get("arch") or {}

    @property
    def curve(self) -> list[list[float]]:
        return self.attrs.get("curve") or []

    def metric(self, name: str) -> float:
        value = self.attrs.get(name, (self.attrs.get("metrics") or {}).get(name))
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan


@dataclass
class Report:
    path: Path
    figures: list[tuple[str, Any]] = field(default_factory=list)  # (title, plotly figure)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    proxy_html: str = ""


def _records(study: optuna.Study) -> list[Record]:
    return [
        Record(
            t.number,
            t.state.name.lower(),
            t.user_attrs.get("nas_status", t.state.name.lower()),
            list(t.values) if t.values else None,
            t.user_attrs,
        )
        for t in study.get_trials(deepcopy=False)
    ]


def build_report(study: optuna.Study, out: str | Path, png_dir: str | Path | None = None) -> Report:
    """Write the report to ``out``; with ``png_dir`` also static PNGs (kaleido + Chromium)."""
    import plotly.offline

    started = time.perf_counter()
    report = Report(Path(out))
    records = _records(study)
    done = [r for r in records if r.state == "complete" and r.status == "trained" and r.values]
    objectives = list(study.user_attrs.get("nas.objectives", {})) or [
        f"objective {i}" for i in range(len(study.directions))
    ]
    minimize = [d == optuna.study.StudyDirection.MINIMIZE for d in study.directions]
    sections = [_summary(study, records, done, objectives, minimize)]
    if done:
        builders = [
            ("Optimisation history", lambda: _history(done, objectives[0], minimize[0])),
            ("Learning curves (held-out loss vs tokens)", lambda: _curves(records)),
            ("Parameter importances", lambda: _importances(study)),
            ("Parallel coordinates", lambda: _parallel(done, objectives[0])),
            ("Pareto fronts: quality vs cost", lambda: _pareto(done, objectives[0], minimize[0])),
            ("Hypervolume history", lambda: _hypervolume(done, minimize) if len(minimize) == 2 else None),
            ("Top 10 % vs all: knob distributions", lambda: _top_vs_all(done, minimize[0])),
            ("Proxy check", lambda: _proxy(done, minimize[0], report)),
        ]
        for title, make in builders:
            try:
                figure = make()
            except Exception as exc:  # one section failing must not lose the rest of the report
                sections.append(
                    _section(title, f"<p class='warn'>could not draw this section: {html.escape(str(exc))}</p>")
                )
                continue
            if figure is None:
                continue
            if isinstance(figure, str):
                sections.append(_section(title, figure))
                continue
            report.figures.append((title, figure))
            extra = ""
            if title == "Proxy check":
                extra = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in report.warnings) + report.proxy_html
            sections.append(
                _section(
                    title,
                    figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}) + extra,
                )
            )
    else:
        sections.append(
            _section(
                "No completed trial",
                "<p>This study has no completed trial yet, so there is "
                "nothing to rank or plot. Run <code>nas search</code> to continue it.</p>",
            )
        )
    sections.append(_leaderboard(done, records, objectives, minimize))
    sections.append(_failures(records))
    anchors = re.findall(r"<section id='([^']+)'><h2>(.*?)</h2>", "".join(sections))
    contents = " · ".join(f"<a href='#{anchor}'>{title}</a>" for anchor, title in anchors)
    page = _PAGE.format(
        title=html.escape(f"nas report: {study.study_name}"),
        plotly=plotly.offline.get_plotlyjs(),
        body=f"<nav>{contents}</nav>\n" + "\n".join(sections),
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    report.path.parent.mkdir(parents=True, exist_ok=True)
    report.path.write_text(page)
    if png_dir is not None:
        _write_pngs(report, Path(png_dir))
    report.seconds = time.perf_counter() - started
    return report


# ---- sections -------------------------------------------------------------------------------
def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")[:40]


def _section(title: str, body: str) -> str:
    return f"<section id='{_slug(title)}'><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape(str(value))


def _best(done: list[Record], minimize: list[bool]) -> Record | None:
    if not done:
        return None
    sign = 1 if minimize[0] else -1
    return min(done, key=lambda r: sign * r.values[0])


def _summary(study, records, done, objectives, minimize) -> str:
    attrs = study.user_attrs
    states = Counter(r.status if r.status in ("duplicate", "infeasible", "interrupted") else r.state for r in records)
    tokens = sum(r.metric("tokens_trained") for r in records if math.isfinite(r.metric("tokens_trained")))
    seconds = sum(float(r.attrs.get("wall_seconds", 0) or 0) for r in records)
    rows = [
        ("study", study.study_name),
        ("space", f"{attrs.get('nas.space_name', '?')} ({attrs.get('nas.space_hash', '?')})"),
        ("protocol", f"{attrs.get('nas.protocol_name', '?')} ({attrs.get('nas.protocol_hash', '?')})"),
        ("objectives", ", ".join(f"{o} ({'min' if m else 'max'})" for o, m in zip(objectives, minimize, strict=True))),
        ("budget spent", f"{tokens:,.0f} training tokens, {seconds / 60:.1f} trial-minutes"),
        ("trials", ", ".join(f"{n} {s}" for s, n in sorted(states.items()))),
        ("nas version", attrs.get("nas.version", "?")),
    ]
    body = "<table class='kv'>" + "".join(f"<tr><th>{k}</th><td>{_fmt(v)}</td></tr>" for k, v in rows) + "</table>"
    best = _best(done, minimize)
    if best is None:
        return _section("Summary", body + "<p class='warn'>No completed trial yet.</p>")
    knobs = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in best.arch.items() if v is not None
    )
    counts = [
        (k, best.attrs.get(k))
        for k in ("params", "non_embedding_params", "flops_per_token", "kv_cache_bytes_per_token")
    ]
    metrics = [(k, v) for k, v in (best.attrs.get("metrics") or {}).items() if k not in dict(counts)]
    shown = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in counts + metrics)
    card = (
        f"<div class='card'><h3>Best: trial {best.number} — {html.escape(best.attrs.get('summary', ''))}</h3>"
        f"<div class='cols'><table class='kv'>{knobs}</table><table class='kv'>{shown}</table></div>"
        f"<p>Export it: <code>nas export {html.escape(study.study_name)} --trial {best.number} "
        f"-o exports/{html.escape(study.study_name)}</code></p></div>"
    )
    return _section("Summary", body + card)


def _history(done: list[Record], objective: str, minimize: bool) -> Any:
    import plotly.graph_objects as go

    ordered = sorted(done, key=lambda r: r.number)
    best, running = [], math.inf if minimize else -math.inf
    for r in ordered:
        running = min(running, r.values[0]) if minimize else max(running, r.values[0])
        best.append(running)
    fig = go.Figure(
        [
            go.Scattergl(
                x=[r.number for r in ordered],
                y=[r.values[0] for r in ordered],
                mode="markers",
                name=objective,
                text=[r.attrs.get("summary", "") for r in ordered],
            ),
            go.Scatter(x=[r.number for r in ordered], y=best, mode="lines", name="best so far", line={"shape": "hv"}),
        ]
    )
    fig.update_layout(xaxis_title="trial", yaxis_title=objective, height=380, margin={"t": 20})
    return fig


def _curves(records: list[Record]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for state, colour in (("complete", "#1f77b4"), ("pruned", "#d62728"), ("fail", "#7f7f7f")):
        xs: list[float | None] = []
        ys: list[float | None] = []
        ends_x, ends_y = [], []
        for r in records:
            if r.state != state or not r.curve:
                continue
            xs += [row[1] for row in r.curve] + [None]
            ys += [row[2] for row in r.curve] + [None]
            ends_x.append(r.curve[-1][1])
            ends_y.append(r.curve[-1][2])
        if not ends_x:
            continue
        fig.add_trace(
            go.Scattergl(
                x=xs, y=ys, mode="lines", name=state, line={"color": colour, "width": 1}, opacity=0.6, connectgaps=False
            )
        )
        if state != "complete":
            fig.add_trace(
                go.Scattergl(
                    x=ends_x,
                    y=ends_y,
                    mode="markers",
                    name=f"{state}: stopped here",
                    marker={"symbol": "x", "color": colour, "size": 8},
                )
            )
    fig.update_layout(xaxis_title="training tokens", yaxis_title="held-out loss", height=420, margin={"t": 20})
    return fig


def _importances(study: optuna.Study) -> Any:
    import plotly.graph_objects as go

    evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # no scikit-learn needed, unlike fANOVA
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("nas_status") == "trained"
    ]
    if len(trials) < 3:
        return "<p>Parameter importances need at least 3 completed trials.</p>"
    view = optuna.create_study(directions=study.directions)
    view.add_trials(trials)
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1  # PED-ANOVA: low is good
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        importances = optuna.importance.get_param_importances(
            view, evaluator=evaluator, target=lambda t: sign * t.values[0]
        )
    if not importances:
        return "<p>No parameter is sampled in every completed trial, so importances are undefined.</p>"
    names = list(importances)[::-1]
    fig = go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h"))
    fig.update_layout(
        xaxis_title="importance (PED-ANOVA) for the first objective", height=120 + 28 * len(names), margin={"t": 20}
    )
    return fig


def _knob_names(done: list[Record]) -> list[str]:
    names: list[str] = []
    for r in done:
        for key, value in r.arch.items():
            if key not in names and value is not None:
                names.append(key)
    return [n for n in names if len({json.dumps(r.arch.get(n)) for r in done}) > 1]


def _parallel(done: list[Record], objective: str) -> Any:
    import plotly.graph_objects as go

    dims = []
    for name in _knob_names(done):
        raw = [r.arch.get(name) for r in done]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw if v is not None):
            dims.append({"label": name, "values": [math.nan if v is None else v for v in raw]})
        else:
            labels = sorted({str(v) for v in raw})
            dims.append(
                {
                    "label": name,
                    "values": [labels.index(str(v)) for v in raw],
                    "tickvals": list(range(len(labels))),
                    "ticktext": labels,
                }
            )
    values = [r.values[0] for r in done]
    dims.append({"label": objective, "values": values})
    fig = go.Figure(go.Parcoords(line={"color": values, "colorscale": "Viridis", "showscale": True}, dimensions=dims))
    fig.update_layout(height=420, margin={"t": 40, "l": 60, "r": 60})
    return fig


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The 2-D Pareto front of (cost, loss) points, both minimised, sorted by cost."""
    front, best = [], math.inf
    for cost, loss in sorted(points):
        if loss < best:
            front.append((cost, loss))
            best = loss
    return front


def _pareto(done: list[Record], objective: str, minimize: bool) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, subplot_titles=[f"{objective} vs {label}" for _, label, _ in COSTS])
    for i, (key, label, sign) in enumerate(COSTS):
        row, col = i // 2 + 1, i % 2 + 1
        pts = [(r.metric(key), r.values[0], r) for r in done if math.isfinite(r.metric(key))]
        if not pts:
            continue
        fig.add_trace(
            go.Scattergl(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="markers",
                showlegend=False,
                marker={"size": 5, "color": "#1f77b4"},
                text=[f"trial {p[2].number}: {p[2].attrs.get('summary', '')}" for p in pts],
            ),
            row=row,
            col=col,
        )
        q = 1 if minimize else -1
        front = _front([(sign * c, q * v) for c, v, _ in pts])
        fig.add_trace(
            go.Scatter(
                x=[sign * c for c, _ in front],
                y=[q * v for _, v in front],
                mode="lines+markers",
                line={"shape": "hv", "color": "#d62728"},
                showlegend=False,
            ),
            row=row,
            col=col,
        )
        fig.update_xaxes(title_text=label, type="log" if key != "tokens_per_second" else "linear", row=row, col=col)
    fig.update_layout(height=720, margin={"t": 40})
    return fig


def _hypervolume(done: list[Record], minimize: list[bool]) -> Any:
    """Hypervolume of the first two objectives after each completed trial (reference: worst seen x 1.1)."""
    import plotly.graph_objects as go

    ordered = sorted(done, key=lambda r: r.number)
    signs = [1 if m else -1 for m in minimize]
    pts = [(signs[0] * r.values[0], signs[1] * r.values[1]) for r in ordered]
    ref = [max(p[i] for p in pts) for i in (0, 1)]
    ref = [v + 0.1 * abs(v) + 1e-12 for v in ref]
    history, seen = [], []
    for p in pts:
        seen.append(p)
        front = _front(seen)
        volume, prev_y = 0.0, ref[1]
        for x, y in front:
            volume += (ref[0] - x) * (prev_y - y)
            prev_y = y
        history.append(volume)
    fig = go.Figure(go.Scatter(x=[r.number for r in ordered], y=history, mode="lines+markers"))
    fig.update_layout(xaxis_title="trial", yaxis_title="hypervolume", height=340, margin={"t": 20})
    return fig


def _top_vs_all(done: list[Record], minimize: bool) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = _knob_names(done)
    if not names:
        return "<p>Every completed trial has the same knobs.</p>"
    ranked = sorted(done, key=lambda r: (1 if minimize else -1) * r.values[0])
    top = ranked[: max(1, math.ceil(len(ranked) * 0.1))]
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    for i, name in enumerate(names):
        row, col = i // cols + 1, i % cols + 1
        for group, label, colour in ((done, "all", "#9ecae1"), (top, "top 10 %", "#d62728")):
            counts = Counter(str(r.arch.get(name)) for r in group)
            keys = sorted({str(r.arch.get(name)) for r in done}, key=_natural)
            fig.add_trace(
                go.Bar(
                    x=keys,
                    y=[counts[k] / len(group) for k in keys],
                    name=label,
                    marker_color=colour,
                    showlegend=i == 0,
                    legendgroup=label,
                ),
                row=row,
                col=col,
            )
    fig.update_layout(height=260 * rows, barmode="group", margin={"t": 40})
    return fig


def _natural(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


PROXY_LABELS = {
    "non_embedding_params": "zero-cost: non-embedding params",
    "proxy.snip": "zero-cost: SNIP at initialisation",
    "proxy.grad_norm": "zero-cost: gradient norm at initialisation",
    "early": "short-trial score (held-out loss at the first eval)",
}


def _proxy(done: list[Record], minimize: bool, report: Report) -> Any:
    """Spearman and Kendall of each proxy against final quality, with nas.proxy (as the benchmarks)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    q = -1 if minimize else 1  # oriented: higher = better
    quality = [q * r.values[0] for r in done]
    scores = {name: [r.metric(name) for r in done] for name in ZERO_COST}
    scores = {k: v for k, v in scores.items() if any(math.isfinite(x) for x in v)}  # older studies lack some
    scores["early"] = [-_early_loss(r) for r in done]
    rows = fidelity(scores, quality)
    lines = []
    for row in rows:
        name = PROXY_LABELS[row.name]
        lines.append(
            f"<li>{name}: Spearman's rho = <b>{row.rho:.3f}</b>, Kendall's tau = {row.tau:.3f} ({row.n} trials)</li>"
            if math.isfinite(row.rho)
            else f"<li>{name}: rank correlation undefined (fewer than 3 trials or no spread)</li>"
        )
        if row.weak:
            report.warnings.append(
                f"Low rank correlation for the {name}: rho = {row.rho:.2f} < {LOW_RHO}; "
                "its ranking is a weak guide to final quality."
            )
    report.proxy_html = "<ul>" + "".join(lines) + "</ul>"
    titles = [f"{PROXY_LABELS[r.name].split(': ')[-1]} (rho {r.rho:.2f})" for r in rows]
    fig = make_subplots(rows=1, cols=len(rows), subplot_titles=titles)
    for col, row in enumerate(rows, start=1):
        x = scores[row.name] if row.name != "early" else [-e for e in scores["early"]]
        fig.add_trace(
            go.Scattergl(x=x, y=[r.values[0] for r in done], mode="markers", showlegend=False), row=1, col=col
        )
        if row.name != "early":
            fig.update_xaxes(type="log", row=1, col=col)
    fig.update_yaxes(title_text="final quality (first objective)", row=1, col=1)
    fig.update_layout(height=380, margin={"t": 40})
    return fig


def _early_loss(r: Record) -> float:
    for row in r.curve:
        if row[0] > 0 and math.isfinite(row[2]):
            return row[2]
    return math.nan


def _leaderboard(done, records, objectives, minimize) -> str:
    sign = 1 if minimize and minimize[0] else -1
    ranked = sorted(done, key=lambda r: sign * r.values[0])
    metric_names: list[str] = []
    for r in ranked:
        for key in r.attrs.get("metrics") or {}:
            if key not in metric_names and key not in objectives and "." in key:
                metric_names.append(key)
    header = [
        "rank",
        "trial",
        "architecture",
        "params",
        "FLOPs/token",
        "KV bytes/token",
        "tokens/s",
        *objectives,
        *metric_names,
    ]
    rows = []
    for i, r in enumerate(ranked):
        cells = [
            i + 1,
            r.number,
            r.attrs.get("summary", ""),
            r.attrs.get("params"),
            r.metric("flops_per_token"),
            r.metric("kv_cache_bytes_per_token"),
            r.metric("tokens_per_second"),
            *r.values,
            *[r.metric(m) for m in metric_names],
        ]
        rows.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th onclick='sortTable(this)'>{html.escape(h)}</th>" for h in header)
    table = (
        f"<p>{len(ranked)} completed trials; click a column to sort.</p><div class='scroll'>"
        f"<table class='sortable' id='leaderboard-table'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
        "</tbody></table></div>"
    )
    return _section("Leaderboard", table)


def _failures(records: list[Record]) -> str:
    failed = [r for r in records if r.state in ("fail", "pruned") and r.status not in ("infeasible", "duplicate")]
    infeasible = Counter(
        str(r.attrs.get("cause", "infeasible")).split(" (")[0] for r in records if r.status == "infeasible"
    )
    rows = "".join(
        f"<tr><td>{r.number}</td><td>{r.state}</td><td>{html.escape(r.attrs.get('summary', ''))}</td>"
        f"<td>{html.escape(str(r.attrs.get('cause', '')))}</td></tr>"
        for r in failed
    )
    body = (
        (
            f"<div class='scroll'><table class='sortable'><thead><tr><th onclick='sortTable(this)'>trial</th>"
            f"<th onclick='sortTable(this)'>state</th><th>architecture</th><th>cause</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )
        if failed
        else "<p>No failed or pruned trial.</p>"
    )
    if infeasible:
        body += (
            "<h3>Infeasible samples (never trained)</h3><ul>"
            + "".join(f"<li>{n}× {html.escape(reason)}</li>" for reason, n in infeasible.most_common())
            + "</ul>"
        )
    return _section("Failures and stopped trials", body)


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
        figure.write_image(folder / f"{i:02d}-{_slug(title)}.png", width=1100, height=figure.layout.height or 500)


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
