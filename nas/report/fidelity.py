"""The report's fidelity checks: do the cheap scores (zero-cost proxies, an early held-out loss, the
prediction at the target budget) rank the trials as the objective does, and the prediction's fit."""

from __future__ import annotations

import math
from typing import Any

from nas.proxy import LOW_RHO, ZERO_COST, Fidelity, fidelity
from nas.report.figures import value
from nas.search.records import TrialRecord

__all__ = ["PROXY_LABELS", "prediction", "proxy_scores", "proxy_text", "proxy_figure"]

PROXY_LABELS = {
    "predicted_val_loss": "prediction: held-out loss at the target budget",
    "non_embedding_params": "zero-cost: non-embedding params",
    "proxy.snip": "zero-cost: SNIP at initialisation",
    "proxy.grad_norm": "zero-cost: gradient norm at initialisation",
    "early": "short-trial score (held-out loss at the first eval)",
}


def proxy_scores(done: list[TrialRecord], minimize: bool) -> tuple[dict[str, list[float]], list[Fidelity]]:
    """Each proxy's scores and its Spearman and Kendall against final quality, with nas.proxy (as the
    benchmarks); scores and quality oriented so higher is better ("early" is the negated early loss)."""
    q = -1 if minimize else 1
    quality = [q * value(r) for r in done]
    scores = {name: [r.metric(name) for r in done] for name in ZERO_COST}
    scores = {k: v for k, v in scores.items() if any(math.isfinite(x) for x in v)}  # older studies lack some
    scores["early"] = [-_early_loss(r) for r in done]
    predicted = [-r.metric("predicted_val_loss") for r in done]
    if any(math.isfinite(x) for x in predicted) and any(v != p for v, p in zip(quality, predicted, strict=True)):
        scores["predicted_val_loss"] = predicted  # unless it is the objective itself
    return scores, fidelity(scores, quality)


def _interval(row: Fidelity) -> str:
    return (
        f" [90 % CI {row.low:.2f}, {row.high:.2f}]" if math.isfinite(row.low) else " (too few trials for an interval)"
    )


def proxy_text(rows: list[Fidelity]) -> tuple[str, list[str]]:
    """(an HTML list of the rank correlations, a warning for each weak proxy)."""
    lines, weak = [], []
    for row in rows:
        name = PROXY_LABELS[row.name]
        lines.append(
            f"<li>{name}: Spearman's rho = <b>{row.rho:.3f}</b>{_interval(row)}, Kendall's tau = {row.tau:.3f} "
            f"({row.n} trials)</li>"
            if math.isfinite(row.rho)
            else f"<li>{name}: rank correlation undefined (fewer than 3 trials or no spread)</li>"
        )
        if row.weak:
            weak.append(
                f"Low rank correlation for the {name}: rho = {row.rho:.2f} < {LOW_RHO}; "
                "its ranking is a weak guide to final quality."
            )
    return "<ul>" + "".join(lines) + "</ul>", weak


def proxy_figure(done: list[TrialRecord], scores: dict[str, list[float]], rows: list[Fidelity]) -> Any:
    """Final quality against each proxy, one panel per proxy."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = [f"{PROXY_LABELS[r.name].split(': ')[-1]} (rho {r.rho:.2f})" for r in rows]
    fig = make_subplots(rows=1, cols=len(rows), subplot_titles=titles)
    for col, row in enumerate(rows, start=1):
        negated = row.name in ("early", "predicted_val_loss")
        x = [-e for e in scores[row.name]] if negated else scores[row.name]
        fig.add_trace(go.Scattergl(x=x, y=[value(r) for r in done], mode="markers", showlegend=False), row=1, col=col)
        if not negated:
            fig.update_xaxes(type="log", row=1, col=col)
    fig.update_yaxes(title_text="final quality (first objective)", row=1, col=1)
    fig.update_layout(height=380, margin={"t": 40})
    return fig


def _early_loss(r: TrialRecord) -> float:
    for row in r.curve:
        if row[0] > 0 and math.isfinite(row[2]):
            return row[2]
    return math.nan


# ---- the prediction at the target budget ---------------------------------------------------------
def prediction(records: list[TrialRecord], target: Any) -> Any:
    """Each trained trial's annealed losses (its cool-downs and its end), the study's fit (nas.scaling, the
    rule of ``target``, the study protocol's nas.protocol.Target: the size trend with its own weight when it
    can be fitted, else each trial's own curve with the shared data exponent) refitted now on all of them
    (the trials the search's fit uses: completed and pruned), out to the target budget with the prediction
    there and its std; None when no trial has two points. A trial's stored ``predicted_val_loss`` (its
    objective value) used the trials trained before it."""
    import numpy as np
    import plotly.graph_objects as go

    from nas.scaling import StudyFit

    with_points = [r for r in records if r.trained and len(r.annealed) >= 2]
    if not with_points:
        return None
    fit = StudyFit.for_target([(r.metric("non_embedding_params"), r.annealed) for r in with_points], target)
    fig = go.Figure()
    for r in with_points:
        target, size = r.metric("target_tokens"), r.metric("non_embedding_params")
        xs = [p[0] for p in r.annealed]
        fig.add_trace(go.Scatter(x=xs, y=[p[1] for p in r.annealed], mode="markers", name=f"trial {r.number}"))
        if not math.isfinite(target):
            continue
        grid = np.geomspace(min(xs), max(target, max(xs)), 24)
        line = [fit.predict(r.annealed, size, float(d)) for d in grid]
        fig.add_trace(
            go.Scatter(
                x=grid,
                y=[p.value if p else None for p in line],
                mode="lines",
                showlegend=False,
                line={"dash": "dot", "width": 1},
                hoverinfo="skip",
            )
        )
        at = fit.predict(r.annealed, size, target)
        if at is not None:
            fig.add_trace(
                go.Scatter(
                    x=[target],
                    y=[at.value],
                    error_y={"type": "data", "array": [at.std]},
                    mode="markers",
                    marker={"symbol": "diamond"},
                    showlegend=False,
                    text=[f"trial {r.number}: {at.value:.4g} ± {at.std:.2g}"],
                )
            )
    fig.update_layout(
        title=fit.describe(),
        xaxis={"type": "log", "title": "training tokens"},
        yaxis={"title": "held-out loss (annealed)"},
        height=420,
        margin={"t": 50},
    )
    return fig


# ---- where the time went ---------------------------------------------------------------------------
