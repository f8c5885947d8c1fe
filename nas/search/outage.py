"""Riding out a database outage: a worker's storage calls wait for the database to come back.

A PostgreSQL or MySQL restart, a failover or a network blip breaks every open connection. Without help,
the next storage call of every worker raises and every worker exits, each leaving its trial RUNNING. With
:func:`ride_out`, a call of a worker's RDB storage that failed because its connection did (SQLAlchemy's
OperationalError or InterfaceError, as such or as the cause of Optuna's StorageInternalError) is tried
again, with a growing pause, for up to ``limit`` seconds; any other error is raised at once, as is the
connection error once the limit has passed. The connection pool's ``pool_pre_ping`` replaces the dead
connections on the next try.

After an outage every worker's heartbeats are old. So that the first worker back does not fail the others'
live trials as stale, :func:`settling` says, for a grace period after this process saw the storage return,
that stale trials are not to be judged yet: in that time the other workers beat again.

One call is not made twice when its first attempt could have landed: Optuna commits each call in one
transaction, and a connection error before the commit rolls it back. A connection that breaks between the
commit and its acknowledgement is the one case where a retried write repeats; for ``tell`` Optuna then
raises UpdateFinishedTrialError, which the worker loop treats as a trial finished elsewhere.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ride_out", "retried", "settling", "is_connection_error", "OUTAGE_LIMIT_S"]

OUTAGE_LIMIT_S = 600.0  # how long a worker waits for its database before it gives up
_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)  # between the first tries, then _LAST_PAUSE
_LAST_PAUSE = 10.0

_state: dict[str, Any] = {"recovered": -float("inf"), "down_since": None, "grace": 0.0}
_lock = threading.Lock()


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error in its cause chain) is a lost or refused database connection."""
    import sqlalchemy.exc

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def _retrying(method: Callable[..., Any], name: str, limit: float) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        first_failure = None
        tries = 0
        while True:
            try:
                result = method(*args, **kwargs)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                now = time.monotonic()
                first_failure = first_failure if first_failure is not None else now
                if now - first_failure > limit:
                    raise
                with _lock:
                    if _state["down_since"] is None:
                        _state["down_since"] = now
                        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        print(f"storage unreachable ({line}); retrying for up to {limit:.0f}s", file=sys.stderr)
                time.sleep(_PAUSES[tries] if tries < len(_PAUSES) else _LAST_PAUSE)
                tries += 1
                continue
            if first_failure is not None:
                with _lock:
                    if _state["down_since"] is not None:
                        print(f"storage back after {time.monotonic() - _state['down_since']:.0f}s", file=sys.stderr)
                        _state["down_since"] = None
                    _state["recovered"] = time.monotonic()
            return result

    return call


def ride_out(storage: Any, grace: float, limit: float = OUTAGE_LIMIT_S) -> Any:
    """``storage`` (an Optuna RDBStorage) with every storage and heartbeat method retried across a lost
    connection (see the module doc), and the private ones Optuna's _CachedStorage calls; the same object,
    its methods replaced on the instance. ``grace``: the heartbeat grace period, for :func:`settling`."""
    _state["grace"] = float(grace)
    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat

    names = {n for base in (optuna.storages.BaseStorage, BaseHeartbeat) for n in vars(base) if not n.startswith("__")}
    names |= {"_get_stale_trial_ids", "_get_trials", "_create_new_trial", "_get_best_trial_id", "_set_trial_param"}
    for name in sorted(names):
        method = getattr(storage, name, None)
        if callable(method):
            setattr(storage, name, _retrying(method, name, limit))
    return storage


def retried(call: Callable[[], Any], limit: float = OUTAGE_LIMIT_S) -> Any:
    """``call()`` tried again across a lost connection as a storage method is (for one transaction of nas's own,
    which a connection error rolls back whole)."""
    return _retrying(call, getattr(call, "__name__", "call"), limit)()


def settling() -> bool:
    """True while this process's storage is down and for a grace period after it came back."""
    with _lock:
        return _state["down_since"] is not None or time.monotonic() - _state["recovered"] < _state["grace"]
