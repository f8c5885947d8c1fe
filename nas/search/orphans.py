"""Running trials that never beat, on a database storage.

A worker asks Optuna for a trial (the storage creates it RUNNING), then marks it and starts beating. A worker
killed between the two, or an ask that a lost connection made twice (the first commit landed, its answer did
not: nas.search.outage), leaves a RUNNING trial with no heartbeat. Optuna's RDBStorage never judges such a
trial stale (it looks only at trials with a heartbeat), so it holds a place in the study for ever: at 64
workers on PostgreSQL two of them stalled every worker at 1,998 of 2,000 trained (bench/load.py). The journal's
leases (nas.search.workers.HeartbeatJournalStorage) already count a trial's start as its first beat;
:func:`count_unbeaten_as_stale` makes a database storage do the same, so Optuna fails such a trial after the
grace period and its stale-trial callback queues the retry.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import optuna

__all__ = ["count_unbeaten_as_stale"]


def count_unbeaten_as_stale(storage: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    """``storage`` (with heartbeats) whose stale trials also include the RUNNING ones that never beat and
    started more than the grace period ago; the same object, its ``_get_stale_trial_ids`` replaced."""
    beaten = storage._get_stale_trial_ids

    def stale_trial_ids(study_id: int) -> list[int]:
        return [*beaten(study_id), *_unbeaten(storage, study_id)]

    storage._get_stale_trial_ids = stale_trial_ids  # type: ignore[method-assign]
    return storage


def _unbeaten(storage: optuna.storages.RDBStorage, study_id: int) -> list[int]:
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    grace = storage.grace_period if storage.grace_period is not None else 2 * (storage.heartbeat_interval or 0)
    # Optuna stores a trial's start as naive UTC (TrialModel._datetime_start_utc): the asking client's clock
    cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=grace)
    with _create_scoped_session(storage.scoped_session, True) as session:
        rows: Any = (
            session.query(models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == study_id)
            .filter(models.TrialModel.state == optuna.trial.TrialState.RUNNING)
            .filter(~models.TrialModel.heartbeats.any())
            .filter(models.TrialModel._datetime_start_utc < cutoff)
            .all()
        )
    return [trial_id for (trial_id,) in rows]
