"""The ranking of a study's trials, one for `nas status`, the report and `nas export --best`
(:func:`leaderboard`): by objective value, the Pareto set first, the prediction at the target refitted on
every trained trial, and with rungs by the rung each trial reached."""

from __future__ import annotations

import math
from typing import Any

import optuna

from nas.search.attrs import OBJECTIVES, PROTOCOL_TEXT
from nas.search.records import TrialRecord, read_trials, retry_history


def leaderboard(study: optuna.Study) -> list[TrialRecord]:
    """The ranked trials (:func:`rank_records`), then the rest in number order (damaged ones with their damage
    as the cause)."""
    trials, unreadable = read_trials(study)
    records = {t.number: TrialRecord.from_trial(t) for t in trials}
    rows = rank_records(study, list(records.values()))
    for row in rows:
        records.pop(row.number)
    rows += sorted([*records.values(), *unreadable], key=lambda r: r.number)
    retried_as = {history[-1]: t.number for t in trials if (history := retry_history(t))}
    for row in rows:
        row.cause = row.shown_cause()
        if row.number in retried_as:
            row.cause = f"{row.cause or 'failed'}; retried as trial {retried_as[row.number]}"
        if row.state == "running" and not row.damage:
            row.cause = None  # a running trial's cause is only what it would be if its worker died
    return rows


_UNREAD: Any = object()  # refitted_predictions: the protocol not passed


def study_protocol(study: optuna.Study) -> Any:
    """The study's protocol, or None when it does not read back."""
    from nas.errors import NasInputError
    from nas.protocol import parse_protocol

    try:
        return parse_protocol(str(study.user_attrs.get(PROTOCOL_TEXT)), source="study protocol")
    except NasInputError:
        return None


def rank_records(study: optuna.Study, rows: list[TrialRecord]) -> list[TrialRecord]:
    """The trained, undamaged trials of ``rows`` ranked, best first, with ``rank`` and ``pareto`` set: single
    objective by value; multi-objective Pareto set first. With ``predicted_val_loss`` as the only objective,
    by :func:`refitted_predictions` on ``rows`` (set as the rows' ``predicted_val_loss``): a trial's stored
    value used only the trials trained before it. With rungs (``pretrain.rungs``), every trained trial with a
    prediction is ranked, stopped at a rung or not: first by the highest rung reached (a prediction made
    further on is the more reliable), then by the prediction. A benchmark ranks a study's first k trials so."""
    signs = [1 if d == optuna.study.StudyDirection.MINIMIZE else -1 for d in study.directions]
    protocol = study_protocol(study)
    refitted = refitted_predictions(study, rows, protocol)
    rungs = bool(protocol is not None and protocol.pretrain.rungs)
    if rungs:  # stopped trials are ranked too, by the rung they reached, on the prediction or the objective's metric
        objectives = study.user_attrs.get(OBJECTIVES)
        name = next(iter(objectives)) if isinstance(objectives, dict) and objectives else "val_loss"
        for r in rows:
            if r.number not in refitted and r.trained and math.isfinite(r.metric(name)):
                r.values = [r.metric(name)]
        ranked = [r for r in rows if r.usable and (r.number in refitted or r.values)]
    else:
        ranked = [r for r in rows if r.state == "complete" and r.usable and r.values]
    points = {r.number: [s * v for s, v in zip(signs, r.values or [], strict=False)] for r in ranked}
    for number, (value, std) in refitted.items():
        if number in points:  # ranked by the prediction refitted on every trained trial, as the report shows
            points[number] = [value]
            row = next(r for r in ranked if r.number == number)
            row.metrics = row.metrics | {"predicted_val_loss": value, "predicted_val_loss_std": std}
    pareto = {r.number for r in ranked} if rungs else _pareto_front(points)
    ranked.sort(key=lambda r: (r.number not in pareto, -(r.rung or 0) if rungs else 0, points[r.number][0]))
    for i, row in enumerate(ranked):
        row.rank, row.pareto = i + 1, row.number in pareto and (not rungs or len(signs) > 1)
    return ranked


def prediction_rule(study: optuna.Study) -> tuple[bool, float]:
    """The study protocol's ``target.prediction`` rule: (size trend?, own weight); the defaults when its
    protocol does not read back."""
    from nas.protocol import Target

    protocol = study_protocol(study)
    target = protocol.target if protocol is not None else Target()
    return target.prediction == "size-trend", target.own_weight


def refitted_predictions(
    study: optuna.Study, rows: list[TrialRecord], protocol: Any = _UNREAD
) -> dict[int, tuple[float, float]]:
    """{trial number: (predicted_val_loss, its std) refitted now on every trained trial} when the study's only
    objective is ``predicted_val_loss`` (nas.scaling.StudyFit, the study protocol's target rule); else {}.
    ``protocol``: the study's, when the caller has read it already (:func:`study_protocol`)."""
    objectives = study.user_attrs.get(OBJECTIVES)
    if not isinstance(objectives, dict) or list(objectives) != ["predicted_val_loss"]:
        return {}
    from nas.protocol import Target
    from nas.scaling import StudyFit

    if protocol is _UNREAD:
        protocol = study_protocol(study)
    target = protocol.target if protocol is not None else Target()
    rungs = bool(protocol is not None and protocol.pretrain.rungs)
    fitted = [r for r in rows if r.trained and not r.damage and len(r.annealed) >= 2]
    curves = [(r.metric("non_embedding_params"), r.annealed) for r in fitted]
    fit = StudyFit.of(curves, target.prediction == "size-trend", target.own_weight)
    ranked = [r for r in rows if r.trained and not r.damage and r.annealed] if rungs else fitted
    out = {}
    for r in ranked:
        size, tokens = r.metric("non_embedding_params"), r.metric("target_tokens")
        weight = target.weight_at(r.rung, bool(r.metrics.get("at_target"))) if rungs else None
        p = fit.predict(r.annealed, size, tokens, weight, min_points=1 if rungs else 2)
        if (rungs or r.state == "complete") and p is not None and math.isfinite(p.value):
            out[r.number] = (p.value, p.std)
    return out


def _pareto_front(points: dict[int, list[float]]) -> set[int]:
    """The numbers of the points no other point dominates (all minimised). In lexicographic order a point
    can only be dominated by one before it, and then by one on the front: each is checked against the front."""
    front: list[list[float]] = []
    numbers = set()
    for number, point in sorted(points.items(), key=lambda item: item[1]):
        if not any(all(a <= b for a, b in zip(f, point, strict=True)) and f != point for f in front):
            front.append(point)
            numbers.add(number)
    return numbers
