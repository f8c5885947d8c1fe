"""The user attributes a search writes on a trial: every key, and what each must hold.

:class:`Attrs` reads them through :data:`SHAPES`: a value of the wrong shape (garbage, a wrong type)
reads as absent and is noted as damage. nas.search.records is the one reader and writer of these keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["Attrs", "SHAPES", "STATUSES", "Status", "is_count", "is_finite", "is_number", "rows_of", "trial_number"]

# ---- the keys ---------------------------------------------------------------------------------
# on the study (written by nas.search.storage when a study is created)
SPACE_TEXT = "nas.space_text"
PROTOCOL_TEXT = "nas.protocol_text"
OBJECTIVES = "nas.objectives"
# on a trial
STATUS = "nas_status"  # one of the Status values below
ARCH = "arch"  # ArchConfig.to_dict()
ARCH_HASH = "arch_hash"
SUMMARY = "summary"
COUNT_KEYS = ("params", "non_embedding_params", "flops_per_token", "kv_cache_bytes_per_token")
WORKER = "worker"
PLACEMENT = "placement"  # {"device": a GPU index or "cpu", "sharing": workers on that device}, from nas search
CAUSE = "cause"
RETRY_OF = "retry_of"
DUPLICATE_OF = "duplicate_of"
CURVE = "curve"  # [[step, tokens, val_loss], ...]
ANNEALED = "annealed"  # [[tokens, val_loss], ...]: each cool-down, then the finished run
RUNGS = "rungs"  # [[tokens, val_loss], ...]: the annealed loss at each rung reached (pretrain.rungs)
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
CONFIRM = (
    "confirm"  # {"of": trial number, "repeat": 1.., "seed": pretraining seed}: a confirmation (nas.search.confirm)
)
# Optuna system attributes a retry carries (RetryHeartbeatStaleTrialCallback writes the same ones).
RETRY_HISTORY = "retry_history"
FAILED_TRIAL = "failed_trial"
FIXED_PARAMS = "fixed_params"
# Kept when a trial's parameters go back in the queue: the rest describe one run only.
NOT_REQUEUED = (STATUS, CAUSE, CURVE, PLACEMENT)


class Status:
    """Values of a trial's ``nas_status``: what the search did with it."""

    TRAINED = "trained"  # completed or pruned after training
    RUNNING = "running"  # claimed by a worker
    DUPLICATE = "duplicate"
    INFEASIBLE = "infeasible"
    FAILED = "failed"
    SURPLUS = "surplus"
    INTERRUPTED = "interrupted"
    CONFIRMATION = "confirmation"  # a confirmation trained (never counted among the n_trials)


STATUSES = tuple(v for k, v in vars(Status).items() if k.isupper())


# ---- what each key holds, as the search writes it -------------------------------------------------
def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def is_finite(v: Any) -> bool:
    return is_number(v) and math.isfinite(v)


def is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def is_text(v: Any) -> bool:
    return isinstance(v, str)


def mapping_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and all(isinstance(k, str) and check(x) for k, x in v.items())


def rows_of(width: int) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, list)
        and all(isinstance(row, list) and len(row) == width and all(map(is_number, row)) for row in v)
    )


SHAPES: dict[str, tuple[Callable[[Any], bool], str]] = {  # key: (valid, what it must be)
    STATUS: (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    ARCH: (mapping_of(lambda x: x is None or isinstance(x, str | int | float)), "a mapping of architecture knobs"),
    ARCH_HASH: (is_text, "a string"),
    SUMMARY: (is_text, "a string"),
    **{name: (is_finite, "a finite number") for name in COUNT_KEYS},
    CAUSE: (is_text, "a string"),
    TRACEBACK: (is_text, "a string"),
    METRICS: (mapping_of(lambda x: is_number(x) or is_text(x)), "a mapping of metric names to numbers"),
    TASK_BASELINES: (mapping_of(is_number), "a mapping of task metrics to numbers"),
    BASELINE_PREDICTORS: (mapping_of(is_text), "a mapping of task metrics to predictor names"),
    CURVE: (rows_of(3), "a list of [step, tokens, val_loss] rows"),
    ANNEALED: (rows_of(2), "a list of [tokens, val_loss] rows"),
    RUNGS: (rows_of(2), "a list of [tokens, val_loss] rows"),
    WALL_SECONDS: (lambda v: is_finite(v) and v >= 0, "a number of seconds >= 0"),
    PHASE_SECONDS: (mapping_of(is_finite), "a mapping of phases to seconds"),
    RESUMED_FROM_STEP: (is_count, "a step number"),
    RETRY_OF: (is_count, "a trial number"),
    DUPLICATE_OF: (is_count, "a trial number"),
    ARTIFACT_WEIGHTS: (is_text, "an artifact id"),
    NOTES: (lambda v: isinstance(v, list) and all(is_text(x) for x in v), "a list of strings"),
    CONFIRM: (
        lambda v: (
            isinstance(v, dict)
            and set(v) == {"of", "repeat", "seed"}
            and is_count(v["of"])
            and is_count(v["repeat"])
            and v["repeat"] >= 1
            and isinstance(v["seed"], int)
        ),
        "a mapping {of: trial number, repeat: count >= 1, seed: integer}",
    ),
    PLACEMENT: (
        lambda v: (
            isinstance(v, dict)
            and set(v) == {"device", "sharing"}
            and is_text(v["device"])
            and is_count(v["sharing"])
            and v["sharing"] >= 1
        ),
        "a mapping {device: text, sharing: count >= 1}",
    ),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


class Attrs:
    """A trial's user attributes read through SHAPES: a value of the wrong shape reads as absent and is
    noted in ``damage``."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs
        self.damage: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        value = self.attrs.get(key)
        if value is None:
            return default
        valid, what = SHAPES[key]
        if valid(value):
            return value
        self.damage.append(f"{key}: must be {what} (got {_shown(value)})")
        return default

    def arch(self, trained: bool) -> dict[str, Any]:
        """The architecture when it validates as an ArchConfig ({} and a note if not; a trained trial needs one)."""
        from pydantic import ValidationError

        from nas.arch import ArchConfig
        from nas.errors import validation_problems

        if self.attrs.get(ARCH) is None:
            if trained:
                self.damage.append(f"{ARCH}: missing (a trained trial records its architecture)")
            return {}
        arch = self.get(ARCH)
        if arch is None:
            return {}
        try:
            ArchConfig.model_validate(arch)
        except (ValidationError, TypeError, ValueError) as exc:
            problems = validation_problems(exc) if isinstance(exc, ValidationError) else [("", str(exc))]
            shown = "; ".join(f"{key}: {message}" if key else message for key, message in problems[:3])
            self.damage.append(f"{ARCH}: not a valid architecture ({shown})")
            return {}
        return arch


def trial_number(v: Any) -> int | None:
    return v if is_count(v) else None
