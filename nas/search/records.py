"""One view of a trial: the user attributes a search writes, read back as a typed :class:`TrialRecord`.

Every user-attribute key of a trial is named in nas.search.attrs and read or written only here, so
`nas status`, the report and the export see the same record and the same ranking (nas.search.ranking.leaderboard).

Stored attributes are checked as they are read: a value that is not what the search writes (garbage,
a wrong type, a trained trial without its architecture, an attribute Optuna cannot even decode) reads
as absent and is noted in the record's ``damage``, shown as its cause. A damaged trial is listed but
never ranked or exported, and the rest of the study reads as before (a worker's reads included).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.search.attrs import (  # noqa: F401  (COUNT_KEYS and Status are also read from here)
    ANNEALED,
    ARCH,
    ARCH_HASH,
    ARTIFACT_CURVE,
    ARTIFACT_WEIGHTS,
    BASELINE_PREDICTORS,
    CAUSE,
    CONFIRM,
    COUNT_KEYS,
    CURVE,
    DUPLICATE_OF,
    FAILED_TRIAL,
    FALLBACK,
    FIXED_PARAMS,
    METRICS,
    NOT_REQUEUED,
    NOTES,
    OBJECTIVES,
    PHASE_SECONDS,
    PLACEMENT,
    PROTOCOL_TEXT,
    RESUMED_FROM_STEP,
    RETRY_HISTORY,
    RETRY_OF,
    RUNGS,
    STATUS,
    SUMMARY,
    TASK_BASELINES,
    TOP_METRICS,
    TRACEBACK,
    WALL_SECONDS,
    WARM_START_FROM,
    WORKER,
    Attrs,
    Status,
    is_count,
    is_finite,
    rows_of,
    trial_number,
)
from nas.search.batch import rdb_backend, set_user_attrs
from nas.search.outage import retried
from nas.train.baselines import baseline_text

__all__ = [
    "TrialRecord",
    "Status",
    "read_trials",
    "study_records",
    "is_trained",
    "trained_count",
    "baselines_line",
    "COUNT_KEYS",
]


@dataclass
class TrialRecord:
    """A trial as nas wrote it; ``rank`` and ``pareto`` are set by nas.search.ranking."""

    number: int
    state: str  # Optuna's state, lower case: complete, pruned, fail, running, waiting
    status: str  # nas_status; "running" or "?" when nas never wrote one
    values: list[float] | None
    arch: dict[str, Any] = field(default_factory=dict)
    arch_hash: str | None = None
    summary: str = ""
    counts: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    task_baselines: dict[str, float] = field(default_factory=dict)
    baseline_predictors: dict[str, str] = field(default_factory=dict)
    curve: list[list[float]] = field(default_factory=list)
    annealed: list[list[float]] = field(default_factory=list)
    rungs: list[list[float]] = field(default_factory=list)  # [tokens, loss] at each rung reached (pretrain.rungs)
    cause: str | None = None
    traceback: str | None = None
    wall_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int | None = None
    retry_of: int | None = None
    duplicate_of: int | None = None
    artifact_weights: str | None = None
    notes: list[str] = field(default_factory=list)  # what the trial noted (a vocab fitted, tasks skipped, ...)
    placement: dict[str, Any] | None = None  # {"device", "sharing"}: where a worker nas search started ran it
    started: float | None = None  # wall-clock times (seconds since the epoch) of the trial's start and end
    finished: float | None = None
    damage: list[str] = field(default_factory=list)  # stored attributes that did not read back
    confirms: int | None = None  # the trial whose architecture this confirmation re-trains (nas.search.confirm)
    # set by nas.search.ranking: the rank; on the Pareto set; the objective values of each run of the architecture
    # (this trial's, then its confirmations'; ``values`` is then their mean); within the noise of the best
    rank: int | None = None
    pareto: bool = False
    runs: list[list[float]] = field(default_factory=list)
    tie: bool = False

    @property
    def params(self) -> int | None:
        value = self.counts.get("params")
        return None if value is None else int(value)

    @property
    def rung(self) -> int | None:
        """The index of the highest rung reached (None: no rungs, or none reached yet); a trial trained to its
        target (its rungs cut there) counts as at the top rung."""
        rung = self.metrics.get("rung")
        if isinstance(rung, int | float) and not isinstance(rung, bool) and rung >= 0:
            return int(rung)
        return len(self.rungs) - 1 if self.rungs else None

    @property
    def trained(self) -> bool:
        return self.state in ("complete", "pruned") and self.status == Status.TRAINED

    @property
    def confirmation(self) -> bool:
        """A confirmation that trained, undamaged: its values join its original's (nas.search.ranking)."""
        return self.confirms is not None and self.status == Status.CONFIRMATION and not self.damage

    @property
    def usable(self) -> bool:
        """Trained and undamaged: what the leaderboard ranks and an export can write."""
        return self.trained and not self.damage

    def metric(self, name: str) -> float:
        """A count or a metric as a float (NaN when absent or not a number)."""
        value = self.counts.get(name, self.metrics.get(name))
        try:
            return float(value)  # type: ignore[arg-type]  # None and strings land in the except
        except (TypeError, ValueError):
            return math.nan

    def baseline(self, name: str) -> str:
        """The no-model baseline of task metric ``name`` as shown beside it ("majority class 0.4"); "" if none."""
        return baseline_text(name, self.task_baselines, self.baseline_predictors)

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = Attrs(trial.user_attrs)
        state = trial.state.name.lower()
        running = trial.state == TrialState.RUNNING
        status = attrs.get(STATUS, Status.RUNNING if running else "?")
        cause = attrs.get(CAUSE)
        if state == "fail" and status == Status.TRAINED:  # failed as stale between its status and its tell
            status, cause = Status.FAILED, f"failed as stale while its result was told ({cause}); retried"
        return cls(
            number=trial.number,
            state=state,
            status=status,
            values=list(trial.values) if trial.values else None,
            arch=attrs.arch(trained=state in ("complete", "pruned") and status == Status.TRAINED),
            arch_hash=attrs.get(ARCH_HASH),
            summary=attrs.get(SUMMARY, ""),
            counts={k: v for k, v in ((k, attrs.get(k)) for k in COUNT_KEYS) if v is not None},
            metrics=attrs.get(METRICS, {}),
            task_baselines=attrs.get(TASK_BASELINES, {}),
            baseline_predictors=attrs.get(BASELINE_PREDICTORS, {}),
            curve=attrs.get(CURVE, []),
            annealed=attrs.get(ANNEALED, []),
            rungs=attrs.get(RUNGS, []),
            cause=cause,
            traceback=attrs.get(TRACEBACK),
            wall_seconds=float(attrs.get(WALL_SECONDS, 0.0)),
            phase_seconds=attrs.get(PHASE_SECONDS, {}),
            resumed_from_step=attrs.get(RESUMED_FROM_STEP),
            retry_of=attrs.get(RETRY_OF),
            duplicate_of=attrs.get(DUPLICATE_OF),
            artifact_weights=attrs.get(ARTIFACT_WEIGHTS),
            notes=attrs.get(NOTES, []),
            placement=attrs.get(PLACEMENT),
            started=trial.datetime_start.timestamp() if trial.datetime_start else None,
            finished=trial.datetime_complete.timestamp() if trial.datetime_complete else None,
            confirms=None if (confirm := attrs.get(CONFIRM)) is None else confirm["of"],
            damage=attrs.damage,
        )

    @classmethod
    def unreadable(cls, number: int, exc: Exception) -> TrialRecord:
        """A trial Optuna cannot read back (a stored attribute that is not JSON, ...)."""
        why = str(exc).splitlines()[0] if str(exc).strip() else ""
        return cls(number, "?", "?", None, damage=[f"unreadable in storage ({type(exc).__name__}: {why})"])

    def shown_cause(self) -> str | None:
        """The cause as `nas status` shows it (a damaged record says what is damaged; a resumed trial says
        where it resumed)."""
        if self.damage:
            return f"damaged: {'; '.join(self.damage)}" + (f"; was: {self.cause}" if self.cause else "")
        if self.cause:
            return self.cause
        if self.resumed_from_step is None:
            return None
        again = f" (re-run of trial {self.retry_of})" if self.retry_of is not None else ""
        return f"resumed from step {self.resumed_from_step}{again}"


# ---- reading ----------------------------------------------------------------------------------
def is_trained(trial: FrozenTrial) -> bool:
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and trial.user_attrs.get(STATUS) == Status.TRAINED


def trained_count(study: optuna.Study) -> int:
    return sum(1 for t in read_trials(study)[0] if is_trained(t))


# Optuna's errors decoding a stored trial (an attribute or distribution that is not JSON is a ValueError)
_DECODE_ERRORS = (ValueError, TypeError, KeyError)


def read_trials(study: optuna.Study) -> tuple[list[FrozenTrial], list[TrialRecord]]:
    """The study's trials, and a record for each trial Optuna cannot read back (say, a stored attribute
    edited into something that is not JSON), in number order; the rest read as usual."""
    try:
        return _with_missed(study, study.get_trials(deepcopy=False)), []
    except _DECODE_ERRORS:
        pass
    storage, study_id = study._storage, study._study_id  # one trial at a time: the damage stays in its trial
    readable: list[FrozenTrial] = []
    damaged: list[TrialRecord] = []
    number = 0
    while True:
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:  # past the last trial
            return readable, damaged
        try:
            readable.append(storage.get_trial(trial_id))
        except _DECODE_ERRORS as exc:
            damaged.append(TrialRecord.unreadable(number, exc))
        number += 1


def _with_missed(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """``trials`` with the ones Optuna's storage cache skipped read one by one. The cache reads only trials
    with an id above the last finished one it has seen (and the unfinished it knows): a trial whose creation
    committed after a later trial had already finished (many busy workers) is never read again, and its
    worker's claim would be invisible to the others' dedupe. Such a trial shows as a gap in the numbers."""
    if not trials or trials[-1].number + 1 == len(trials):
        return trials
    have = {t.number for t in trials}
    storage, study_id = study._storage, study._study_id
    missed = []
    for number in range(trials[-1].number):
        if number not in have:
            try:
                missed.append(storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, number)))
            except KeyError:  # deleted meanwhile: nothing to read
                continue
    return sorted([*trials, *missed], key=lambda t: t.number)


def trials_of_arch(study: optuna.Study, arch_hash: str, besides: int) -> list[FrozenTrial]:
    """The trials other than number ``besides`` whose claim names ``arch_hash``, in number order, read from the
    database itself: on a database storage one query finds them and only they are read (read_trials re-reads every
    unfinished trial whole); on any other, from read_trials. A trial Optuna cannot read back is skipped."""
    storage = study._storage
    backend = rdb_backend(storage)
    if backend is None:
        return [t for t in read_trials(study)[0] if t.number != besides and arch_hash_of(t) == arch_hash]
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    def ids() -> list[tuple[int, int]]:
        attr, trial = models.TrialUserAttributeModel, models.TrialModel
        with _create_scoped_session(backend.scoped_session) as session:
            query = session.query(trial.trial_id, trial.number).join(attr, attr.trial_id == trial.trial_id)
            query = query.filter(trial.study_id == study._study_id, attr.key == ARCH_HASH)
            return [(i, n) for i, n in query.filter(attr.value_json == json.dumps(arch_hash)).all()]

    found = []
    for trial_id, number in sorted(retried(ids), key=lambda row: row[1]):
        if number != besides:
            try:
                found.append(storage.get_trial(trial_id))
            except _DECODE_ERRORS:
                continue
    return found


def study_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study, in trial-number order."""
    trials, unreadable = read_trials(study)
    return sorted([TrialRecord.from_trial(t) for t in trials] + unreadable, key=lambda r: r.number)


def confirm_of(trial: FrozenTrial) -> dict[str, int] | None:
    """A confirmation's {of, repeat, seed} (None: not a confirmation, or the attribute is damaged)."""
    attrs = Attrs(trial.user_attrs)
    return attrs.get(CONFIRM)


def confirm_attrs(of: int, repeat: int, seed: int) -> dict[str, Any]:
    return {CONFIRM: {"of": of, "repeat": repeat, "seed": seed}}


def arch_hash_of(trial: FrozenTrial) -> str | None:
    value = trial.user_attrs.get(ARCH_HASH)
    return value if isinstance(value, str) else None


def status_of(trial: FrozenTrial) -> str | None:
    value = trial.user_attrs.get(STATUS)
    return value if isinstance(value, str) else None


def counts_of(trial: FrozenTrial) -> dict[str, float]:
    return {k: trial.user_attrs[k] for k in COUNT_KEYS if is_finite(trial.user_attrs.get(k))}


def curve_of(trial: FrozenTrial) -> list[list[float]]:
    curve = trial.user_attrs.get(CURVE)
    return curve if curve and rows_of(3)(curve) else []


def baselines_line(records: Iterable[TrialRecord], names: Iterable[str]) -> str:
    """ "claims.accuracy: majority class 0.4, chance 0.3333 · qa.f1: first 2 words 0.07": the no-model baselines
    of the task metrics ``names`` (each from the first record that has it); "" when none has one."""
    records = list(records)
    shown = []
    for name in names:
        text = next((r.baseline(name) for r in records if name in r.task_baselines), "")
        if text:
            shown.append(f"{name}: {text}")
    return " · ".join(shown)


# ---- writing ----------------------------------------------------------------------------------
def set_status(trial: optuna.Trial, status: str, cause: str | None = None) -> None:
    set_user_attrs(trial, {STATUS: status} | ({} if cause is None else {CAUSE: cause}))


def write_claim(
    trial: optuna.Trial,
    arch: Any,
    worker: str,
    killed_cause: str,
    retry_of: int | None,
    placement: dict[str, Any] | None = None,
) -> None:
    """The architecture and the claim: other workers now see it as taken. The cause is what stays if
    this worker dies; every ending overwrites it. ``placement``: the worker's device and how many
    workers share it."""
    attrs = {ARCH: arch.to_dict(), ARCH_HASH: arch.arch_hash(), SUMMARY: arch.summary(), **arch.counts()}
    attrs |= {STATUS: Status.RUNNING, CAUSE: killed_cause, WORKER: worker}
    if placement is not None:
        attrs[PLACEMENT] = placement
    if retry_of is not None:
        attrs[RETRY_OF] = retry_of
    set_user_attrs(trial, attrs)  # one write: other workers see the claim whole


def write_duplicate(trial: optuna.Trial, of: int, cause: str) -> None:
    set_user_attrs(trial, {STATUS: Status.DUPLICATE, CAUSE: cause, DUPLICATE_OF: of})


def write_failure(trial: optuna.Trial, cause: str, traceback_lines: list[str]) -> None:
    set_user_attrs(trial, {STATUS: Status.FAILED, CAUSE: cause, TRACEBACK: "\n".join(traceback_lines[-12:])})


def write_curve(trial: optuna.Trial, curve: list[list[float]]) -> None:
    trial.set_user_attr(CURVE, curve)


def write_rungs(trial: optuna.Trial, rungs: list[list[float]]) -> None:
    trial.set_user_attr(RUNGS, rungs)


def write_result(trial: optuna.Trial, result: Any) -> None:
    """A finished trial's metrics, task baselines, curve, time, cause and notes (a nas.trial.TrialResult), in
    one write."""
    metrics = {k: (v if math.isfinite(v) else str(v)) for k, v in result.metrics.items()}
    attrs: dict[str, Any] = {METRICS: metrics, **{name: metrics[name] for name in TOP_METRICS if name in metrics}}
    if result.task_baselines:
        attrs |= {TASK_BASELINES: result.task_baselines, BASELINE_PREDICTORS: result.baseline_predictors}
    if result.resumed_from_step is not None:
        attrs[RESUMED_FROM_STEP] = result.resumed_from_step
    attrs[CURVE] = [[p.step, p.tokens, p.val_loss] for p in result.curve]
    if result.annealed:
        attrs[ANNEALED] = result.annealed
    attrs[WALL_SECONDS] = result.wall_seconds
    if result.phase_seconds:
        attrs[PHASE_SECONDS] = result.phase_seconds
    attrs[CAUSE] = result.cause  # None when it completed: replaces the "killed" placeholder
    if result.notes:
        attrs[NOTES] = result.notes
    set_user_attrs(trial, attrs)


def write_artifact(trial: optuna.Trial, kind: str, artifact_id: str) -> None:
    """``kind`` is "curve" or "weights"."""
    trial.set_user_attr({"curve": ARTIFACT_CURVE, "weights": ARTIFACT_WEIGHTS}[kind], artifact_id)


def requeue_attrs(frozen: FrozenTrial, retry: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user, system) attributes for the trial that puts ``frozen``'s parameters back in the queue."""
    user_attrs = {k: v for k, v in frozen.user_attrs.items() if k not in NOT_REQUEUED}
    system_attrs = dict(frozen.system_attrs)
    if retry:
        system_attrs[FAILED_TRIAL] = retry_of(frozen) if retry_of(frozen) is not None else frozen.number
        system_attrs[RETRY_HISTORY] = [*retry_history(frozen), frozen.number]
    return user_attrs, system_attrs


def is_enqueued(frozen: FrozenTrial) -> bool:
    """Asked from the queue (a retry, a warm start) rather than sampled."""
    return bool(frozen.params) or FIXED_PARAMS in frozen.system_attrs


def retry_history(frozen: FrozenTrial) -> list[int]:
    """The trials this one re-runs, oldest first ([] when it is no retry; a damaged history reads as [])."""
    history = frozen.system_attrs.get(RETRY_HISTORY)
    return history if isinstance(history, list) and all(map(is_count, history)) else []


def retry_of(frozen: FrozenTrial) -> int | None:
    """The failed trial this one re-runs, when it is a retry."""
    return trial_number(frozen.system_attrs.get(FAILED_TRIAL))


def fallback_attrs(duplicates: int) -> dict[str, Any]:
    return {FALLBACK: f"unseen architecture queued after {duplicates} duplicates in a row"}


def warm_start_attrs(study_name: str, number: int) -> dict[str, Any]:
    return {WARM_START_FROM: f"{study_name}#{number}"}
