"""nas.search.storage: opening storages, finding studies, a study's metadata; a search on PostgreSQL."""

import os
import time

import optuna
import pytest

from nas.errors import NasInputError
from nas.search import find_study, open_storage, study_context, study_info
from nas.search.storage import default_storage, study_metadata
from nas.space import load_space
from tests.conftest import POSTGRES, cli_search, micro_sets, needs_postgres, run


def test_open_storage_refusals(tmp_path):
    with pytest.raises(NasInputError, match="--storage: redis://x: unknown storage scheme 'redis'"):
        open_storage("redis://x")
    with pytest.raises(NasInputError, match="unknown storage scheme 'sqlit' \\(did you mean 'sqlite'\\?\\)"):
        open_storage("sqlit:///x.db")
    with pytest.raises(NasInputError, match=f"folder {tmp_path}/nope does not exist"):
        open_storage(f"sqlite:///{tmp_path}/nope/study.db")
    with pytest.raises(NasInputError, match=f"journal:{tmp_path}/nope/j.log: folder {tmp_path}/nope does not exist"):
        open_storage(f"journal:{tmp_path}/nope/j.log")
    assert isinstance(open_storage(f"journal:{tmp_path}/j.log"), optuna.storages.JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/s.db"), optuna.storages.RDBStorage)


def test_find_study_in_runs_and_in_a_storage(tmp_path, micro_protocol):
    runs = tmp_path / "runs"
    with pytest.raises(NasInputError, match="no study here yet; run `nas search` first"):
        find_study(None, None, runs)
    for name in ("alpha", "beta"):
        (runs / name).mkdir(parents=True)
        optuna.create_study(study_name=name, storage=default_storage(runs, name))
    assert default_storage(runs, "alpha") == f"sqlite:///{runs}/alpha/study.db"
    assert find_study("alpha", None, runs).study_name == "alpha"
    with pytest.raises(NasInputError, match="no study 'alpah' in .*runs/ \\(did you mean 'alpha'\\?\\)"):
        find_study("alpah", None, runs)
    os.utime(runs / "alpha/study.db", (time.time() + 60, time.time() + 60))
    assert find_study(None, None, runs).study_name == "alpha"  # the newest

    url = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(study_name="one", storage=url)
    assert find_study(None, url).study_name == "one"  # the only one there
    optuna.create_study(study_name="two", storage=url)
    with pytest.raises(NasInputError, match="name a study; .* holds: one, two"):
        find_study(None, url)
    with pytest.raises(NasInputError, match="no study 'three' in .*; it holds: one, two"):
        find_study("three", url)
    with pytest.raises(NasInputError, match="study 'one' was not created by nas search"):
        study_context(find_study("one", url))


def test_study_metadata_round_trip(tmp_path, write_space, micro_protocol):
    from tests.conftest import MICRO_SPACE

    space = load_space(write_space(MICRO_SPACE, "micro.yaml"))
    protocol = micro_protocol("objectives.params.direction=minimize")
    study = optuna.create_study(study_name="meta", directions=["minimize", "minimize"])
    for key, value in study_metadata(space, protocol).items():
        study.set_user_attr(key, value)
    again_space, again_protocol = study_context(study)
    assert again_space.content_hash == space.content_hash and again_protocol.content_hash == protocol.content_hash
    info = study_info(study)
    assert (info.name, info.space_name, info.protocol_name) == ("meta", "micro", "cpu-tiny")
    assert info.space_hash == space.content_hash and info.protocol_hash == protocol.content_hash
    assert info.objectives == ["val_loss", "params"] and info.minimize == [True, True] and info.search == {}


@pytest.mark.postgres
@needs_postgres
def test_search_on_postgresql_storage(in_tmp, micro_cache, capsys):
    name = f"pg-{os.getpid()}-{int(time.time())}"
    code, _, err = cli_search(capsys, name, 2, "--storage", POSTGRES, *micro_sets(micro_cache))
    assert code == 0, err
    study = optuna.load_study(study_name=name, storage=POSTGRES)
    assert sum(t.user_attrs.get("nas_status") == "trained" for t in study.trials) == 2
    code, out, _ = run(["status", name, "--storage", POSTGRES], capsys)
    assert code == 0 and f"study {name}" in out
    optuna.delete_study(study_name=name, storage=POSTGRES)


def test_study_names_are_folder_names(tmp_path):
    from nas.search.storage import check_study_name, study_dir

    for name in ("tiny-cpu-tiny", "a.b_c-1", "X" * 100, "0", "v1.2"):
        assert check_study_name(name) == name and study_dir(tmp_path, name) == tmp_path / name
    for name, problem in (
        ("../x", "contains '..'"),
        ("a/b", "contains '/'"),
        ("", "is empty"),
        ("x" * 101, "is 101 characters long; at most 100"),
        (".x", "must start with a letter or a digit"),
        ("a b", "contains ' '"),
    ):
        with pytest.raises(NasInputError, match=f"^--study: .*{problem}"):
            check_study_name(name)
    with pytest.raises(NasInputError, match="^STUDY: '../x'"):
        find_study("../x", None, tmp_path / "runs")
    url = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(study_name="a/../../escape", storage=url)  # made outside nas: never a path here
    with pytest.raises(NasInputError, match="^--warm-start: 'a/../../escape' contains '..'"):
        find_study(None, url, what="--warm-start")
    with pytest.raises(NasInputError, match="^--study: "):
        default_storage(tmp_path, "../x")
    assert not list(tmp_path.parent.glob("escape*")) and not (tmp_path / "runs").exists()


def test_a_journal_lock_left_by_a_killed_worker_is_taken_over_within_the_heartbeat_grace(tmp_path):
    from nas.search.workers import Heartbeats

    url = f"journal:{tmp_path / 'j.log'}"
    lock = open_storage(url, Heartbeats(1, 5))._backend._lock  # the lock every append takes
    assert lock.grace_period == 5  # Optuna's default, 30 s, stalled every worker after a kill -9 mid-write
    assert open_storage(url, Heartbeats(10, 600))._backend._lock.grace_period == 30
    (tmp_path / "j.log.lock").symlink_to(tmp_path / "j.log")  # as a worker killed inside an append leaves it
    started = time.monotonic()
    assert lock.acquire() and 4 <= time.monotonic() - started < 15
    lock.release()


def _batch_urls(tmp_path):
    from tests.conftest import postgres_reachable

    urls = [f"sqlite:///{tmp_path}/s.db", f"journal:{tmp_path}/j.log", None]
    return urls + ([POSTGRES] if postgres_reachable() else [])  # PostgreSQL where the server is up


def test_several_user_attrs_in_one_write(tmp_path):
    """nas.search.batch writes a trial's claim or result in one transaction (RDB) or one append (journal), as
    the same attributes Optuna's own calls write; a finished trial refuses them, as Optuna does."""
    from nas.search.batch import set_user_attrs

    for url in _batch_urls(tmp_path):
        storage = open_storage(url) if url else None
        name = f"batch-{time.time_ns()}"
        study = optuna.create_study(study_name=name, storage=storage)
        trial = study.ask()
        set_user_attrs(trial, {"a": 1, "b": [1.5, "x"], "c": None, "d": {"k": 2}})
        set_user_attrs(trial, {"a": 2})
        reread = optuna.load_study(study_name=name, storage=open_storage(url)) if url else study
        assert reread.trials[0].user_attrs == {"a": 2, "b": [1.5, "x"], "c": None, "d": {"k": 2}}, url
        assert trial.user_attrs["a"] == 2  # the Trial's own copy too
        study.tell(trial, 1.0)
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            set_user_attrs(trial, {"a": 3})


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_one_read_serves_every_read_inside_its_block_and_no_other(kind, tmp_path):
    """nas.search.storage.OneRead: inside the block a worker's trials are read from the database once (an ask: the
    queue's read and TPE's, one per parameter group with constant_liar); outside it, and in another thread, every
    read sees what other workers wrote."""
    import threading

    from nas.search.storage import OneRead
    from tests.conftest import postgres_reachable

    if kind == "postgres" and not postgres_reachable():
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    url = POSTGRES if kind == "postgres" else f"sqlite:///{tmp_path}/s.db"
    name = f"one-read-{time.time_ns()}"
    sampler = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=2, constant_liar=True)
    study = optuna.create_study(study_name=name, storage=open_storage(url), sampler=sampler)
    other = optuna.load_study(study_name=name, storage=open_storage(url))  # another worker
    try:
        backend, syncs = study._storage._backend, []
        read = backend._get_trials
        backend._get_trials = lambda *a, **k: syncs.append(1) or read(*a, **k)
        for i in range(4):  # TPE then samples from history, with a running trial to lie about
            study.enqueue_trial({"x": 0.1 * i, "y": 3 - i})
        for _ in range(3):
            t = study.ask()
            t.suggest_float("x", 0, 1), t.suggest_int("y", 0, 3)
            if t.number < 3:
                study.tell(t, t.params["x"] + t.params["y"])
        syncs.clear()
        study.get_trials(), study.get_trials()
        assert len(syncs) == 2  # outside a block: each read syncs
        syncs.clear()
        block = OneRead(study)
        with block:
            t = study.ask()  # the queue's read, then TPE's
            t.suggest_float("x", 0, 1), t.suggest_int("y", 0, 3), t.suggest_float("z", 0, 1)
            assert len(syncs) == 1
            other.enqueue_trial({"x": 0.5, "y": 1})  # written by another worker after the read
            assert len(study.get_trials()) == 4  # not seen inside
            seen: list[int] = []
            thread = threading.Thread(target=lambda: seen.append(len(study.get_trials())))
            thread.start(), thread.join()
            assert seen == [5] and len(syncs) == 2  # another thread is not held
        with block:  # the same block again: still the one read
            study.get_trials()
            assert len(syncs) == 2
        assert len(study.get_trials()) == 5 and len(syncs) == 3  # after it, every read syncs again
        with OneRead(study):  # a new block reads once
            study.get_trials(), study.get_trials()
            assert len(syncs) == 4
    finally:
        if kind == "postgres":
            optuna.delete_study(study_name=name, storage=open_storage(url))
