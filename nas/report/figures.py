"""The report's Plotly figures, one function per section; plotly is imported inside each (lazily).

Every function takes the trained trials (``done``: complete, status trained, with values) as
:class:`~nas.search.records.TrialRecord` and returns a figure, or an HTML string when there is
nothing to draw. The proxy check and the prediction's figure live in nas.report.fidelity.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections import Counter
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.search.records import TrialRecord, is_trained, read_trials
from nas.search.usage import by_placement, placement_lines, time_by_phase, time_shares

__all__ = [
    "COSTS",
    "value",
    "history",
    "curves",
    "importances",
    "parallel",
    "pareto",
    "hypervolume",
    "top_vs_all",
    "time_figure",
    "time_text",
]

COSTS = (
    ("params", "params", 1),
    ("flops_per_token", "FLOPs/token", 1),
    ("kv_cache_bytes_per_token", "KV bytes/token", 1),
    ("tokens_per_second", "train tokens/s", -1),
)


def value(r: TrialRecord, i: int = 0) -> float:
    """The ``i``-th objective value of a trained trial."""
    if r.values is None:
        raise ValueError(f"trial {r.number} has no objective values; only trained trials are drawn")
    return r.values[i]


def history(done: list[TrialRecord], objective: str, minimize: bool) -> Any:
    import plotly.graph_objects as go

    ordered = sorted(done, key=lambda r: r.number)
    best, running = [], math.inf if minimize else -math.inf
    for r in ordered:
        running = min(running, value(r)) if minimize else max(running, value(r))
        best.append(running)
    fig = go.Figure(
        [
            go.Scattergl(
                x=[r.number for r in ordered],
                y=[value(r) for r in ordered],
                mode="markers",
                name=objective,
                text=[r.summary for r in ordered],
            ),
            go.Scatter(x=[r.number for r in ordered], y=best, mode="lines", name="best so far", line={"shape": "hv"}),
        ]
    )
    fig.update_layout(xaxis_title="trial", yaxis_title=objective, height=380, margin={"t": 20})
    _baseline_line(fig, done, objective)
    return fig


def _baseline_line(fig: Any, done: list[TrialRecord], objective: str, **where: Any) -> None:
    """A dashed horizontal line at the no-model baseline of ``objective``, when it is a task metric with one."""
    for r in done:
        if objective in r.task_baselines:
            text = f"baseline (no model): {r.baseline_predictors.get(objective, '')}"
            fig.add_hline(
                y=r.task_baselines[objective],
                line_dash="dash",
                line_color="#7f7f7f",
                annotation_text=text,
                annotation_position="bottom right",
                **where,
            )
            return


def curves(records: list[TrialRecord]) -> Any:
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


def importances(study: optuna.Study) -> Any:
    import plotly.graph_objects as go

    evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # no scikit-learn needed, unlike fANOVA
    trials = [t for t in read_trials(study)[0] if t.state == TrialState.COMPLETE and is_trained(t)]
    if len(trials) < 3:
        return "<p>Parameter importances need at least 3 completed trials.</p>"
    view = optuna.create_study(directions=study.directions)
    view.add_trials(trials)
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1  # PED-ANOVA: low is good
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        found = optuna.importance.get_param_importances(view, evaluator=evaluator, target=lambda t: sign * t.values[0])
    if not found:
        return "<p>No parameter is sampled in every completed trial, so importances are undefined.</p>"
    names = list(found)[::-1]
    fig = go.Figure(go.Bar(x=[found[n] for n in names], y=names, orientation="h"))
    fig.update_layout(
        xaxis_title="importance (PED-ANOVA) for the first objective", height=120 + 28 * len(names), margin={"t": 20}
    )
    return fig


def _knob_names(done: list[TrialRecord]) -> list[str]:
    """Architecture fields set in some trial that take more than one value across ``done``."""
    names: list[str] = []
    for r in done:
        for key, knob in r.arch.items():
            if key not in names and knob is not None:
                names.append(key)
    return [n for n in names if len({json.dumps(r.arch.get(n)) for r in done}) > 1]


def parallel(done: list[TrialRecord], objective: str) -> Any:
    import plotly.graph_objects as go

    dims: list[dict[str, Any]] = []
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
    values = [value(r) for r in done]
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


def pareto(done: list[TrialRecord], objective: str, minimize: bool) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, subplot_titles=[f"{objective} vs {label}" for _, label, _ in COSTS])
    for i, (key, label, sign) in enumerate(COSTS):
        row, col = i // 2 + 1, i % 2 + 1
        pts = [(r.metric(key), value(r), r) for r in done if math.isfinite(r.metric(key))]
        if not pts:
            continue
        fig.add_trace(
            go.Scattergl(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="markers",
                showlegend=False,
                marker={"size": 5, "color": "#1f77b4"},
                text=[f"trial {p[2].number}: {p[2].summary}" for p in pts],
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
    _baseline_line(fig, done, objective, row="all", col="all")
    fig.update_layout(height=720, margin={"t": 40})
    return fig


def hypervolume(done: list[TrialRecord], minimize: list[bool]) -> Any:
    """Hypervolume of the first two objectives after each completed trial (reference: worst seen x 1.1)."""
    import plotly.graph_objects as go

    ordered = sorted(done, key=lambda r: r.number)
    signs = [1 if m else -1 for m in minimize]
    pts = [(signs[0] * value(r, 0), signs[1] * value(r, 1)) for r in ordered]
    ref = [max(p[i] for p in pts) for i in (0, 1)]
    ref = [v + 0.1 * abs(v) + 1e-12 for v in ref]
    history_: list[float] = []
    seen: list[tuple[float, float]] = []
    for p in pts:
        seen.append(p)
        volume, prev_y = 0.0, ref[1]
        for x, y in _front(seen):
            volume += (ref[0] - x) * (prev_y - y)
            prev_y = y
        history_.append(volume)
    fig = go.Figure(go.Scatter(x=[r.number for r in ordered], y=history_, mode="lines+markers"))
    fig.update_layout(xaxis_title="trial", yaxis_title="hypervolume", height=340, margin={"t": 20})
    return fig


TOP_MIN = 3  # trials in the top 10 % before its knob distributions mean anything


def top_vs_all(done: list[TrialRecord], minimize: bool) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = _knob_names(done)
    if not names:
        return "<p>Every completed trial has the same knobs.</p>"
    if len(done) < TOP_MIN * 10:  # a "top 10 %" of one or two trials shows nothing but those trials
        need = TOP_MIN * 10
        return f"<p class='note'>not drawn: the top 10 % needs at least {need} trained trials ({len(done)} so far).</p>"
    ranked = sorted(done, key=lambda r: (1 if minimize else -1) * value(r))
    top = ranked[: math.ceil(len(ranked) * 0.1)]
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


# ---- proxy check ------------------------------------------------------------------------------
def time_figure(records: list[TrialRecord]) -> Any:
    """One horizontal bar: each phase's seconds summed over the trained trials, stacked, its share in
    the label and the hover; a note when no trial recorded its phases (a study older than them)."""
    import plotly.graph_objects as go

    seconds = time_by_phase(records)
    total = sum(seconds.values())
    if total <= 0:
        return "<p>No trained trial recorded the time of its phases.</p>"
    fig = go.Figure()
    for name, spent in seconds.items():
        share = 100 * spent / total
        fig.add_trace(
            go.Bar(
                x=[spent],
                y=["trained trials"],
                orientation="h",
                name=name,
                text=[f"{name} {share:.0f} %"],
                textposition="inside",
                hovertemplate=f"{name}: %{{x:,.1f}} s ({share:.1f} %)<extra></extra>",
            )
        )
    fig.update_layout(barmode="stack", xaxis_title="seconds over the trained trials", height=240, margin={"t": 20})
    return fig


def time_text(records: list[TrialRecord]) -> str:
    """The section's one line: the trial-minutes and the phases by share."""
    trained = [r for r in records if r.trained and r.phase_seconds]
    seconds = time_by_phase(trained)
    minutes = sum(seconds.values()) / 60
    text = f"<p>{minutes:,.1f} trial-minutes over {len(trained)} trained trials: {time_shares(seconds)}</p>"
    lines = placement_lines(by_placement(records))
    if lines:  # workers nas search started: which device each ran on, shared by how many
        text += "<p>Where the trials ran:</p><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"
    return text
