"""Ctrl-C at any moment leaves no trial RUNNING (issue 15), a retry keeps the place of the trial it re-runs,
a re-run after a crash does not wait out the heartbeat grace, and a search says why it stopped.

The trial runner is replaced by an instant fake that still reports a point and saves a checkpoint, so each
window of the worker loop (ask, claim, report, checkpoint save, result, artifacts, tell) is hit on purpose:
by a KeyboardInterrupt raised there, and by a real SIGINT arriving in the middle of a storage write.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState

import nas.search.loop as loop
import nas.train.checkpoint as checkpoint
import nas.trial
from nas.protocol import load_protocol
from nas.search import SearchConfig, SearchInterrupted, prepare_study, records, work
from nas.search.loop import _surplus
from nas.search.workers import WORKER_ATTR, Heartbeats, SigintGuard, fail_dead_here, holding_a_place, mark_worker
from nas.space import load_space
from tests.conftest import MICRO_OVERRIDES, micro_sets, run

default_sigint = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler, reason="SIGINT is not Python's default here"
)


def config_for(in_tmp, micro_cache, name: str, **kwargs) -> SearchConfig:
    protocol = load_protocol("cpu-tiny", [f"cache_dir={micro_cache}", *MICRO_OVERRIDES, "tasks=[]"])
    settings = {"n_trials": 2, "sampler": "random", "pruner": "none", "seed": 0, **kwargs}
    return SearchConfig(load_space(str(in_tmp / "micro.yaml")), protocol, name, runs_dir=in_tmp / "runs", **settings)


@pytest.fixture
def fake_trial(monkeypatch):
    """An instant trial: one held-out eval through the reporter, one checkpoint save, a loss from the arch."""

    def run_trial(arch, protocol, reporter=None, checkpoint=None, **kwargs):
        if reporter is not None:
            reporter(SimpleNamespace(step=8, tokens=4096, val_loss=4.0))
        if checkpoint is not None:
            checkpoint.save({"model": {"w": torch.zeros(2)}, "step": 8})
        loss = 5.0 - 0.1 * arch.n_layers - 0.01 * arch.ffn_dim / arch.d_model
        return nas.trial.TrialResult(arch, "complete", metrics={"val_loss": loss})

    monkeypatch.setattr(nas.trial, "run_trial", run_trial)
    return run_trial


def states(study: optuna.Study) -> list[tuple[int, str, str | None]]:
    return [(t.number, t.state.name, t.user_attrs.get("nas_status")) for t in study.get_trials(deepcopy=False)]


def assert_none_running(study: optuna.Study) -> None:
    assert not [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING], states(study)


def interrupt_in(monkeypatch, target, name: str, after: bool = False) -> None:
    """Make ``target.name`` raise KeyboardInterrupt (once), before or after doing its work."""
    real = getattr(target, name)
    fired = []

    def patched(*args, **kwargs):
        if fired:
            return real(*args, **kwargs)
        fired.append(True)
        if after:
            real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(target, name, patched)


def _tell_point(monkeypatch):  # the trained status is written just before the tell
    real = records.set_status

    def patched(trial, status, cause=None):
        if status == records.Status.TRAINED:
            monkeypatch.setattr(records, "set_status", real)
            raise KeyboardInterrupt
        return real(trial, status, cause)

    monkeypatch.setattr(records, "set_status", patched)


WINDOWS = {
    # window: (how to interrupt there, whether the trial was claimed by then)
    "after ask": (lambda mp: interrupt_in(mp, loop, "mark_worker"), False),
    "during claim": (lambda mp: interrupt_in(mp, records, "write_claim", after=True), True),
    "in training": (lambda mp: interrupt_in(mp, nas.trial, "run_trial"), True),
    "reporting the curve": (lambda mp: interrupt_in(mp, records, "write_curve"), True),
    "saving a checkpoint": (lambda mp: interrupt_in(mp, checkpoint.Checkpoint, "save"), True),
    "writing the result": (lambda mp: interrupt_in(mp, records, "write_result", after=True), True),
    "storing artifacts": (lambda mp: interrupt_in(mp, loop, "store_artifacts"), True),
    "before the tell": (_tell_point, True),
}


@pytest.mark.parametrize("window", list(WINDOWS))
def test_an_interrupt_in_each_window_leaves_no_trial_running(window, in_tmp, micro_cache, fake_trial, monkeypatch):
    config = config_for(in_tmp, micro_cache, "win")
    study = prepare_study(config)
    inject, claimed = WINDOWS[window]
    inject(monkeypatch)
    with pytest.raises(SearchInterrupted) as info:
        work(study, config)
    assert isinstance(info.value, KeyboardInterrupt)
    summary = info.value.summary
    assert summary.trained == 0 and summary.final_line == (
        "stopped after 0 of 2 trained trials: interrupted (Ctrl-C); re-run the same command to continue"
    )
    assert_none_running(study)
    (trial, *rest) = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.FAIL and trial.user_attrs["nas_status"] == "interrupted", states(study)
    retries = [t for t in rest if t.state == TrialState.WAITING and t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == (1 if claimed else 0), states(study)

    monkeypatch.undo()
    monkeypatch.chdir(in_tmp)
    monkeypatch.setattr(nas.trial, "run_trial", fake_trial)
    summary = work(study, config)  # the same command again continues the study
    assert summary.trained == 2 and summary.final_line == "2 trials trained (--n-trials 2)"
    assert_none_running(study)
    if claimed:
        rerun = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("retry_of") == 0]
        assert len(rerun) == 1 and records.is_trained(rerun[0]), states(study)


@default_sigint
def test_a_sigint_during_a_storage_write_waits_for_the_write_and_the_tell(in_tmp, micro_cache, fake_trial, monkeypatch):
    """A real SIGINT while the result is being written: the write and the tell finish first, then the search
    stops; the trial is trained, not half-written."""
    config = config_for(in_tmp, micro_cache, "defer")
    study = prepare_study(config)
    real = records.write_result

    def write_result(trial, result):
        signal.raise_signal(signal.SIGINT)
        time.sleep(0.05)  # the handler has run by now: the interrupt waits
        real(trial, result)

    monkeypatch.setattr(records, "write_result", write_result)
    with pytest.raises(SearchInterrupted) as info:
        work(study, config)
    assert info.value.summary.trained == 1
    assert_none_running(study)
    first = study.get_trials(deepcopy=False)[0]
    assert first.state == TrialState.COMPLETE and records.is_trained(first) and "metrics" in first.user_attrs
    assert len(study.get_trials(deepcopy=False)) == 1  # stopped before asking the next trial
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


@default_sigint
def test_a_sigint_while_asking_stops_before_training(in_tmp, micro_cache, fake_trial, monkeypatch):
    config = config_for(in_tmp, micro_cache, "ask")
    study = prepare_study(config)
    real_ask = study.ask
    trained = []
    monkeypatch.setattr(nas.trial, "run_trial", lambda *a, **k: trained.append(1))

    def ask(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return real_ask(*args, **kwargs)

    monkeypatch.setattr(study, "ask", ask)
    with pytest.raises(SearchInterrupted):
        work(study, config)
    assert not trained
    assert_none_running(study)
    assert study.get_trials(deepcopy=False)[0].user_attrs["nas_status"] == "interrupted"


@default_sigint
def test_sigint_guard_defers_inside_held_blocks_and_forces_on_the_third():
    guard = SigintGuard()
    reached = []
    with guard.installed():
        with pytest.raises(KeyboardInterrupt):
            with guard.held():
                signal.raise_signal(signal.SIGINT)
                reached.append("after one")
        with pytest.raises(KeyboardInterrupt):
            with guard.held():
                for _ in range(3):
                    signal.raise_signal(signal.SIGINT)
                    reached.append("sent")
                reached.append("never")
        with guard.held(swallow=True):
            signal.raise_signal(signal.SIGINT)
            reached.append("swallowed")
        with pytest.raises(KeyboardInterrupt), guard.held(), guard.released():
            signal.raise_signal(signal.SIGINT)
            reached.append("never")
    assert reached == ["after one", "sent", "sent", "swallowed"]  # the third Ctrl-C forced its way out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---- a retry keeps its place (the kill -9 flake) --------------------------------------------------
def test_a_retry_keeps_the_place_of_the_trial_it_reruns(tmp_path):
    """Optuna fails a stale trial and only then queues its retry; a fresh trial asked in between must not
    take the place: it is the surplus one, and the retry runs."""
    from nas.search import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/s.db", Heartbeats(1, 5))
    study = optuna.create_study(storage=storage, study_name="places")
    for _ in range(2):  # two workers' trials, claimed
        trial = study.ask()
        trial.suggest_int("x", 0, 9)
        trial.set_user_attr("nas_status", "running")
        trial.set_user_attr("arch_hash", f"a{trial.number}")
    storage.set_trial_state_values(study.trials[0]._trial_id, TrialState.FAIL)  # stale: failed, retry not queued yet
    assert [t.number for t in holding_a_place(study.trials, time.time())] == [0, 1]

    fresh = study.ask()  # a third worker, in the window
    assert _surplus(study, storage.get_trial(fresh._trial_id), 2)
    fresh.set_user_attr("nas_status", "surplus")
    study.tell(fresh, state=TrialState.FAIL)
    Heartbeats().callback()(study, study.trials[0])  # now the retry is queued
    assert [t.number for t in holding_a_place(study.trials, time.time())] == [1]
    retry = study.ask()
    assert study.trials[retry.number].system_attrs["failed_trial"] == 0
    assert not _surplus(study, storage.get_trial(retry._trial_id), 2)

    later = study.ask()  # a fresh trial asked while the retry runs is surplus too
    assert _surplus(study, storage.get_trial(later._trial_id), 2)


def test_a_failed_trial_holds_its_place_only_until_the_window_closes(tmp_path):
    from nas.search import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/s.db", Heartbeats(1, 5))
    study = optuna.create_study(storage=storage, study_name="window")
    trial = study.ask()
    trial.set_user_attr("nas_status", "failed")  # an ordinary failure: no retry coming
    study.tell(trial, state=TrialState.FAIL)
    killed = study.ask()
    killed.set_user_attr("nas_status", "running")
    storage.set_trial_state_values(killed._trial_id, TrialState.FAIL)
    now = time.time()
    assert [t.number for t in holding_a_place(study.trials, now)] == [1]
    assert holding_a_place(study.trials, now + 60) == []  # its worker never queued the retry: the place is free


# ---- a crashed worker on this machine: no wait for the grace period ----------------------------------
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_rerun_after_a_crash_fails_the_dead_workers_trial_at_once(in_tmp, micro_cache, fake_trial):
    config = config_for(in_tmp, micro_cache, "crash", heartbeats=Heartbeats(10, 600))
    study = prepare_study(config)
    trial = study.ask()  # what the crashed process left: a claimed trial, RUNNING
    arch = config.space.sample(trial).arch
    records.write_claim(trial, arch, "here:1", "killed: worker here:1 stopped beating", None)
    mark_worker(study._storage, trial._trial_id)
    mark = study._storage.get_trial(trial._trial_id).system_attrs[WORKER_ATTR]
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, {**mark, "pid": dead_pid()})

    started = time.monotonic()
    summary = work(study, config)
    assert time.monotonic() - started < 60  # not the 600 s grace
    assert summary.trained == 2
    assert_none_running(study)
    dead = study.trials[0]
    assert dead.state == TrialState.FAIL and dead.user_attrs["cause"].startswith("killed: worker")
    (rerun,) = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert records.is_trained(rerun) and rerun.user_attrs["arch_hash"] == dead.user_attrs["arch_hash"]


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres"])
def test_only_trials_of_gone_processes_on_this_machine_are_failed(kind, tmp_path):
    """On a database storage the running trials' marks are read by one query of their own (every beat of every
    worker asks), on a journal from the trials: the same trials are failed either way."""
    from nas.search import open_storage
    from tests.conftest import POSTGRES, postgres_reachable

    if kind == "postgres" and not postgres_reachable():
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    url = {"sqlite": f"sqlite:///{tmp_path}/s.db", "journal": f"journal:{tmp_path}/j.log", "postgres": POSTGRES}[kind]
    storage = open_storage(url, Heartbeats(1, 5))
    study = optuna.create_study(storage=storage, study_name=f"dead-{time.time_ns()}")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        trials = [study.ask() for _ in range(5)]
        for trial in trials:
            mark_worker(storage, trial._trial_id)
        mark = study.trials[0].system_attrs[WORKER_ATTR]
        marks = [
            {**mark, "pid": dead_pid()},  # gone: failed
            {**mark, "pid": alive.pid, "started": None},  # alive: kept
            {**mark, "pid": dead_pid(), "where": "another-host/boot/pid:[1]"},  # another machine: its heartbeat decides
            {**mark, "pid": dead_pid(), "since": mark["since"] - 3600},  # copied from an older trial: kept
            mark,  # this process: kept
        ]
        for trial, new in zip(trials, marks, strict=True):
            storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, new)
        assert fail_dead_here(study) == [0]
        assert [t.state for t in study.trials[:5]] == [TrialState.FAIL] + [TrialState.RUNNING] * 4
        assert study.trials[5].state == TrialState.WAITING and study.trials[5].system_attrs["failed_trial"] == 0
        assert fail_dead_here(study) == []  # failed once
    finally:
        alive.kill()
        alive.wait()
        if kind == "postgres":
            optuna.delete_study(study_name=study.study_name, storage=storage)


# ---- why a search stopped ------------------------------------------------------------------------------
def test_the_last_line_says_why_the_search_stopped(in_tmp, micro_cache, fake_trial, monkeypatch, capsys):
    def slow_trial(arch, protocol, **kwargs):
        time.sleep(1.2)
        return fake_trial(arch, protocol, **kwargs)

    monkeypatch.setattr(nas.trial, "run_trial", slow_trial)
    argv = ["search", "--study", "late", "--n-trials", "3", "--timeout", "1", "--quiet", "--pruner", "none"]
    code, out, err = run([*argv, *micro_sets(micro_cache)], capsys)
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    stopped = (
        r"stopped after 1 of 3 trained trials: timeout after \d+s \(--timeout 1\); re-run the same command to continue"
    )
    assert re.fullmatch(stopped, last), last

    def broken(arch, protocol, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(nas.trial, "run_trial", broken)
    code, out, _ = run(["search", "--study", "broken", "--n-trials", "2", "--quiet", *micro_sets(micro_cache)], capsys)
    last = out.strip().splitlines()[-1]
    assert code == 0 and last.startswith("stopped after 0 of 2 trained trials: 5 trials failed in a row")

    def interrupted(arch, protocol, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nas.trial, "run_trial", interrupted)
    code, out, err = run(["search", "--study", "late", "--n-trials", "3", "--quiet", *micro_sets(micro_cache)], capsys)
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "stopped after 1 of 3 trained trials: interrupted (Ctrl-C); re-run the same command to continue"
    )

    monkeypatch.setattr(nas.trial, "run_trial", fake_trial)
    code, out, err = run(["search", "--study", "late", "--n-trials", "3", "--quiet", *micro_sets(micro_cache)], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-1] == "3 trials trained (--n-trials 3)" and lines[-2].startswith("(2 new trials trained in ")


def test_an_explicit_n_trials_has_no_default_timeout(in_tmp):
    from nas.search import SearchRequest, validate_search

    def limits(**request):
        config = validate_search(SearchRequest(**request), dry_run=True).config
        return config.n_trials, config.timeout

    assert limits() == (10, 540)  # the no-argument default: a first look in 9 minutes
    assert limits(n_trials=50) == (50, None)  # runs to 50 trained trials
    assert limits(timeout=60) == (10, 60)
    assert limits(n_trials=50, timeout=3600) == (50, 3600)
