"""Faults a worker rides out: a database outage (nas.search.outage), a full disk (log, artifacts, checkpoints)."""

import errno
import io

import optuna
import pytest
import sqlalchemy.exc

from nas.search import outage
from nas.search.outage import is_connection_error, ride_out, settling
from tests.conftest import POSTGRES, needs_postgres


def _lost_connection() -> Exception:
    cause = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    try:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from cause
    except optuna.exceptions.StorageInternalError as exc:
        return exc


class FlakyStorage:
    """Stands in for an RDBStorage: get_all_studies fails ``down`` times with a lost connection."""

    def __init__(self, down: int, error: Exception | None = None) -> None:
        self.down, self.calls, self.error = down, 0, error

    def get_all_studies(self):
        self.calls += 1
        if self.calls <= self.down:
            raise self.error or _lost_connection()
        return ["study"]


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(outage, "_PAUSES", (0.01,))
    monkeypatch.setattr(outage, "_LAST_PAUSE", 0.01)
    monkeypatch.setattr(outage, "_state", {"recovered": -float("inf"), "down_since": None, "grace": 0.0})


def test_a_lost_connection_is_seen_through_optunas_wrapper():
    assert is_connection_error(_lost_connection())
    assert is_connection_error(sqlalchemy.exc.InterfaceError("x", {}, Exception("connection already closed")))
    wrapped = optuna.exceptions.StorageInternalError("during the commit")
    wrapped.__cause__ = ValueError("value too long")
    assert not is_connection_error(wrapped)
    assert not is_connection_error(KeyError("no such trial"))


def test_a_worker_waits_for_its_database_then_settles_before_judging_stale_trials(quick, capsys):
    storage = ride_out(FlakyStorage(down=3), grace=0.3)
    assert not settling()
    assert storage.get_all_studies() == ["study"] and storage.calls == 4
    err = capsys.readouterr().err
    assert "storage unreachable" in err and "storage back after" in err
    assert settling()  # heartbeats are all old now: other workers beat again before any trial is judged stale


def test_stale_trials_are_not_failed_while_settling(quick, monkeypatch):
    from nas.search import workers

    judged = []
    monkeypatch.setattr(workers, "fail_stale_trials", lambda study: judged.append(study))
    monkeypatch.setattr(workers, "fail_dead_here", lambda study: [])
    monkeypatch.setattr(outage, "_state", {"recovered": outage.time.monotonic(), "down_since": None, "grace": 60.0})
    workers.fail_stale("study")
    assert judged == []
    monkeypatch.setattr(outage, "_state", {"recovered": -float("inf"), "down_since": None, "grace": 60.0})
    workers.fail_stale("study")
    assert judged == ["study"]


def test_other_errors_and_an_outage_past_the_limit_are_raised(quick):
    storage = ride_out(FlakyStorage(down=1, error=ValueError("bad value")), grace=1)
    with pytest.raises(ValueError):
        storage.get_all_studies()
    assert storage.calls == 1
    storage = ride_out(FlakyStorage(down=10**6), grace=1, limit=0.05)
    with pytest.raises(optuna.exceptions.StorageInternalError):
        storage.get_all_studies()
    assert storage.calls > 1


def test_sqlite_storages_do_not_ride_out(tmp_path):
    from nas.search.storage import open_storage
    from nas.search.workers import Heartbeats

    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert "get_all_studies" not in vars(open_storage(url, Heartbeats(5, 30)))
    assert "get_all_studies" not in vars(open_storage(url))


@pytest.mark.postgres
@needs_postgres
def test_a_workers_postgresql_storage_rides_out_and_a_readers_does_not():
    from nas.search.storage import open_storage
    from nas.search.workers import Heartbeats

    assert "_get_trials" in vars(open_storage(POSTGRES, Heartbeats(5, 30)))  # _CachedStorage's reads too
    assert "_get_trials" not in vars(open_storage(POSTGRES))  # `nas status` fails fast with the clear message


class FullFile(io.StringIO):
    name = "search.log"

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_does_not_stop_the_search_log(tmp_path, capsys):
    from nas.cli.common import LogFile

    log = LogFile(tmp_path / "search.log", quiet=True)
    log.file = FullFile()
    log("trial 3: complete")
    log("trial 4: complete")
    err = capsys.readouterr().err
    assert err.count("No space left on device") == 1  # said once, not per line


def test_a_checkpoint_the_disk_refuses_is_skipped_and_leaves_no_half_save(tmp_path, monkeypatch):
    import torch

    from nas.arch import ArchConfig
    from nas.protocol import load_protocol
    from nas.search.checkpoints import held_checkpoint
    from nas.search.config import SearchConfig
    from nas.space import load_space
    from nas.train.checkpoint import Checkpoint

    folder = tmp_path / "ckpt"
    ok = Checkpoint(folder, 1, key="k")
    ok.save({"step": 1, "model": {"w": torch.zeros(2)}})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError):
        ok.save({"step": 2, "model": {"w": torch.ones(2)}})
    assert [p.name for p in folder.iterdir()] == ["step-00000001"]  # the half-written save went

    config = SearchConfig(load_space("tiny"), load_protocol("cpu-tiny"), "s", runs_dir=tmp_path)
    lines: list[str] = []
    arch = ArchConfig(vocab_size=64, max_seq_len=16, n_layers=1, d_model=16, n_heads=2, ffn_dim=32)
    held = held_checkpoint(config, arch, lines.append)
    assert held.save({"step": 10, "model": {"w": torch.zeros(2)}}) is None
    assert lines and "not saved" in lines[0] and "No space left" in lines[0]


def test_artifacts_the_disk_refuses_lose_no_trial(in_tmp, micro_cache, monkeypatch):
    """The curve artifact cannot be written (disk full): the trial is still told, with its values."""
    from nas.search import loop, run_search, study_records
    from tests.search.test_loop import micro_config

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop, "store_artifacts", full)
    lines: list[str] = []
    from nas.search import Callbacks

    summary = run_search(micro_config(in_tmp, micro_cache, "full", n_trials=1), Callbacks(log=lines.append))
    assert summary.trained == 1
    assert [r.state for r in study_records(summary.study)] == ["complete"]
    assert any("artifacts were not stored (No space left on device)" in line for line in lines)


def test_a_worker_holds_few_connections(tmp_path):
    """A worker's pool is two connections and two more on demand (its loop and its heartbeat thread), and
    the reader it joined the study with is closed at once: 64 workers fit PostgreSQL's default 100."""
    from nas.search.storage import _engine_kwargs, close_storage, open_storage

    kwargs = _engine_kwargs("postgresql")
    assert kwargs["pool_size"] + kwargs["max_overflow"] <= 4 and kwargs["pool_pre_ping"]
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    optuna.create_study(storage=storage, study_name="s")
    assert storage.engine.pool.checkedin() >= 1
    close_storage(optuna.load_study(study_name="s", storage=storage)._storage)
    assert storage.engine.pool.checkedin() == 0
