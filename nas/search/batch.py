"""Several user attributes of a running trial in one storage write.

Optuna writes each ``set_user_attr`` on its own: on PostgreSQL or MySQL a transaction (and its round trips)
each, on a journal a locked append each. A trial's claim and its result are a dozen attributes apiece, and
with many workers those writes are most of a trial's coordination. :func:`set_user_attrs` writes them in one
transaction on an RDB storage (retried as one across a lost connection, nas.search.outage) and in one append
on a journal, as the same rows and log entries Optuna writes; any other storage gets one call each.
"""

from __future__ import annotations

from typing import Any

import optuna

from nas.search.outage import retried

__all__ = ["rdb_backend", "set_user_attrs"]


def rdb_backend(storage: Any) -> optuna.storages.RDBStorage | None:
    """The RDBStorage behind ``storage`` (Optuna wraps one in a _CachedStorage); None for any other storage."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Set ``attrs`` on the running ``trial`` (its Trial object's cached copy too)."""
    if not attrs:
        return
    storage = trial.study._storage
    backend = rdb_backend(storage)
    if backend is not None:
        retried(lambda: _rdb(backend, trial._trial_id, attrs))
    elif isinstance(storage, optuna.storages.JournalStorage):
        _journal(storage, trial._trial_id, attrs)
    else:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
    cached = getattr(trial, "_cached_frozen_trial", None)
    if cached is not None:
        cached.user_attrs.update(attrs)


def _rdb(storage: optuna.storages.RDBStorage, trial_id: int, attrs: dict[str, Any]) -> None:
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session, True) as session:
        for key, value in attrs.items():
            storage._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, key, value)


def _journal(storage: optuna.storages.JournalStorage, trial_id: int, attrs: dict[str, Any]) -> None:
    from optuna.storages.journal._storage import JournalOperation

    with storage._thread_lock:  # as JournalStorage.set_trial_user_attr, with one append for all
        worker = storage._replay_result.worker_id
        op = JournalOperation.SET_TRIAL_USER_ATTR
        logs = [
            {"op_code": op, "worker_id": worker, "trial_id": trial_id, "user_attr": {k: v}} for k, v in attrs.items()
        ]
        storage._backend.append_logs(logs)
        storage._sync_with_backend()
