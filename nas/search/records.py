"""One view of a trial: the user attributes a search writes, read back as a typed :class:`TrialRecord`.

Every user-attribute key of a trial is named here and read or written only here, so `nas status`,
the report and the export see the same record and the same ranking (:func:`leaderboard`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.train.baselines import baseline_text

__all__ = [
    "TrialRecord",
    "Status",
    "leaderboard",
    "study_records",
    "is_trained",
    "trained_count",
    "time_by_phase",
    "time_shares",
    "baselines_line",
    "COUNT_KEYS",
]

# ---- the keys ---------------------------------------------------------------------------------
STATUS = "nas_status"  # one of the Status values below
ARCH = "arch"  # ArchConfig.to_dict()
ARCH_HASH = "arch_hash"
SUMMARY = "summary"
COUNT_KEYS = ("params", "non_embedding_params", "flops_per_token", "kv_cache_bytes_per_token")
WORKER = "worker"
CAUSE = "cause"
RETRY_OF = "retry_of"
DUPLICATE_OF = "duplicate_of"
CURVE = "curve"  # [[step, tokens, val_loss], ...]
ANNEALED = "annealed"  # [[tokens, val_loss], ...]: each cool-down, then the finished run
METRICS = "metrics"
TASK_BASELINES = "task_baselines"  # {"task.metric": score of a trivial predictor} (nas.train.baselines)
BASELINE_PREDICTORS = "baseline_predictors"  # {"task.metric": that predictor, e.g. "majority class"}
TOP_METRICS = ("val_loss", "tokens_per_second", "peak_memory_mb", "latency_ms_per_token")  # also top-level
WALL_SECONDS = "wall_seconds"
PHASE_SECONDS = "phase_seconds"  # {phase: seconds}, in nas.trial.PHASES order; they sum to wall_seconds
NOTES = "notes"
RESUMED_FROM_STEP = "resumed_from_step"
TRACEBACK = "traceback"
WARM_START_FROM = "warm_start_from"
FALLBACK = "fallback"  # why the search queued this (unseen) architecture itself
ARTIFACT_CURVE = "artifact_curve"
ARTIFACT_WEIGHTS = "artifact_weights"
# Optuna system attributes a retry carries (RetryHeartbeatStaleTrialCallback writes the same ones).
RETRY_HISTORY = "retry_history"
FAILED_TRIAL = "failed_trial"
FIXED_PARAMS = "fixed_params"
# Kept when a trial's parameters go back in the queue: the rest describe one run only.
NOT_REQUEUED = (STATUS, CAUSE, CURVE)


class Status:
    """Values of a trial's ``nas_status``: what the search did with it."""

    TRAINED = "trained"  # completed or pruned after training
    RUNNING = "running"  # claimed by a worker
    DUPLICATE = "duplicate"
    INFEASIBLE = "infeasible"
    FAILED = "failed"
    SURPLUS = "surplus"
    INTERRUPTED = "interrupted"


@dataclass
class TrialRecord:
    """A trial as nas wrote it; ``rank`` and ``pareto`` are set by :func:`leaderboard`."""

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
    cause: str | None = None
    traceback: str | None = None
    wall_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    resumed_from_step: int | None = None
    retry_of: int | None = None
    duplicate_of: int | None = None
    artifact_weights: str | None = None
    rank: int | None = None
    pareto: bool = False

    @property
    def params(self) -> int | None:
        value = self.counts.get("params")
        return None if value is None else int(value)

    @property
    def trained(self) -> bool:
        return self.state in ("complete", "pruned") and self.status == Status.TRAINED

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
        attrs = trial.user_attrs
        running = trial.state == TrialState.RUNNING
        return cls(
            number=trial.number,
            state=trial.state.name.lower(),
            status=attrs.get(STATUS, Status.RUNNING if running else "?"),
            values=list(trial.values) if trial.values else None,
            arch=attrs.get(ARCH) or {},
            arch_hash=attrs.get(ARCH_HASH),
            summary=attrs.get(SUMMARY, ""),
            counts={k: attrs[k] for k in COUNT_KEYS if k in attrs},
            metrics=attrs.get(METRICS) or {},
            task_baselines=attrs.get(TASK_BASELINES) or {},
            baseline_predictors=attrs.get(BASELINE_PREDICTORS) or {},
            curve=attrs.get(CURVE) or [],
            annealed=attrs.get(ANNEALED) or [],
            cause=attrs.get(CAUSE),
            traceback=attrs.get(TRACEBACK),
            wall_seconds=float(attrs.get(WALL_SECONDS) or 0.0),
            phase_seconds=attrs.get(PHASE_SECONDS) or {},
            resumed_from_step=attrs.get(RESUMED_FROM_STEP),
            retry_of=attrs.get(RETRY_OF),
            duplicate_of=attrs.get(DUPLICATE_OF),
            artifact_weights=attrs.get(ARTIFACT_WEIGHTS),
        )

    def shown_cause(self) -> str | None:
        """The cause as `nas status` shows it (a resumed trial says where it resumed)."""
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
    return sum(1 for t in study.get_trials(deepcopy=False) if is_trained(t))


def study_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study, in trial-number order."""
    return [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]


def arch_hash_of(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(ARCH_HASH)


def status_of(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(STATUS)


def counts_of(trial: FrozenTrial) -> dict[str, float]:
    return {k: trial.user_attrs[k] for k in COUNT_KEYS if k in trial.user_attrs}


def curve_of(trial: FrozenTrial) -> list[list[float]]:
    return trial.user_attrs.get(CURVE) or []


def time_by_phase(records: Iterable[TrialRecord]) -> dict[str, float]:
    """Where the search's time went: each phase's seconds summed over the trained trials ("other" last)."""
    total: dict[str, float] = {}
    for record in records:
        if record.trained:
            for name, seconds in record.phase_seconds.items():
                total[name] = total.get(name, 0.0) + seconds
    if "other" in total:
        total["other"] = total.pop("other")
    return total


def time_shares(phase_seconds: dict[str, float]) -> str:
    """ "pretrain 61 % · task qa 20 % · …": the phases by their share of the total, largest first (under
    0.5 % left out); "" when no time was recorded."""
    total = sum(phase_seconds.values())
    if total <= 0:
        return ""
    ranked = sorted(phase_seconds.items(), key=lambda item: -item[1])
    return " · ".join(f"{name} {100 * seconds / total:.0f} %" for name, seconds in ranked if seconds >= total / 200)


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


def leaderboard(study: optuna.Study) -> list[TrialRecord]:
    """Trained trials ranked (single objective by value; multi-objective Pareto set first), then the rest."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get(STATUS) == Status.TRAINED]
    pareto = {t.number for t in study.best_trials} if complete else set()
    if len(study.directions) == 1:
        sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
        ranked = sorted(complete, key=lambda t: sign * t.values[0])
    else:
        first = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
        ranked = sorted(complete, key=lambda t: (t.number not in pareto, first * t.values[0]))
    rows = []
    for i, trial in enumerate(ranked):
        row = TrialRecord.from_trial(trial)
        row.rank, row.pareto = i + 1, trial.number in pareto
        rows.append(row)
    rows += [TrialRecord.from_trial(t) for t in trials if t not in ranked]
    retried_as = {t.system_attrs[RETRY_HISTORY][-1]: t.number for t in trials if t.system_attrs.get(RETRY_HISTORY)}
    for row in rows:
        row.cause = row.shown_cause()
        if row.number in retried_as:
            row.cause = f"{row.cause or 'failed'}; retried as trial {retried_as[row.number]}"
        if row.state == "running":
            row.cause = None  # a running trial's cause is only what it would be if its worker died
    return rows


# ---- writing ----------------------------------------------------------------------------------
def set_status(trial: optuna.Trial, status: str, cause: str | None = None) -> None:
    trial.set_user_attr(STATUS, status)
    if cause is not None:
        trial.set_user_attr(CAUSE, cause)


def write_claim(trial: optuna.Trial, arch: Any, worker: str, killed_cause: str, retry_of: int | None) -> None:
    """The architecture and the claim: other workers now see it as taken. The cause is what stays if
    this worker dies; every ending overwrites it."""
    trial.set_user_attr(ARCH, arch.to_dict())
    trial.set_user_attr(ARCH_HASH, arch.arch_hash())
    trial.set_user_attr(SUMMARY, arch.summary())
    for name, value in arch.counts().items():
        trial.set_user_attr(name, value)
    set_status(trial, Status.RUNNING, killed_cause)
    trial.set_user_attr(WORKER, worker)
    if retry_of is not None:
        trial.set_user_attr(RETRY_OF, retry_of)


def write_duplicate(trial: optuna.Trial, of: int, cause: str) -> None:
    set_status(trial, Status.DUPLICATE, cause)
    trial.set_user_attr(DUPLICATE_OF, of)


def write_failure(trial: optuna.Trial, cause: str, traceback_lines: list[str]) -> None:
    set_status(trial, Status.FAILED, cause)
    trial.set_user_attr(TRACEBACK, "\n".join(traceback_lines[-12:]))


def write_curve(trial: optuna.Trial, curve: list[list[float]]) -> None:
    trial.set_user_attr(CURVE, curve)


def write_result(trial: optuna.Trial, result: Any) -> None:
    """A finished trial's metrics, task baselines, curve, time, cause and notes (a nas.trial.TrialResult)."""
    metrics = {k: (v if math.isfinite(v) else str(v)) for k, v in result.metrics.items()}
    trial.set_user_attr(METRICS, metrics)
    for name in TOP_METRICS:
        if name in result.metrics:
            trial.set_user_attr(name, metrics[name])
    if result.task_baselines:
        trial.set_user_attr(TASK_BASELINES, result.task_baselines)
        trial.set_user_attr(BASELINE_PREDICTORS, result.baseline_predictors)
    if result.resumed_from_step is not None:
        trial.set_user_attr(RESUMED_FROM_STEP, result.resumed_from_step)
    write_curve(trial, [[p.step, p.tokens, p.val_loss] for p in result.curve])
    if result.annealed:
        trial.set_user_attr(ANNEALED, result.annealed)
    trial.set_user_attr(WALL_SECONDS, result.wall_seconds)
    if result.phase_seconds:
        trial.set_user_attr(PHASE_SECONDS, result.phase_seconds)
    trial.set_user_attr(CAUSE, result.cause)  # None when it completed: replaces the "killed" placeholder
    if result.notes:
        trial.set_user_attr(NOTES, result.notes)


def write_artifact(trial: optuna.Trial, kind: str, artifact_id: str) -> None:
    """``kind`` is "curve" or "weights"."""
    trial.set_user_attr({"curve": ARTIFACT_CURVE, "weights": ARTIFACT_WEIGHTS}[kind], artifact_id)


def requeue_attrs(frozen: FrozenTrial, retry: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user, system) attributes for the trial that puts ``frozen``'s parameters back in the queue."""
    user_attrs = {k: v for k, v in frozen.user_attrs.items() if k not in NOT_REQUEUED}
    system_attrs = dict(frozen.system_attrs)
    if retry:
        system_attrs[FAILED_TRIAL] = system_attrs.get(FAILED_TRIAL, frozen.number)
        system_attrs[RETRY_HISTORY] = [*system_attrs.get(RETRY_HISTORY, []), frozen.number]
    return user_attrs, system_attrs


def is_enqueued(frozen: FrozenTrial) -> bool:
    """Asked from the queue (a retry, a warm start) rather than sampled."""
    return bool(frozen.params) or FIXED_PARAMS in frozen.system_attrs


def retry_of(frozen: FrozenTrial) -> int | None:
    """The failed trial this one re-runs, when it is a retry."""
    return frozen.system_attrs.get(FAILED_TRIAL)


def fallback_attrs(duplicates: int) -> dict[str, Any]:
    return {FALLBACK: f"unseen architecture queued after {duplicates} duplicates in a row"}


def warm_start_attrs(study_name: str, number: int) -> dict[str, Any]:
    return {WARM_START_FROM: f"{study_name}#{number}"}
