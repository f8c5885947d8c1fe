"""The worker loop: ask → claim → dedupe → train → tell (→ requeue), until the study has N trained trials.

Several workers may run it on one study at once. A worker starts a trial only while the trained
trials plus the ones holding a place (running, or failed with their retry about to be queued) fall
short of ``n_trials``; otherwise it waits, because a running trial may still fail (its worker killed)
and need a re-run. A trial that lost the race (another worker asked at the same moment) is told FAIL
as "surplus" before it trains, so the study ends with exactly ``n_trials`` trained; a retry keeps
the place of the trial it re-runs, ahead of fresh trials. Ctrl-C waits while a trial's state is
written, and a trial this worker leaves (Ctrl-C, an error) is failed with its cause, never left
RUNNING. Optuna stays here and in the CLI; the trial runner knows nothing of it.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.search import confirm, feedback, records
from nas.search.checkpoints import held_checkpoint
from nas.search.config import SearchConfig
from nas.search.records import Status
from nas.search.reporter import make_reporter
from nas.search.samplers import CurvePruner, make_pruner, queue_unseen
from nas.search.storage import OneRead, record_stop, store_artifacts
from nas.search.study import prepare_study
from nas.search.summary import Callbacks, SearchInterrupted, SearchSummary
from nas.search.workers import beating, fail_stale, holding_a_place, mark_worker, sigint, trial_place, worker_id

__all__ = ["run_search", "work"]

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# nas's worker loop (ask/tell) beats and fails stale trials itself (nas.search.workers), as Study.optimize would
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

EXHAUSTED_AFTER = 100  # consecutive samples that are infeasible or duplicates: the space is exhausted
FALLBACK_AFTER = 2  # duplicates in a row, then an unseen architecture is queued (a sampler that repeats itself)
FAILURES_IN_A_ROW = 5
INFEASIBLE_CONSTRAINT = "constraints:space"  # Optuna's constraint key: > 0 marks a trial infeasible to its samplers


@dataclass
class _Worker:
    """What one worker's stages share."""

    study: optuna.Study
    config: SearchConfig
    curve_pruner: CurvePruner | None
    artifacts: Any
    cb: Callbacks


def run_search(config: SearchConfig, callbacks: Callbacks | None = None) -> SearchSummary:
    """Run (or resume) the study in this process until ``n_trials`` trials have trained, the timeout, or
    exhaustion."""
    cb = callbacks or Callbacks()
    study = prepare_study(config, cb.log)
    return work(study, config, cb)


def work(study: optuna.Study, config: SearchConfig, callbacks: Callbacks | None = None) -> SearchSummary:
    """The worker loop (see the module doc). Ctrl-C raises :class:`SearchInterrupted` (a KeyboardInterrupt)
    once the running trial is marked interrupted and queued again."""
    cb = callbacks or Callbacks()
    config.run_dir.mkdir(parents=True, exist_ok=True)
    (config.run_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    artifacts = optuna.artifacts.FileSystemArtifactStore(str(config.run_dir / "artifacts"))
    curve_pruner = make_pruner(config.pruner, config.protocol, len(study.directions) > 1)[1]
    worker = _Worker(study, config, curve_pruner, artifacts, cb)
    started = time.monotonic()
    before = records.trained_count(study)

    def summary(stopped: str) -> SearchSummary:
        try:
            trained = records.trained_count(study)
        except Exception:  # the storage went away too: say what is known
            trained = before
        elapsed = time.monotonic() - started
        return SearchSummary(study, trained, trained - before, stopped, config.run_dir, elapsed, config.n_trials)

    with sigint.installed():
        try:
            result = summary(_loop(worker, started))
            with sigint.held():
                record_stop(study, result.stopped_because, worker_id())
            return result
        except KeyboardInterrupt:
            with sigint.held(swallow=True):  # a second Ctrl-C (the terminal's and a parent's) changes nothing now
                interrupted = summary("interrupted (Ctrl-C)")
                record_stop(study, interrupted.stopped_because, worker_id())
            raise SearchInterrupted(interrupted) from None


def _loop(worker: _Worker, started: float) -> str:
    """Run trials until the study is done or another reason to stop; returns that reason."""
    study, config, cb = worker.study, worker.config, worker.cb
    poll = min(2.0, config.heartbeats.interval)
    wasted = failures = duplicates = 0
    waiting = False
    while True:
        read = OneRead(study)  # this read of the trials also serves the ask below (the queue's and TPE's reads)
        with read:
            with sigint.held():  # failing a stale trial and queueing its retry go together
                fail_stale(study)
            trials = records.read_trials(study)[0]  # a trial Optuna cannot read back is skipped, not a crash
        done = sum(1 for t in trials if records.is_trained(t))
        placed = holding_a_place(trials, time.time())
        stopped = _stop_reason(study, config, done, time.monotonic() - started, wasted, failures)
        if stopped and done >= config.n_trials and config.protocol.confirm is not None:
            timed_out = config.timeout is not None and time.monotonic() - started > config.timeout
            with sigint.held():  # enqueueing the confirmations nobody holds
                phase = confirm.advance(study, config.protocol, trials)
            if not (phase.done or timed_out or failures >= FAILURES_IN_A_ROW):
                if phase.queued:
                    failures = failures + 1 if _ask_and_run(worker) == Status.FAILED else 0
                else:
                    time.sleep(poll)  # the rest run on other workers
                continue
            stopped += f"; {phase.line()}" + (" (cut by --timeout)" if timed_out and not phase.done else "")
        if stopped:
            return stopped
        if done + len(placed) >= config.n_trials:
            if not waiting:
                cb.log(
                    f"waiting: {done} trained and {len(placed)} running (trials "
                    f"{', '.join(str(t.number) for t in placed)}) may complete the study"
                )
                waiting = True
            time.sleep(poll)
            continue
        waiting = False
        outcome = _ask_and_run(worker, read)
        wasted = wasted + 1 if outcome in (Status.INFEASIBLE, Status.DUPLICATE) else 0
        failures = failures + 1 if outcome == Status.FAILED else 0
        duplicates = duplicates + 1 if outcome == Status.DUPLICATE else 0
        if duplicates >= FALLBACK_AFTER:
            duplicates = 0
            with sigint.held():
                queued = queue_unseen(study, config.space, config.seed, records.fallback_attrs(FALLBACK_AFTER))
            if queued:
                cb.log(f"{FALLBACK_AFTER} duplicates in a row: queued an unseen architecture ({queued})")
            else:  # 256 random draws found nothing unclaimed: the space is as good as used up
                return "the space ran out of new architectures (no unclaimed one in 256 random draws)"


def _stop_reason(
    study: optuna.Study, config: SearchConfig, done: int, elapsed: float, wasted: int, failures: int
) -> str | None:
    if done >= config.n_trials:
        return f"{done} trials trained (--n-trials {config.n_trials})"
    if config.timeout is not None and elapsed > config.timeout:
        return f"timeout after {elapsed:.0f}s (--timeout {config.timeout:g})"
    if wasted >= EXHAUSTED_AFTER or _grid_exhausted(study):
        return f"the space ran out of new architectures (last {wasted} samples were infeasible or seen)"
    if failures >= FAILURES_IN_A_ROW:
        return f"{failures} trials failed in a row (causes: nas status {config.study_name})"
    return None


def _grid_exhausted(study: optuna.Study) -> bool:
    sampler = study.sampler
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


def _ask_and_run(worker: _Worker, read: OneRead | None = None) -> str:
    """Ask for a trial and run it while beating; returns its nas_status (or "stale"). The ask reads the trials
    once (``read``: the loop's read just before it, else its own; see nas.search.storage.OneRead).

    Ctrl-C waits while the trial's state is written (only training is interrupted at once), and a trial
    this worker leaves, by Ctrl-C or an error, is failed with its cause: it never stays RUNNING."""
    study, cb = worker.study, worker.cb
    trial: optuna.Trial | None = None
    try:
        with sigint.held():
            with read or OneRead(study):
                trial = study.ask()
            mark_worker(study._storage, trial._trial_id)
            with beating(study, trial._trial_id, study._storage):
                try:
                    outcome = _run_one(worker, trial)
                except optuna.exceptions.UpdateFinishedTrialError:
                    outcome = "stale"
                    cb.log(
                        f"trial {trial.number}: another worker failed it as stale while it ran (no heartbeat "
                        f"within {worker.config.heartbeats.grace}s); its retry resumes from the checkpoint"
                    )
    except BaseException as exc:
        if trial is not None:
            with sigint.held(swallow=True):
                _abandon(worker, trial, exc)
        raise
    try:
        finished = study._storage.get_trial(trial._trial_id)
    except (ValueError, TypeError, KeyError):  # stored damaged: nothing to show
        return outcome
    cb.trial_finished(finished, study)
    return outcome


# ---- the stages of one trial ----------------------------------------------------------------------
def _run_one(worker: _Worker, trial: optuna.Trial) -> str:
    """Claim, dedupe, train and tell one trial; returns its nas_status."""
    study, config = worker.study, worker.config
    frozen = study._storage.get_trial(trial._trial_id)
    confirming = records.confirm_of(frozen)  # a confirmation (nas.search.confirm)
    with OneRead(study):  # the surplus check's read (after the ask) serves the sampler's reads too
        surplus = confirming is None and _surplus(study, frozen, config.n_trials)
        sample = None if surplus else config.space.sample(trial)
    if sample is None:
        _requeue(study, trial)
        records.set_status(trial, Status.SURPLUS, f"surplus: another worker's trial completes the {config.n_trials}")
        study.tell(trial, state=TrialState.FAIL)
        return Status.SURPLUS
    arch = _claim(worker, trial, sample, records.retry_of(frozen))
    if arch is None:
        return Status.INFEASIBLE
    if confirming is not None:
        if (other := confirm.standing_down_for(study, study._storage.get_trial(trial._trial_id))) is not None:
            records.set_status(trial, Status.SURPLUS, f"surplus: trial {other} runs this confirmation")
            study.tell(trial, state=TrialState.FAIL)
            return Status.SURPLUS
    elif _dedupe(worker, trial, arch):
        return Status.DUPLICATE
    return _train_and_tell(worker, trial, arch, confirming)


def _surplus(study: optuna.Study, trial: FrozenTrial, n_trials: int) -> bool:
    """True when the trained trials and those ahead of this one (running, awaiting their retry, or a
    queued retry, with an earlier place: see nas.search.workers.trial_place) already make ``n_trials``."""
    trials = records.read_trials(study)[0]
    mine = trial_place(trial)
    placed = {t.number for t in holding_a_place(trials, time.time())}
    ahead = sum(
        1
        for t in trials
        if records.is_trained(t)
        or (
            t.number != trial.number
            and trial_place(t) < mine
            and (t.number in placed or (t.state == TrialState.WAITING and records.retry_of(t) is not None))
        )
    )
    return ahead >= n_trials


def _claim(worker: _Worker, trial: optuna.Trial, sample: Any, retry_of: int | None) -> Any:
    """Claim the sampled architecture (returns None for an infeasible ``sample``). An infeasible sample is
    told PRUNED with a violated constraint: TPE then ranks it below every feasible trial and steers away
    from its region (a FAIL trial teaches TPE nothing, and a space whose constraints reject most of the
    grid drew thousands of rejected samples per trained trial). It never counts as trained (its status)."""
    study, config = worker.study, worker.config
    if sample.arch is None:
        records.set_status(trial, Status.INFEASIBLE, f"infeasible: {sample.reason}")
        study._storage.set_trial_system_attr(trial._trial_id, INFEASIBLE_CONSTRAINT, 1.0)
        study.tell(trial, state=TrialState.PRUNED)
        worker.cb.log(f"trial {trial.number}: infeasible: {sample.reason}")
        return None
    killed = (
        f"killed: worker {worker_id()} stopped beating (no heartbeat for {config.heartbeats.grace}s); "
        "retried from its checkpoint"
    )
    placement = config.placement.to_dict() if config.placement is not None else None
    records.write_claim(trial, sample.arch, worker_id(), killed, retry_of, placement)
    return sample.arch


def _dedupe(worker: _Worker, trial: optuna.Trial, arch: Any) -> bool:
    """Stand down when another trial trained or is training the same architecture (True: told)."""
    study = worker.study
    duplicate = _duplicate_of(study, trial.number, arch.arch_hash())
    if duplicate is None:
        return False
    of = f"duplicate of trial {duplicate.number}"
    if duplicate.state == TrialState.RUNNING:
        records.write_duplicate(trial, duplicate.number, f"{of}, running on another worker")
        study.tell(trial, state=TrialState.PRUNED)
    elif duplicate.state == TrialState.COMPLETE:
        records.write_duplicate(trial, duplicate.number, f"{of}: its values are reused")
        study.tell(trial, duplicate.values)
    else:
        records.write_duplicate(trial, duplicate.number, f"{of} (pruned)")
        study.tell(trial, state=TrialState.PRUNED)
    worker.cb.log(f"trial {trial.number}: duplicate of trial {duplicate.number} ({arch.summary()})")
    return True


def _duplicate_of(study: optuna.Study, number: int, arch_hash: str) -> FrozenTrial | None:
    """A trained trial of the same architecture, or one running on another worker. Each of two workers
    that claim the same architecture at once writes its claim before reading the other's, so at least
    one of them sees the other and stands down: an architecture never trains twice.

    A trial whose status already says trained but whose tell has not landed (still RUNNING) counts as
    running: between the two writes it is neither, and a fresh claim of its architecture in that window
    trained it a second time (1 of 1,000 trials at 64 workers on PostgreSQL, bench/load.py)."""
    running = None
    for other in records.trials_of_arch(study, arch_hash, besides=number):
        if records.is_trained(other):
            return other
        if other.state == TrialState.RUNNING and records.status_of(other) in (Status.RUNNING, Status.TRAINED):
            running = running or other
    return running


def _train_and_tell(worker: _Worker, trial: optuna.Trial, arch: Any, confirming: dict[str, int] | None = None) -> str:
    """Train and tell; a confirmation trains with its repeat's seed, unpruned and with every task."""
    from nas.trial import run_trial  # looked up at call time: benchmarks replace it with a table

    config, cb = worker.config, worker.cb
    if confirming is not None:
        config = dataclasses.replace(config, protocol=confirm.protocol_for(config.protocol, confirming["repeat"]))
    checkpoint = held_checkpoint(config, arch, cb.log)
    cb.trial_started(trial.number, arch.summary())
    try:
        # Training: Ctrl-C stops it at once (the reporter and checkpoint saves hold it again); the trial is then
        # marked interrupted and queued again by _abandon.
        with sigint.released():
            result = run_trial(
                arch,
                config.protocol,
                reporter=make_reporter(
                    worker.study, config.protocol, worker.curve_pruner, trial, arch, confirming is None
                ),
                on_step=cb.step,
                on_stage=cb.stage,
                keep_model=config.keep_weights,
                checkpoint=checkpoint,
                task_gate=None if confirming else feedback.task_gate(worker.study, config.protocol, trial.number),
            )
    except optuna.exceptions.UpdateFinishedTrialError:
        raise
    except Exception as exc:
        _fail(worker, trial, exc, checkpoint)
        return Status.FAILED
    if result.resumed_from_step is not None:
        cb.log(f"trial {trial.number}: resumed from the checkpoint at step {result.resumed_from_step}")
    feedback.add_study_prediction(worker.study, worker.config.protocol, trial.number, result)
    records.write_result(trial, result)
    try:
        store_artifacts(trial, result, worker.artifacts, worker.config.keep_weights)
    except OSError as exc:  # a full disk: the curve file is lost, the trial's result is in the storage
        cb.log(f"trial {trial.number}: its artifacts were not stored ({exc.strerror or exc}); its result was")
    outcome = _tell(worker, trial, result, Status.TRAINED if confirming is None else Status.CONFIRMATION)
    if checkpoint is not None:
        checkpoint.clear()
    return outcome


def _abandon(worker: _Worker, trial: optuna.Trial, exc: BaseException) -> None:
    """This worker leaves ``trial`` (Ctrl-C, or an error outside training): if it is still running, fail it
    with the cause; an interrupted trial that was claimed goes back in the queue, to resume from its
    checkpoint. Never raises: the exception that got here is what the caller sees."""
    study = worker.study
    try:
        frozen = study._storage.get_trial(trial._trial_id)
        if frozen.state != TrialState.RUNNING:
            return
        if isinstance(exc, KeyboardInterrupt):
            records.set_status(trial, Status.INTERRUPTED, "interrupted (Ctrl-C); re-run the same command to continue")
            study.tell(trial, state=TrialState.FAIL)
            if records.arch_hash_of(frozen) is not None:
                _requeue(study, trial, retry=True)
        else:
            lines = traceback.format_exception(exc)
            records.write_failure(trial, f"exception: {type(exc).__name__}: {exc}", "".join(lines).splitlines())
            study.tell(trial, state=TrialState.FAIL)
    except Exception as error:  # the storage is gone too: the heartbeat (or a re-run here) fails the trial
        worker.cb.log(f"trial {trial.number}: could not mark it failed ({type(error).__name__}: {error})")


def _fail(worker: _Worker, trial: optuna.Trial, exc: Exception, checkpoint: Any) -> None:
    lines = traceback.format_exc().strip().splitlines()
    where = next((line.strip() for line in reversed(lines) if line.strip().startswith("File ")), "")
    cause = f"exception: {type(exc).__name__}: {exc}" + (f" ({where})" if where else "")
    records.write_failure(trial, cause, lines)
    worker.study.tell(trial, state=TrialState.FAIL)
    if checkpoint is not None:
        checkpoint.clear()
    worker.cb.log(f"trial {trial.number}: failed: {type(exc).__name__}: {exc}")


def _tell(worker: _Worker, trial: optuna.Trial, result: Any, trained: str = Status.TRAINED) -> str:
    """Tell the result; ``trained``: the status of a trial that trained (a confirmation's is its own)."""
    study, config, cb = worker.study, worker.config, worker.cb
    summary = result.arch.summary()
    if result.status == "complete":
        values = config.protocol.objective_values(result.metrics)
        if not all(math.isfinite(v) for v in values):
            records.set_status(trial, Status.FAILED, f"non-finite objective values {values}")
            study.tell(trial, state=TrialState.FAIL)
            return Status.FAILED
        records.set_status(trial, trained)
        study.tell(trial, values)
        named = ", ".join(f"{k} {v:.4g}" for k, v in zip(config.protocol.objectives, values, strict=True))
        cb.log(f"trial {trial.number}: complete: {named} ({summary}, {result.wall_seconds:.1f}s)")
        return trained
    if result.status == "pruned":
        records.set_status(trial, trained)
        study.tell(trial, state=TrialState.PRUNED)
        cb.log(f"trial {trial.number}: {result.cause} ({summary})")
        return trained
    records.set_status(trial, Status.FAILED)
    study.tell(trial, state=TrialState.FAIL)
    cb.log(f"trial {trial.number}: failed: {result.cause} ({summary})")
    return Status.FAILED


def _requeue(study: optuna.Study, trial: optuna.Trial, retry: bool = False) -> None:
    """Put a trial's parameters back in the queue: an enqueued one (a retry, a warm start) that lost
    the race for the last slot, or (``retry``) an interrupted one, to resume from its checkpoint."""
    frozen = study._storage.get_trial(trial._trial_id)
    if not (retry or records.is_enqueued(frozen)):
        return
    user_attrs, system_attrs = records.requeue_attrs(frozen, retry)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    )
