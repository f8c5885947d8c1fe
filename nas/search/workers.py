"""Fault tolerance and scale-out: heartbeats on every storage, and local worker processes.

Optuna's RDB storages keep a heartbeat table: a running trial's worker records a beat every
``interval`` seconds, and any worker that finds a running trial without a beat for ``grace`` seconds
marks it FAIL and runs Optuna's RetryHeartbeatStaleTrialCallback, which enqueues the same parameters
again. Optuna's JournalStorage has no heartbeat, so :class:`HeartbeatJournalStorage` gives it the same
contract with a lease in the trial's system attributes (``nas:heartbeat``, a wall-clock time), checked
by the same ``optuna.storages.fail_stale_trials``. The worker loop (nas.search.loop) beats from a thread
while a trial runs and calls fail_stale_trials from that thread too, so a dead worker's trial is
failed within the grace period even while every other worker is busy training.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "Heartbeats",
    "HeartbeatJournalStorage",
    "beating",
    "fail_stale",
    "worker_id",
    "MAX_RETRY",
    "LocalWorkers",
]

MAX_RETRY = 2  # a trial whose worker dies this many times (an OOM kill, say) is not retried again
LEASE_ATTR = "nas:heartbeat"


@dataclass(frozen=True)
class Heartbeats:
    interval: int = 10  # seconds between beats
    grace: int = 60  # seconds without a beat before a running trial is failed and retried

    def __post_init__(self) -> None:
        if self.interval < 1 or self.grace <= self.interval:
            raise ValueError(f"heartbeat interval {self.interval}s and grace {self.grace}s: need 1 <= interval < grace")

    def callback(self) -> Callable[[optuna.Study, FrozenTrial], None]:
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def worker_id() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """JournalStorage with leases: the heartbeat is the trial's ``nas:heartbeat`` system attribute."""

    def __init__(self, backend: Any, heartbeats: Heartbeats) -> None:
        super().__init__(backend)
        self._heartbeats = heartbeats
        self._callback = heartbeats.callback()

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError):
            self.set_trial_system_attr(trial_id, LEASE_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            last = max(float(trial.system_attrs.get(LEASE_ATTR, 0.0)), started)  # a retry copies the old beat
            if now - last > self._heartbeats.grace:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeats.interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._callback


def fail_stale(study: optuna.Study) -> None:
    """Optuna's fail_stale_trials, never raising (a storage hiccup must not stop a worker)."""
    with contextlib.suppress(Exception):
        fail_stale_trials(study)


@contextlib.contextmanager
def beating(study: optuna.Study, trial_id: int | None, storage: BaseStorage) -> Iterator[None]:
    """While the block runs: beat for ``trial_id`` and fail other workers' stale trials, every interval."""
    if not isinstance(storage, BaseHeartbeat) or storage.get_heartbeat_interval() is None:
        yield
        return
    interval = storage.get_heartbeat_interval()
    stop = threading.Event()

    def loop() -> None:
        while True:
            if trial_id is not None:
                with contextlib.suppress(Exception):
                    storage.record_heartbeat(trial_id)
            fail_stale(study)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="nas-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


@dataclass
class LocalWorkers:
    """``n`` `nas worker` processes on one study, on this machine; their output goes to
    ``run_dir/worker-<i>.log``. On CPU each gets an equal share of the cores (``threads``); with
    ``devices`` each is pinned to one GPU through CUDA_VISIBLE_DEVICES."""

    study_name: str
    storage: str
    runs_dir: Path
    n: int
    n_trials: int
    timeout: float | None = None
    devices: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def threads(self) -> int:
        return 0 if self.devices else max(1, (os.cpu_count() or 1) // self.n)

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.study_name

    def argv(self, index: int) -> list[str]:
        argv = [sys.executable, "-m", "nas", "worker", "--study", self.study_name, "--storage", self.storage]
        argv += ["--runs-dir", str(self.runs_dir), "--index", str(index), "--quiet"]
        argv += ["--n-trials", str(self.n_trials)] + (["--threads", str(self.threads)] if self.threads else [])
        if self.timeout is not None:
            argv += ["--timeout", str(self.timeout)]
        return argv

    def start(self) -> None:
        for index in range(self.n):
            env = dict(os.environ)
            if self.devices:
                env["CUDA_VISIBLE_DEVICES"] = self.devices[index % len(self.devices)]
            log = (self.run_dir / f"worker-{index}.log").open("a")
            self.procs.append(subprocess.Popen(self.argv(index), env=env, stdout=log, stderr=subprocess.STDOUT))

    def describe(self) -> str:
        where = f"GPUs {','.join(self.devices)}" if self.devices else f"{self.threads} CPU threads each"
        return f"started {self.n} workers ({where}); their output: {self.run_dir}/worker-*.log"

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def interrupt(self) -> None:
        """Ctrl-C to every worker, then wait: each marks its running trial and queues it again."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            p.wait()

    def failures(self) -> list[str]:
        return [f"worker {i}: exit {p.returncode}" for i, p in enumerate(self.procs) if p.returncode]
