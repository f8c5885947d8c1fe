"""The report's HTML sections that are tables: summary with the best-architecture card, the
sortable leaderboard and the failures; and the helpers every section uses (``section``, ``fmt``)."""

from __future__ import annotations

import html
import math
from collections import Counter
from typing import Any

from nas.search.ranking import ties_line
from nas.search.records import COUNT_KEYS, TrialRecord, baselines_line
from nas.search.storage import StudyInfo

__all__ = ["slug", "section", "fmt", "summary", "leaderboard", "failures"]


def slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")[:40]


def section(title: str, body: str) -> str:
    return f"<section id='{slug(title)}'><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def fmt(cell: Any) -> str:
    if isinstance(cell, float):
        return f"{cell:.4g}" if math.isfinite(cell) else str(cell)
    if isinstance(cell, int) and not isinstance(cell, bool):
        return f"{cell:,}"
    return html.escape(str(cell))


def _kv(rows: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{fmt(v)}</td></tr>" for k, v in rows)


def summary(info: StudyInfo, records: list[TrialRecord], top: TrialRecord | None, objectives: list[str]) -> str:
    """The study's metadata and budget spent, then the best architecture's card (``top``: the leaderboard's
    first, nas.search.records.leaderboard)."""
    states = Counter(
        "damaged" if r.damage else r.status if r.status in ("duplicate", "infeasible", "interrupted") else r.state
        for r in records
    )
    tokens = sum(r.metric("tokens_trained") for r in records if math.isfinite(r.metric("tokens_trained")))
    seconds = sum(r.wall_seconds for r in records)
    shown = ", ".join(f"{o} ({'min' if m else 'max'})" for o, m in zip(objectives, info.minimize, strict=True))
    rows = [
        ("study", info.name),
        ("space", f"{_known(info.space_name)} ({_known(info.space_hash)})"),
        ("protocol", f"{_known(info.protocol_name)} ({_known(info.protocol_hash)})"),
        ("objectives", shown),
        ("budget spent", f"{tokens:,.0f} training tokens, {seconds / 60:.1f} trial-minutes"),
        ("trials", ", ".join(f"{n} {s}" for s, n in sorted(states.items()))),
        ("nas version", _known(info.version)),
    ]
    body = "<table class='kv'>" + "".join(f"<tr><th>{k}</th><td>{fmt(v)}</td></tr>" for k, v in rows) + "</table>"
    if top is None:
        return section("Summary", body + "<p class='warn'>No completed trial yet.</p>")
    return section("Summary", body + _card(info.name, top))


def _known(text: str | None) -> str:
    return "?" if text is None else text


def _card(study_name: str, top: TrialRecord) -> str:
    """The best trial: its knobs, its counts and metrics (a task metric beside its no-model baseline), and
    the command that exports it."""
    knobs = _kv([(k, v) for k, v in top.arch.items() if v is not None])
    counts = [(k, top.counts.get(k)) for k in COUNT_KEYS]
    metrics = [
        (k, f"{fmt(v)} (baseline: {baseline})" if (baseline := top.baseline(k)) else v)
        for k, v in top.metrics.items()
        if k not in dict(counts)
    ]
    name = html.escape(study_name)
    return (
        f"<div class='card'><h3>Best: trial {top.number} — {html.escape(top.summary)}</h3>"
        f"<div class='cols'><table class='kv'>{knobs}</table><table class='kv'>{_kv(counts + metrics)}</table></div>"
        f"<p>Export it: <code>nas export {name} --trial {top.number} -o exports/{name}</code></p></div>"
    )


def leaderboard(ranked: list[TrialRecord], objectives: list[str]) -> str:
    """The ranked trials in the leaderboard's order (nas.search.records.leaderboard: `nas status` and `nas
    export --best` rank alike), with their counts, the rung each reached (with rungs) and every task metric;
    under the table, the task metrics' baselines (what a trivial predictor scores with no model)."""
    rungs = any(r.rungs for r in ranked)
    metric_names: list[str] = []
    for r in ranked:
        for key in r.metrics:
            if key not in metric_names and key not in objectives and "." in key:
                metric_names.append(key)
    header = ["rank", "trial", "architecture", *(["rung"] if rungs else []), "params", "FLOPs/token"]
    repeated = any(r.runs for r in ranked)  # confirmations: the objectives are means over the runs
    header += ["KV bytes/token", "tokens/s", *(["runs"] if repeated else []), *objectives, *metric_names]
    rows = []
    for r in ranked:
        values = [r.metric("predicted_val_loss")] if rungs and not r.values else (r.values or [])
        cells = [
            f"{r.rank}{'=' if r.tie else ''}",
            r.number,
            r.summary,
            *([f"{(r.rung or 0) + 1} ({r.rungs[-1][0]:,.0f} tokens)" if r.rungs else "-"] if rungs else []),
            r.counts.get("params"),
            r.metric("flops_per_token"),
            r.metric("kv_cache_bytes_per_token"),
            r.metric("tokens_per_second"),
            *([len(r.runs) or 1] if repeated else []),
            *values,
            *[r.metric(m) for m in metric_names],
        ]
        rows.append("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th onclick='sortTable(this)'>{html.escape(h)}</th>" for h in header)
    table = (
        f"<p>{len(ranked)} ranked trials{' (by the rung reached, then the prediction)' if rungs else ''}; click a "
        "column to sort.</p><div class='scroll'>"
        f"<table class='sortable' id='leaderboard-table'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
        "</tbody></table></div>"
    )
    if baselines := baselines_line(ranked, [*objectives, *metric_names]):
        table += f"<p class='baselines'>baselines (no model): {html.escape(baselines)}</p>"
    if len(objectives) == 1 and ranked:  # "=" marks a tie with the best within the study's seed noise
        table += f"<p class='ties'>ties (=): {html.escape(ties_line(ranked, objectives[0]))}</p>"
    return section("Leaderboard", table)


def failures(records: list[TrialRecord]) -> str:
    """Failed and pruned trials and those whose stored record is damaged, with their causes; then the
    infeasible samples counted by reason."""
    failed = [
        r for r in records if r.damage or r.state in ("fail", "pruned") and r.status not in ("infeasible", "duplicate")
    ]
    infeasible = Counter(
        ("infeasible" if r.cause is None else r.cause).split(" (")[0] for r in records if r.status == "infeasible"
    )
    rows = "".join(
        f"<tr><td>{r.number}</td><td>{r.state}</td><td>{html.escape(r.summary)}</td>"
        f"<td>{html.escape(str((r.shown_cause() if r.damage else r.cause) or ''))}</td></tr>"
        for r in failed
    )
    body = (
        (
            f"<div class='scroll'><table class='sortable'><thead><tr><th onclick='sortTable(this)'>trial</th>"
            f"<th onclick='sortTable(this)'>state</th><th>architecture</th><th>cause</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )
        if failed
        else "<p>No failed, pruned or damaged trial.</p>"
    )
    if infeasible:
        body += (
            "<h3>Infeasible samples (never trained)</h3><ul>"
            + "".join(f"<li>{n}× {html.escape(reason)}</li>" for reason, n in infeasible.most_common())
            + "</ul>"
        )
    return section("Failures and stopped trials", body)
