"""Fault tolerance and scale-out: heartbeats on every storage, and local worker processes.

Optuna's RDB storages keep a heartbeat table: a running trial's worker records a beat every
``interval`` seconds, and any worker that finds a running trial without a beat for ``grace`` seconds
marks it FAIL and runs Optuna's RetryHeartbeatStaleTrialCallback, which enqueues the same parameters
again. Optuna's JournalStorage has no heartbeat, so :class:`HeartbeatJournalStorage` gives it the same
contract with a lease in the trial's system attributes (``nas:heartbeat``, a wall-clock time), checked
by the same ``optuna.storages.fail_stale_trials``. The worker loop (nas.search.loop) beats from a thread
while a trial runs and calls fail_stale_trials from that thread too, so a dead worker's trial is
failed within the grace period even while every other worker is busy training.

A trial also records which process runs it (:func:`mark_worker`); a worker on the same machine fails
it at once when that process is gone (:func:`fail_dead_here`), so a re-run after a crash or a kill
does not wait out the grace period. And while a trial's state is being written, Ctrl-C waits
(:data:`sigint`): an interrupt lands in training or between trials, never half-way through a write.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import functools
import json
import os
import signal
import socket
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

from nas.cpu import available_cpus
from nas.search import records
from nas.search.batch import rdb_backend
from nas.search.outage import settling
from nas.search.records import Status

__all__ = [
    "Heartbeats",
    "HeartbeatJournalStorage",
    "beating",
    "fail_stale",
    "fail_dead_here",
    "holding_a_place",
    "trial_place",
    "mark_worker",
    "worker_id",
    "sigint",
    "SigintGuard",
    "MAX_RETRY",
    "LocalWorkers",
]

MAX_RETRY = 2  # a trial whose worker dies this many times (an OOM kill, say) is not retried again
LEASE_ATTR = "nas:heartbeat"
RETRY_WINDOW = 30.0  # seconds a failed trial keeps its place while its worker queues the retry
WORKER_ATTR = "nas:worker"  # {"where": pid namespace, "pid", "started": process start, "since": wall time}


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
    return f"{socket.gethostname()}:{os.getpid()}"


# ---- Ctrl-C waits while a trial's state is written ------------------------------------------------
class SigintGuard:
    """Defers SIGINT inside :meth:`held` blocks (storage writes, a checkpoint save): the interrupt is
    raised as KeyboardInterrupt when the outermost block ends, so a trial is never left half-told.
    Outside them Ctrl-C interrupts at once, as usual. A third Ctrl-C within one block forces it.

    Active only inside :meth:`installed` in the main thread (signals reach only that thread), and
    only when SIGINT has Python's default handler (a process started with SIGINT ignored stays so).
    """

    FORCE_AFTER = 3

    def __init__(self) -> None:
        self.active = False
        self.depth = 0
        self.pending = 0
        self.swallow = False

    def _handler(self, signum: int, frame: Any) -> None:
        if self.swallow:
            return
        if self.depth == 0:
            raise KeyboardInterrupt
        self.pending += 1
        if self.pending >= self.FORCE_AFTER:
            self.pending = 0
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        main = threading.current_thread() is threading.main_thread()
        if self.active or not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return
        previous = signal.signal(signal.SIGINT, self._handler)
        self.active, self.depth, self.pending, self.swallow = True, 0, 0, False
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            self.active = False

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Inside a held block: Ctrl-C interrupts at once again (training), and one that waited is raised now."""
        if not self.active or threading.current_thread() is not threading.main_thread() or self.swallow:
            yield
            return
        depth, self.depth = self.depth, 0
        try:
            if self.pending:
                self.pending = 0
                raise KeyboardInterrupt
            yield
        finally:
            self.depth = depth

    @contextlib.contextmanager
    def held(self, swallow: bool = False) -> Iterator[None]:
        """Ctrl-C waits until the block ends; with ``swallow`` (cleanup after an interrupt) it is dropped."""
        if not self.active or threading.current_thread() is not threading.main_thread():
            yield
            return
        self.depth += 1
        was = self.swallow
        self.swallow = was or swallow
        try:
            yield
        finally:
            self.depth -= 1
            self.swallow = was
            if self.depth == 0 and self.pending:
                self.pending = 0
                raise KeyboardInterrupt


sigint = SigintGuard()


# ---- which process runs a trial; failing the trials of processes that are gone ------------------
@functools.cache
def _pid_space() -> str:
    """Where a pid means one process: this host, this boot, this pid namespace."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "/".join(parts)


def _proc_start(pid: int) -> tuple[str, int | None] | None:
    """(state, start time in clock ticks since boot) of process ``pid`` from /proc; None when it is gone;
    ("?", None) where /proc cannot tell."""
    if os.name == "nt":  # no /proc, and os.kill would terminate the process: the heartbeat decides
        return ("?", None)
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:  # it exists, owned by someone else
            pass
        return ("?", None)
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _alive(pid: int, started: int | None) -> bool:
    found = _proc_start(pid)
    if found is None or found[0] in ("Z", "X"):  # gone, or a zombie its parent has not reaped yet
        return False
    return started is None or found[1] is None or found[1] == started  # another start time: the pid was reused


def mark_worker(storage: BaseStorage, trial_id: int) -> None:
    """Record this process as the one running ``trial_id`` (see :func:`fail_dead_here`)."""
    own = _proc_start(os.getpid())
    mark: dict[str, Any] = {"where": _pid_space(), "pid": os.getpid(), "since": time.time()}
    mark["started"] = own[1] if own else None
    storage.set_trial_system_attr(trial_id, WORKER_ATTR, mark)


def fail_dead_here(study: optuna.Study) -> list[int]:
    """Fail the running trials whose process ran on this machine and is gone (killed, crashed), and queue
    their retries as a stale heartbeat would: no wait for the grace period. Returns their numbers."""
    storage = study._storage
    where, failed = _pid_space(), []
    for trial_id, started, mark in _running_marks(study):
        if not isinstance(mark, dict) or mark.get("where") != where or mark.get("pid") == os.getpid():
            continue
        pid, since, ticks = mark.get("pid"), mark.get("since"), mark.get("started")
        if not (isinstance(pid, int) and pid > 0 and isinstance(since, int | float)) or not (
            ticks is None or isinstance(ticks, int)
        ):
            continue  # a damaged mark: the heartbeat decides
        if since + 0.05 < started or _alive(pid, ticks):  # copied from the trial a retry re-runs, or alive
            continue
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    callback = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
    callback = callback or Heartbeats().callback()
    numbers = []
    for trial_id in failed:
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        callback(study, frozen)
        numbers.append(frozen.number)
    return numbers


def _running_marks(study: optuna.Study) -> list[tuple[int, float, Any]]:
    """(trial id, start time, :data:`WORKER_ATTR` mark or None) of each running trial. On a database storage one
    query reads just these (every heartbeat of every worker asks: reading the running trials whole was most of a
    beat's CPU); on any other, from the running trials."""
    storage = study._storage
    backend = rdb_backend(storage)
    if backend is None:
        running = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [
            (t._trial_id, t.datetime_start.timestamp() if t.datetime_start else 0.0, t.system_attrs.get(WORKER_ATTR))
            for t in running
        ]
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trial, attr = models.TrialModel, models.TrialSystemAttributeModel
    with _create_scoped_session(backend.scoped_session) as session:
        on = (attr.trial_id == trial.trial_id) & (attr.key == WORKER_ATTR)
        query = session.query(trial.trial_id, trial._datetime_start_utc, attr.value_json).outerjoin(attr, on)
        rows = query.filter(trial.study_id == study._study_id, trial.state == TrialState.RUNNING).all()
    out = []
    for trial_id, start, text in rows:  # Optuna stores the start as naive UTC
        started = start.replace(tzinfo=datetime.UTC).timestamp() if start is not None else 0.0
        try:
            mark = json.loads(text) if text is not None else None
        except ValueError:  # damaged: the heartbeat decides
            mark = None
        out.append((trial_id, started, mark))
    return out


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
            beat = trial.system_attrs.get(LEASE_ATTR, 0.0)
            beat = beat if isinstance(beat, int | float) and not isinstance(beat, bool) else 0.0  # damaged: none
            last = max(float(beat), started)  # a retry copies the old beat
            if now - last > self._heartbeats.grace:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeats.interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._callback


def fail_stale(study: optuna.Study) -> None:
    """Optuna's fail_stale_trials, then :func:`fail_dead_here`; never raising (a storage hiccup must not
    stop a worker). Each fails a trial and then queues its retry: the worker loop counts a trial failed
    this way as still running until its retry is queued (nas.search.loop). Not while the storage is settling
    after an outage (nas.search.outage): every heartbeat is old then, and live workers beat again first."""
    if settling():
        return
    with contextlib.suppress(Exception):
        fail_stale_trials(study)
    with contextlib.suppress(Exception):
        fail_dead_here(study)


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


# ---- places: which trials count towards a study's n_trials -------------------------------------
def trial_place(trial: FrozenTrial) -> tuple[int, int]:
    """Where a trial queues for one of the n_trials places: a retry takes the place of the trial it
    re-runs, ahead of fresh trials asked while that one was failing."""
    first = records.retry_of(trial)
    return (trial.number if first is None else first, trial.number)


def holding_a_place(trials: list[FrozenTrial], now: float) -> list[FrozenTrial]:
    """The trials that are not trained but may still fill a place: running ones, and failed ones whose
    worker is queueing their retry right now (see :func:`_awaiting_retry`)."""
    retried = {n for t in trials for n in records.retry_history(t)}
    return [t for t in trials if t.state == TrialState.RUNNING or _awaiting_retry(t, retried, now)]


def _awaiting_retry(trial: FrozenTrial, retried: set[int], now: float) -> bool:
    """Failed with a retry about to be queued: a stale or dead worker's trial (Optuna fails it, then queues
    the retry) or an interrupted one. Until the retry is queued (at most RETRY_WINDOW seconds) it keeps its
    place; else a fresh trial asked in between would take it and the retry would come too late."""
    if trial.state != TrialState.FAIL or trial.number in retried or trial.datetime_complete is None:
        return False
    if abs(now - trial.datetime_complete.timestamp()) > RETRY_WINDOW:
        return False
    status = records.status_of(trial)
    if status == Status.INTERRUPTED:
        return records.arch_hash_of(trial) is not None  # it trained: queued to resume from its checkpoint
    return status in (Status.RUNNING, None) and len(records.retry_history(trial)) < MAX_RETRY


@dataclass
class LocalWorkers:
    """``n`` `nas worker` processes on one study, on this machine; their output goes to
    ``run_dir/worker-<i>.log``. Each gets an equal share of the CPU cores (``threads``). With ``devices``
    (one entry per worker, round-robin when fewer: a GPU index, or "cpu"), worker ``i`` sees only its
    GPU through CUDA_VISIBLE_DEVICES (none for "cpu"); an entry listed K times puts K workers, each with
    its own CUDA context, on that device. Each worker records its device and how many workers share it
    (``nas worker --device D --sharing K``) with every trial it runs."""

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
        return max(1, available_cpus() // self.n)

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.study_name

    def device(self, index: int) -> str | None:
        return self.devices[index % len(self.devices)] if self.devices else None

    def sharing(self, index: int) -> int:
        """How many of the ``n`` workers run on worker ``index``'s device."""
        return sum(self.device(i) == self.device(index) for i in range(self.n))

    def argv(self, index: int) -> list[str]:
        argv = [sys.executable, "-m", "nas", "worker", "--study", self.study_name, "--storage", self.storage]
        argv += ["--runs-dir", str(self.runs_dir), "--index", str(index), "--quiet"]
        argv += ["--n-trials", str(self.n_trials), "--threads", str(self.threads)]
        if self.timeout is not None:
            argv += ["--timeout", str(self.timeout)]
        device = self.device(index)
        if device is not None:
            argv += ["--device", device, "--sharing", str(self.sharing(index))]
        return argv

    def start(self) -> None:
        for index in range(self.n):
            env = dict(os.environ)
            device = self.device(index)
            if device is not None:
                env["CUDA_VISIBLE_DEVICES"] = "" if device == "cpu" else device
            log = (self.run_dir / f"worker-{index}.log").open("a")
            self.procs.append(subprocess.Popen(self.argv(index), env=env, stdout=log, stderr=subprocess.STDOUT))

    def describe(self) -> str:
        if self.devices:
            counts: dict[str, int] = {}
            for i in range(self.n):
                counts[self.device(i) or "?"] = counts.get(self.device(i) or "?", 0) + 1
            shown = ", ".join(f"{'CPU' if d == 'cpu' else 'GPU ' + d} x{k}" for d, k in counts.items())
            where = f"{shown}; {self.threads} CPU threads each"
        else:
            where = f"{self.threads} CPU threads each"
        return f"started {self.n} workers ({where}); their output: {self.run_dir}/worker-*.log"

    def running(self) -> bool:
        return [p.poll() for p in self.procs].count(None) > 0  # poll each: a dead worker is reaped at once

    def interrupt(self) -> None:
        """Ctrl-C to every worker, then wait: each marks its running trial and queues it again."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            p.wait()

    def failures(self) -> list[str]:
        return [f"worker {i}: exit {p.returncode}" for i, p in enumerate(self.procs) if p.returncode]
