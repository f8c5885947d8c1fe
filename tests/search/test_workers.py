"""nas.search.workers: several workers on one study (journal, PostgreSQL, MySQL, SQLite), heartbeats that
fail a killed worker's trial within the grace period, and the re-run resuming from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.search import Heartbeats, LocalWorkers
from nas.search.workers import HeartbeatJournalStorage, fail_stale
from tests.conftest import MYSQL, POSTGRES, load_study, micro_sets, nas_process, needs_mysql, needs_postgres

nas = nas_process  # `python -m nas ARGS` in the background, output piped


@pytest.fixture
def workdir(in_tmp: Path) -> Path:
    """The micro working directory (micro.yaml; runs/ and the journal go here), where the workers run."""
    return in_tmp


def storage_url(kind: str, workdir: Path) -> str:
    return {"journal": f"journal:{workdir}/journal.log", "postgres": POSTGRES, "mysql": MYSQL, "sqlite": None}[kind]


def study_name(kind: str) -> str:
    return f"w-{kind}-{os.getpid()}-{time.time_ns()}"  # unique: the PostgreSQL database is shared


def assert_exactly_n_distinct(study: optuna.Study, n: int) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if t.user_attrs.get("nas_status") == "trained"]
    assert len(trained) == n, [(t.number, t.state, t.user_attrs.get("nas_status")) for t in trials]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trained)
    assert len({t.user_attrs["arch_hash"] for t in trained}) == n  # no architecture trained twice
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    return trained


def search_args(name: str, url: str | None, cache: Path, n: int, *extra: str) -> list[str]:
    args = ["search", "--study", name, "--n-trials", str(n), "--quiet", "--pruner", "none", "--sampler", "random"]
    args += ["--storage", url] if url else []
    return [*args, *extra, *micro_sets(cache)]


def cleanup(name: str, url: str | None) -> None:
    if url and url.startswith(("postgresql", "mysql")):
        optuna.delete_study(study_name=name, storage=url)


def test_heartbeats_need_a_grace_longer_than_the_interval():
    assert Heartbeats() == Heartbeats(10, 60)
    for interval, grace in ((0, 5), (5, 5), (10, 5)):
        with pytest.raises(ValueError, match=f"heartbeat interval {interval}s and grace {grace}s"):
            Heartbeats(interval, grace)


def test_local_workers_share_the_cores_or_pin_a_gpu_each(tmp_path, monkeypatch):
    monkeypatch.setattr("nas.search.workers.available_cpus", lambda: 8)
    cpu = LocalWorkers("s", "journal:j.log", tmp_path, n=3, n_trials=6, timeout=30)
    assert cpu.threads == 2 and cpu.run_dir == tmp_path / "s"
    argv = cpu.argv(1)
    assert argv[:4] == [sys.executable, "-m", "nas", "worker"]
    for flag, value in (("--study", "s"), ("--storage", "journal:j.log"), ("--index", "1"), ("--n-trials", "6")):
        assert argv[argv.index(flag) + 1] == value
    assert argv[argv.index("--threads") + 1] == "2" and argv[argv.index("--timeout") + 1] == "30"
    assert "--runs-dir" in argv and "--quiet" in argv
    assert "--device" not in argv and "--sharing" not in argv  # no devices named: nothing to record
    gpus = LocalWorkers("s", "journal:j.log", tmp_path, n=2, n_trials=6, devices=["0", "3"])
    assert gpus.threads == 4 and "--timeout" not in gpus.argv(0)  # GPU workers share the cores too
    assert "GPU 0 x1, GPU 3 x1" in gpus.describe() and "2 CPU threads each" in cpu.describe()
    argv = gpus.argv(1)
    assert argv[argv.index("--device") + 1] == "3" and argv[argv.index("--sharing") + 1] == "1"


def test_local_workers_can_share_a_device(tmp_path, monkeypatch):
    monkeypatch.setattr("nas.search.workers.available_cpus", lambda: 16)
    started: list[dict[str, str]] = []

    class Recorder:
        def __init__(self, argv, env, stdout, stderr):
            started.append({"device": argv[argv.index("--device") + 1], "sharing": argv[argv.index("--sharing") + 1]})
            started[-1]["CUDA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"]

    monkeypatch.setattr("nas.search.workers.subprocess.Popen", Recorder)
    (tmp_path / "s").mkdir()
    packed = LocalWorkers("s", "journal:j.log", tmp_path, n=5, n_trials=6, devices=["0", "0", "0", "1", "cpu"])
    packed.start()
    assert [w["CUDA_VISIBLE_DEVICES"] for w in started] == ["0", "0", "0", "1", ""]  # cpu: no GPU visible
    assert [(w["device"], w["sharing"]) for w in started] == [("0", "3")] * 3 + [("1", "1"), ("cpu", "1")]
    assert packed.threads == 3 and "GPU 0 x3, GPU 1 x1, CPU x1" in packed.describe()
    round_robin = LocalWorkers("s", "journal:j.log", tmp_path, n=4, n_trials=6, devices=["0", "1"])
    assert [round_robin.sharing(i) for i in range(4)] == [2, 2, 2, 2]
    two_of_four = LocalWorkers("s", "journal:j.log", tmp_path, n=2, n_trials=6, devices=["0", "1", "0", "1"])
    assert [(two_of_four.device(i), two_of_four.sharing(i)) for i in range(2)] == [("0", 1), ("1", 1)]


@pytest.mark.slow
def test_two_workers_share_the_cpu_device_and_status_says_where_trials_ran(workdir, micro_cache, capsys):
    """`--devices cpu --workers-per-device 2`: the code path of several workers per GPU, on the CPU."""
    from tests.conftest import run

    name, url = study_name("journal"), storage_url("journal", workdir)
    proc = nas(*search_args(name, url, micro_cache, 4, "--devices", "cpu", "--workers-per-device", "2"), cwd=workdir)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    assert "4 trials trained by 2 workers" in output
    assert "started 2 workers (CPU x2" in (workdir / "runs" / name / "search.log").read_text()
    trained = assert_exactly_n_distinct(load_study(name, url, workdir), 4)
    assert all(t.user_attrs["placement"] == {"device": "cpu", "sharing": 2} for t in trained)
    code, out, _ = run(["status", name, "--storage", url], capsys)
    assert code == 0 and "workers: CPU, 2 workers: 4 trials trained" in out, out
    code, out, _ = run(["status", name, "--storage", url, "--json"], capsys)
    (use,) = json.loads(out)["placement"]
    assert (use["device"], use["sharing"], use["trained"]) == ("cpu", 2, 4) and use["trials_per_hour"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        "journal",
        pytest.param("postgres", marks=[pytest.mark.postgres, needs_postgres]),
        pytest.param("mysql", marks=[pytest.mark.mysql, needs_mysql]),
        "sqlite",
    ],
)
def test_workers_end_with_exactly_n_distinct_trials(kind, workdir, micro_cache):
    name, url = study_name(kind), storage_url(kind, workdir)
    n_workers = 2  # two cores: a third worker would only queue for them
    proc = nas(*search_args(name, url, micro_cache, 5, "--workers", str(n_workers)), cwd=workdir)
    output, _ = proc.communicate(timeout=400)
    try:
        assert proc.returncode == 0, output
        assert f"5 trials trained by {n_workers} workers" in output
        if kind == "sqlite":
            assert "warning: SQLite storage with 2 workers" in output
            assert "database is locked" not in output
            for log in (workdir / "runs" / name).glob("worker-*.log"):
                assert "Traceback" not in log.read_text()
        study = load_study(name, url, workdir)
        trained = assert_exactly_n_distinct(study, 5)
        workers = {t.user_attrs["worker"] for t in trained}
        assert len(workers) >= 2, workers  # the trials really were shared out
    finally:
        cleanup(name, url)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=[pytest.mark.postgres, needs_postgres])])
def test_kill_9_of_a_worker_mid_trial(kind, workdir, micro_cache):
    """A worker killed mid-trial: its trial is failed within the grace period, run again from its
    checkpoint by another worker, and the study still ends with exactly N."""
    name, url = study_name(kind), storage_url(kind, workdir)
    heartbeat, grace = 1, 5
    extra = ["--workers", "2", "--heartbeat", str(heartbeat), "--grace", str(grace), "--checkpoint-every", "8"]
    args = search_args(name, url, micro_cache, 3, *extra)
    args += ["--set", "pretrain.budget.tokens=49152"]  # 96 steps: seconds per trial, time to kill one
    proc = nas(*args, cwd=workdir)
    try:
        victim, killed_at = None, None
        deadline = time.monotonic() + 180
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                study = load_study(name, url, workdir)
            except (KeyError, Exception):  # not created yet
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                curve = t.user_attrs.get("curve") or []
                if curve and curve[-1][0] >= 16 and "worker" in t.user_attrs:
                    victim = t
                    break
        assert victim is not None, "no trial got past its first checkpoints"
        pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()

        failed_at = None
        while time.monotonic() - killed_at < grace + 30:
            trial = load_study(name, url, workdir).trials[victim.number]
            if trial.state == TrialState.FAIL:
                failed_at = time.monotonic()
                break
            time.sleep(0.25)
        assert failed_at is not None, "the killed worker's trial was never failed"
        # Within the grace period (counted from the last beat), plus one check interval and polling slack.
        assert failed_at - killed_at <= grace + 2 * heartbeat + 2, failed_at - killed_at

        output, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, output
        study = load_study(name, url, workdir)
        dead = study.trials[victim.number]
        assert dead.state == TrialState.FAIL and dead.user_attrs["cause"].startswith("killed: worker")
        trained = assert_exactly_n_distinct(study, 3)
        (rerun,) = [t for t in trained if t.user_attrs.get("retry_of") == victim.number]
        assert rerun.user_attrs["arch_hash"] == dead.user_attrs["arch_hash"]
        assert rerun.user_attrs["resumed_from_step"] >= 8  # from the checkpoint, not from step 0
        assert rerun.user_attrs["curve"][-1][0] == 96 and rerun.state == TrialState.COMPLETE

        status = subprocess.run(
            [sys.executable, "-m", "nas", "status", name, *(["--storage", url] if url else [])],
            cwd=workdir,
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "250"},
        )
        assert status.returncode == 0, status.stderr
        assert f"retried as trial {rerun.number}" in status.stdout and "resumed from step" in status.stdout
    finally:
        if proc.poll() is None:
            proc.kill()
        cleanup(name, url)


def test_journal_lease_fails_a_silent_trial_and_queues_a_retry(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    storage = HeartbeatJournalStorage(JournalFileBackend(str(tmp_path / "j.log")), Heartbeats(interval=1, grace=2))
    study = optuna.create_study(storage=storage, study_name="lease")
    trial = study.ask()
    trial.suggest_int("x", 0, 9)
    storage.record_heartbeat(trial._trial_id)
    fail_stale(study)
    assert study.trials[0].state == TrialState.RUNNING  # beat just now
    time.sleep(2.5)
    fail_stale(study)
    trials = study.trials
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params
    retry = study.ask()
    assert retry.number == 1 and retry.params == trials[0].params  # the next worker runs it again


def test_bad_worker_options_exit_2(workdir, capsys):
    from nas.cli import main

    for argv, message in (
        (["search", "--devices", "a,b"], "--devices: 'a,b': give GPU indices"),
        (["search", "--heartbeat", "10", "--grace", "5"], "--grace: 5s must exceed --heartbeat 10s"),
        (["worker", "--study", "nope", "--runs-dir", str(workdir)], "no study 'nope'"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_two_workers_share_the_confirmations(workdir, micro_cache):
    """Both workers run the confirmation phase: each (trial, repeat) is trained exactly once, none is left
    RUNNING, and the n_trials are still exactly n distinct architectures."""
    name, url = study_name("journal"), storage_url("journal", workdir)
    args = search_args(name, url, micro_cache, 3, "--workers", "2")
    proc = nas(*args, "--set", "confirm={top: 2, seeds: 2}", cwd=workdir)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    assert "3 trials trained by 2 workers; 4 confirmations trained" in output
    study = load_study(name, url, workdir)
    trained = assert_exactly_n_distinct(study, 3)
    confirmations = [t for t in study.get_trials() if t.user_attrs.get("nas_status") == "confirmation"]
    slots = sorted((t.user_attrs["confirm"]["of"], t.user_attrs["confirm"]["repeat"]) for t in confirmations)
    best = sorted(trained, key=lambda t: t.values[0])[:2]
    assert slots == sorted((t.number, r) for t in best for r in (1, 2))


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, needs_postgres])])
def test_a_running_trial_that_never_beat_is_failed_and_retried(kind, workdir):
    """A worker killed between asking for a trial and its first beat leaves it RUNNING with no heartbeat: after
    the grace period it is failed as stale and its retry queued, so the study does not wait on it for ever."""
    from nas.search.storage import open_storage
    from nas.search.workers import fail_stale

    name, url = study_name(kind), storage_url(kind, workdir) or f"sqlite:///{workdir}/s.db"
    try:
        study = optuna.create_study(study_name=name, storage=open_storage(url, Heartbeats(1, 2)))
        orphan = study.ask()  # never beats
        live = study.ask()
        study._storage.record_heartbeat(live._trial_id)
        fail_stale(study)
        assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.RUNNING]  # within the grace
        time.sleep(2.5)
        study._storage.record_heartbeat(live._trial_id)
        fail_stale(study)
        states = {t.number: t.state for t in study.get_trials()}
        assert states[orphan.number] == TrialState.FAIL and states[live.number] == TrialState.RUNNING
        retry = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == orphan.number]
        assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    finally:
        cleanup(name, url)
