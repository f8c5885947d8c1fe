"""The ranking of a study's trials, one for `nas status`, the report and `nas export --best`
(:func:`leaderboard`): by objective value, the Pareto set first, the prediction at the target refitted on
every trained trial, and with rungs by the rung each trial reached."""

from __future__ import annotations

import math
from dataclasses import dataclass
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
        if row.confirmation:
            row.cause = f"confirms trial {row.confirms}"
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


def rank_records(study: optuna.Study, rows: list[TrialRecord], pool: bool = True) -> list[TrialRecord]:
    """The trained, undamaged trials of ``rows`` ranked, best first, with ``rank`` and ``pareto`` set: single
    objective by value; multi-objective Pareto set first. With ``predicted_val_loss`` as the only objective,
    by :func:`refitted_predictions` on ``rows`` (set as the rows' ``predicted_val_loss``): a trial's stored
    value used only the trials trained before it. With rungs (``pretrain.rungs``), every trained trial with a
    prediction is ranked, stopped at a rung or not: first by the highest rung reached (a prediction made
    further on is the more reliable), then by the prediction. A benchmark ranks a study's first k trials so.

    With ``pool``, a trial whose architecture confirmations re-trained (nas.search.confirm) is ranked by the
    mean over its runs (``runs``: each run's values), and with one objective the trials within the study's noise
    of the best (:func:`noise`) are marked ``tie``; without, every trial by its own run (what confirm re-trains)."""
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
    if pool:
        _pool_confirmations(rows, points, refitted, signs)
        for row in ranked:
            if row.runs:
                row.values = [s * v for s, v in zip(signs, points[row.number], strict=True)]
    pareto = {r.number for r in ranked} if rungs else _pareto_front(points)
    ranked.sort(key=lambda r: (r.number not in pareto, -(r.rung or 0) if rungs else 0, points[r.number][0]))
    for i, row in enumerate(ranked):
        row.rank, row.pareto = i + 1, row.number in pareto and (not rungs or len(signs) > 1)
    if pool and len(signs) == 1 and ranked and (sd := noise(ranked)) is not None and sd.sd > 0:
        best = ranked[0]
        for row in ranked[1:]:
            if row.rung == best.rung:  # with rungs, a trial stopped lower is not compared with the best
                spread = sd.sd * math.sqrt(1 / max(1, len(best.runs)) + 1 / max(1, len(row.runs)))
                row.tie = abs(points[row.number][0] - points[best.number][0]) <= sd.t95 * spread
    return ranked


@dataclass(frozen=True)
class Noise:
    """The standard deviation of one run's objective value between seeds, pooled over the architectures run
    more than once (their runs' deviations from their own mean), with its degrees of freedom."""

    sd: float
    df: int
    architectures: int

    @property
    def t95(self) -> float:
        """Student's t at 97.5 % for ``df``: a difference within t95 of its standard deviation is a tie at 95 %
        (the noise itself estimated from few repeats widens the interval: 4.3 at 2 degrees of freedom). From
        the table to 30 degrees of freedom, then the Cornish-Fisher expansion about the normal (error < 1e-4)."""
        if self.df <= len(_T975):
            return _T975[self.df - 1]
        z, n = 1.959964, self.df
        return z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)

    def line(self, objective: str) -> str:
        return (
            f"{objective} sd {self.sd:.2g} between seeds ({self.architectures} architecture"
            f"{'s' if self.architectures > 1 else ''} run more than once, {self.df} degree"
            f"{'s' if self.df > 1 else ''} of freedom)"
        )


# Student's t quantile at 0.975 for 1..30 degrees of freedom (any statistics table; scipy's t.ppf agrees)
_T975: tuple[float, ...] = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179)
_T975 += (
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def noise(rows: list[TrialRecord]) -> Noise | None:
    """The pooled seed noise of the first objective over ``rows`` with several ``runs`` (None: none has)."""
    groups = [[run[0] for run in r.runs] for r in rows if len(r.runs) > 1]
    df = sum(len(g) - 1 for g in groups)
    if not df:
        return None
    squares = sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in groups)
    return Noise(math.sqrt(squares / df), df, len(groups))


def ties_line(rows: list[Any], objective: str) -> str:
    """Which trials tie with the best within the study's seed noise, and the noise (or why it is unknown)."""
    measured = noise(rows)
    if measured is None:
        return (
            "not known: no architecture was trained more than once, so the study's seed noise is unmeasured "
            "(a protocol's `confirm: K` re-trains the best K with new seeds)"
        )
    if measured.sd == 0:  # e.g. a prediction from the size trend alone (own weight 0): a function of the size
        return (
            f"not known: {objective} came out the same in every repeat of an architecture ({measured.df} degree"
            f"{'s' if measured.df > 1 else ''} of freedom), so the repeats cannot measure its noise; a prediction's "
            "own uncertainty is its std (`nas status`: predicted at target)"
        )
    best = next(r for r in rows if r.rank == 1)
    tied = [str(r.number) for r in rows if r.tie]
    within = f"trials {', '.join(tied)} lie" if len(tied) > 1 else f"trial {tied[0]} lies" if tied else "no trial lies"
    return f"{within} within the 95 % noise interval of the best (trial {best.number}): {measured.line(objective)}"


def _pool_confirmations(
    rows: list[TrialRecord], points: dict[int, list[float]], refitted: dict[int, tuple[float, float]], signs: list[int]
) -> None:
    """A ranked trial that confirmations re-trained: ``runs`` gets each run's values (its own first) and its point
    becomes their mean."""
    extra: dict[int, list[list[float]]] = {}
    for r in rows:
        if r.confirmation and r.confirms is not None and r.confirms in points:
            values = r.values or []
            point = (
                [refitted[r.number][0]]
                if r.number in refitted
                else [s * v for s, v in zip(signs, values, strict=False)]
            )
            if len(point) == len(signs) and all(map(math.isfinite, point)):
                extra.setdefault(r.confirms, []).append(point)
    for row in (r for r in rows if r.number in extra):
        run_points = [points[row.number], *extra[row.number]]
        row.runs = [[s * v for s, v in zip(signs, p, strict=True)] for p in run_points]
        points[row.number] = [sum(column) / len(column) for column in zip(*run_points, strict=True)]


def study_target(study: optuna.Study) -> Any:
    """The study protocol's ``target`` (nas.protocol.Target: the prediction rule, own weight, reach penalty);
    the defaults when its protocol does not read back."""
    return _target_of(study_protocol(study))


def _target_of(protocol: Any) -> Any:
    from nas.protocol import Target

    return protocol.target if protocol is not None else Target()


def refitted_predictions(
    study: optuna.Study, rows: list[TrialRecord], protocol: Any = _UNREAD
) -> dict[int, tuple[float, float]]:
    """{trial number: (predicted_val_loss, its std) refitted now on every trained trial} when the study's only
    objective is ``predicted_val_loss`` (nas.scaling.StudyFit, the study protocol's target rule); else {}.
    ``protocol``: the study's, when the caller has read it already (:func:`study_protocol`)."""
    objectives = study.user_attrs.get(OBJECTIVES)
    if not isinstance(objectives, dict) or list(objectives) != ["predicted_val_loss"]:
        return {}
    from nas.scaling import StudyFit

    if protocol is _UNREAD:
        protocol = study_protocol(study)
    target = _target_of(protocol)
    rungs = bool(protocol is not None and protocol.pretrain.rungs)
    fitted = [r for r in rows if r.trained and not r.damage and r.annealed]  # nas.scaling picks the curves it fits
    curves = [(r.metric("non_embedding_params"), r.annealed) for r in fitted]
    fit = StudyFit.for_target(curves, target)
    confirmations = [r for r in rows if r.confirmation and len(r.annealed) >= (1 if rungs else 2)]
    ranked = fitted if rungs else [r for r in fitted if len(r.annealed) >= 2]
    ranked += confirmations  # predicted by the fit on the trials, never part of it
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
