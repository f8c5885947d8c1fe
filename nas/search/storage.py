"""Where studies live: storage URLs, opening a storage, finding a study, a study's metadata, and what a
trained trial leaves in the run folder (its dashboard note and artifacts).

SQLite in ``runs/<study>/study.db`` is the default; ``journal:PATH`` (a file journal),
``postgresql://`` and ``mysql+pymysql://`` scale out. A study created by nas carries its space,
protocol and search settings as user attributes, so a worker joining it needs no files.

A study's name is also its run folder's name (``runs/<study>/``): :func:`check_study_name` allows
letters, digits and ``-_.`` only, and every path built from a name goes through it, so nothing is
written outside ``--runs-dir``.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from nas import __version__
from nas.errors import NasInputError, StorageUnreachable, did_you_mean
from nas.protocol import TrialProtocol, parse_protocol
from nas.search import records
from nas.search.attrs import OBJECTIVES, PROTOCOL_TEXT, SPACE_TEXT
from nas.search.orphans import count_unbeaten_as_stale
from nas.search.outage import is_connection_error, ride_out
from nas.search.workers import HeartbeatJournalStorage, Heartbeats
from nas.space import SearchSpace, parse_space

__all__ = [
    "check_study_name",
    "study_dir",
    "default_storage",
    "open_storage",
    "close_storage",
    "OneRead",
    "study_names",
    "find_study",
    "study_context",
    "study_metadata",
    "StudyInfo",
    "study_info",
    "SEARCH_ATTR",
    "record_stop",
    "last_stop",
    "store_artifacts",
    "trial_note",
]

SCHEMES = ("sqlite", "postgresql", "mysql")
SEARCH_ATTR = "nas.search"  # the search settings a joining worker reads (SearchConfig.search_attrs)
STOPPED_ATTR = "nas.stopped"  # why the last worker loop on the study stopped, and when
MAX_NAME = 100
JOURNAL_FIRST_LINE = 1 << 20  # bytes of a journal's first record read to check it (a study's creation: far fewer)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_study_name(name: str, what: str = "--study") -> str:
    """``name`` when it can name a study and its run folder; else a NasInputError for ``what`` (the flag)."""
    if not isinstance(name, str):
        raise NasInputError(what, f"a study name is text, not {type(name).__name__}")
    shown = repr(name) if len(name) <= 2 * MAX_NAME else f"{name[:MAX_NAME]!r}... ({len(name)} characters)"
    if not name:
        problem = "is empty"
    elif len(name) > MAX_NAME:
        problem = f"is {len(name)} characters long; at most {MAX_NAME}"
    elif ".." in name:
        problem = "contains '..'"
    elif not NAME.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        problem = f"contains {', '.join(repr(c) for c in bad)}" if bad else "must start with a letter or a digit"
    else:
        return name
    raise NasInputError(
        what,
        f"{shown} {problem}: a study name is a folder name under --runs-dir: letters, digits and - _ . "
        f"(starting with a letter or a digit, no '..', at most {MAX_NAME} characters)",
    )


def study_dir(runs_dir: Path, study_name: str, what: str = "--study") -> Path:
    """The run folder of a study: ``runs_dir/<name>``, for a name that passes :func:`check_study_name`."""
    return runs_dir / check_study_name(study_name, what)


def default_storage(runs_dir: Path, study_name: str) -> str:
    return f"sqlite:///{(study_dir(runs_dir, study_name) / 'study.db').as_posix()}"


def open_storage(url: str, heartbeats: Heartbeats | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; an unreachable or unknown one is a NasInputError.

    With ``heartbeats`` (workers that train), running trials beat and stale ones are failed and
    retried (see nas.search.workers); without, the storage is for reading (status, report, export).
    """
    if url.startswith("journal:"):
        return _journal(url, heartbeats)
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in SCHEMES:
        raise NasInputError(
            "--storage",
            f"{url}: unknown storage scheme '{scheme}'{did_you_mean(scheme, list(SCHEMES))}; "
            "use sqlite:///PATH, postgresql://..., mysql://... or journal:PATH",
        )
    if scheme == "sqlite":
        path = Path(url.split("///", 1)[-1])
        if not path.parent.is_dir():
            raise NasInputError("--storage", f"{url}: folder {path.parent} does not exist")
    beat: dict[str, Any] = {}
    if heartbeats is not None:
        beat = {
            "heartbeat_interval": heartbeats.interval,
            "grace_period": heartbeats.grace,
            "heartbeat_stale_trial_callback": heartbeats.callback(),
        }
    for attempt in range(5):  # 5 tries: processes that open a new database at once race to create tables
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(scheme), **beat)
            if heartbeats is not None:  # a trial that never beat is stale after the grace period too
                count_unbeaten_as_stale(storage)
            if heartbeats is not None and scheme != "sqlite":  # a worker waits out a database restart
                ride_out(storage, heartbeats.grace)
            return storage
        except Exception as exc:  # sqlalchemy's OperationalError, a missing driver, ...
            if _creating_race(exc) and attempt < 4:  # another process is creating the tables
                time.sleep(0.5 * (attempt + 1))
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            error = StorageUnreachable if is_connection_error(exc) else NasInputError
            raise error("--storage", f"cannot open {url}: {first}") from None
    raise AssertionError("unreachable")


def _journal(url: str, heartbeats: Heartbeats | None) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

    path = Path(url.removeprefix("journal:"))
    if problem := _journal_problem(path, url):
        raise NasInputError("--storage", problem)
    try:  # opening replays the whole log: a file that is not Optuna's fails here
        if heartbeats is not None:
            # A worker killed while it appends leaves the file's lock behind: the others take it over after the
            # lock's grace period (Optuna's default 30 s), so no longer than the heartbeat grace (a write takes ms).
            lock = JournalFileSymlinkLock(str(path), grace_period=max(3, min(30, heartbeats.grace)))
            return HeartbeatJournalStorage(JournalFileBackend(str(path), lock_obj=lock), heartbeats)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as exc:  # a bad line, a record of the wrong shape, an unreadable file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise NasInputError("--storage", _not_a_journal(url, f"{type(exc).__name__}: {detail}")) from None


def _not_a_journal(url: str, why: str) -> str:
    """The message for a journal file that is not one, saying ``why``."""
    advice = "give one that `nas search --storage journal:PATH` wrote, or a new path"
    return f"{url}: not an Optuna journal file ({why}); {advice}"


def _journal_problem(path: Path, url: str) -> str | None:
    """What stops ``path`` being read (and appended to) as an Optuna journal file, or None: a missing folder, a
    folder in its place, or a first line that is not a journal record (a file of something else, which a worker
    would otherwise append to). A missing or empty file is a new journal."""
    try:
        if not path.parent.is_dir():
            return f"{url}: folder {path.parent} does not exist"
        if path.is_dir():
            return f"{url}: is a folder, not a journal file"
        if not path.is_file():
            return None
        with path.open("rb") as f:
            first = f.readline(JOURNAL_FIRST_LINE)
    except OSError as exc:
        return f"{url}: cannot read it ({exc.strerror or exc})"
    if not first.endswith(b"\n"):  # empty, or a first record still being written
        return None
    try:
        record = json.loads(first)
    except (ValueError, RecursionError):
        record = None
    if not (isinstance(record, dict) and "op_code" in record):
        return _not_a_journal(url, "line 1 is not a journal record")
    return None


def _creating_race(exc: Exception) -> bool:
    signs = ("already exists", "UNIQUE constraint failed", "Duplicate entry", "duplicate key")
    return any(sign in str(exc) for sign in signs)


def _engine_kwargs(scheme: str) -> dict[str, Any]:
    if scheme == "sqlite":
        return {"connect_args": {"timeout": 60}}
    # A worker uses two connections at once (its loop and its heartbeat thread); SQLAlchemy's default pool
    # (5, and 10 more on demand) let 21 workers hold PostgreSQL's default 100 (bench/load.py).
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2, "connect_args": {"connect_timeout": 10}}


def close_storage(storage: Any) -> None:
    """Close a database storage's pooled connections now (a reader a worker no longer needs), not at GC."""
    backend = getattr(storage, "_backend", storage)
    engine = getattr(backend, "engine", None)
    if engine is not None:
        engine.dispose()


class OneRead:
    """Inside ``with`` (entered once or several times), this thread reads ``study``'s trials from the database once:
    the first read syncs Optuna's trial cache (on a database storage it re-reads every unfinished trial whole, the
    bulk of a worker's CPU with many workers), later reads get that cache as it stands. For reads that need no
    news from the last moments: an ask (the queue's read, and TPE's with constant_liar: one per parameter group).
    A read that must see what others wrote before it (the surplus check after an ask, dedupe after a claim) is made
    outside, or opens its own block. Any other storage reads as before."""

    _held = threading.local()

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.synced = False
        self._outer: list[OneRead | None] = []
        storage = study._storage
        if isinstance(storage, optuna.storages._CachedStorage) and not getattr(storage, "_nas_one_read", False):
            sync = storage._read_trials_from_remote_storage

            def read(study_id: int) -> None:
                held: OneRead | None = getattr(OneRead._held, "block", None)
                if held is None or held.study._storage is not storage or held.study._study_id != study_id:
                    sync(study_id)
                elif not held.synced:
                    sync(study_id)
                    held.synced = True

            storage._read_trials_from_remote_storage = read  # type: ignore[method-assign]
            storage._nas_one_read = True  # type: ignore[attr-defined]

    def __enter__(self) -> OneRead:
        self._outer.append(getattr(OneRead._held, "block", None))
        OneRead._held.block = self
        return self

    def __exit__(self, *exc: object) -> None:
        OneRead._held.block = self._outer.pop()


def study_names(runs_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in runs_dir.glob("*/study.db"))


def find_study(
    name: str | None, storage: str | None, runs_dir: Path = Path("runs"), what: str = "STUDY"
) -> optuna.Study:
    """An existing study by name (in runs/ or in ``storage``); the newest in runs/ when no name is given.
    ``what`` names the argument in errors (STUDY, --study, --warm-start); a name that is not a study name
    (see :func:`check_study_name`) is refused, so no command builds a path outside ``runs_dir`` from it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if name is not None:
        check_study_name(name, what)
    if storage is None:
        name = check_study_name(_name_in_runs(name, runs_dir), what)
        storage = default_storage(runs_dir, name)
    backend = open_storage(storage)
    names = optuna.get_all_study_names(backend)  # not the summaries: they decode every trial (and a damaged one)
    if name is None:
        if len(names) != 1:
            raise NasInputError("STUDY", f"name a study; {storage} holds: {', '.join(names) or 'none'}")
        name = names[0]
    if name not in names:
        raise NasInputError(
            "STUDY",
            f"no study '{name}' in {storage}{did_you_mean(name, names)}; it holds: {', '.join(names) or 'none'}",
        )
    check_study_name(name, what)
    return optuna.load_study(study_name=name, storage=backend)


def _name_in_runs(name: str | None, runs_dir: Path) -> str:
    known = study_names(runs_dir)
    if name is None:
        if not known:
            raise NasInputError(str(runs_dir), "no study here yet; run `nas search` first, or give --storage")
        return max(known, key=lambda n: (runs_dir / n / "study.db").stat().st_mtime)
    if name not in known:
        hint = did_you_mean(name, known)
        raise NasInputError(
            "STUDY", f"no study '{name}' in {runs_dir}/{hint}; studies there: {', '.join(known) or 'none'}"
        )
    return name


def study_context(study: optuna.Study) -> tuple[SearchSpace, TrialProtocol]:
    """The space and protocol a study was created with (from its metadata; workers need no files)."""
    attrs = study.user_attrs
    if SPACE_TEXT not in attrs:
        raise NasInputError("STUDY", f"study '{study.study_name}' was not created by nas search")
    for key in (SPACE_TEXT, PROTOCOL_TEXT):
        if not isinstance(attrs.get(key), str):
            raise NasInputError(f"study '{study.study_name}'", f"{key}: damaged (not the text of a YAML file)")
    space = parse_space(attrs[SPACE_TEXT], source=f"study {study.study_name}: space", feasibility_probe=0)
    protocol = parse_protocol(attrs[PROTOCOL_TEXT], source=f"study {study.study_name}: protocol")
    return space, protocol


def study_metadata(space: SearchSpace, protocol: TrialProtocol) -> dict[str, Any]:
    """The user attributes a new study gets (names, hashes and full texts of its space and protocol)."""
    return {
        "nas.version": __version__,
        "nas.space_name": space.name,
        "nas.space_hash": space.content_hash,
        SPACE_TEXT: space.text,
        "nas.protocol_name": protocol.name,
        "nas.protocol_hash": protocol.content_hash,
        PROTOCOL_TEXT: yaml.safe_dump(protocol.model_dump(mode="json"), sort_keys=False),
        OBJECTIVES: {name: o.direction for name, o in protocol.objectives.items()},
    }


@dataclass
class StudyInfo:
    """A study's metadata as status, report and export show it."""

    name: str
    space_name: str | None
    space_hash: str | None
    protocol_name: str | None
    protocol_hash: str | None
    version: str | None
    protocol_text: str | None
    objectives: list[str] = field(default_factory=list)
    minimize: list[bool] = field(default_factory=list)
    search: dict[str, Any] = field(default_factory=dict)
    damage: list[str] = field(default_factory=list)  # metadata keys that did not read back


TEXT_KEYS = ("nas.space_name", "nas.space_hash", "nas.protocol_name", "nas.protocol_hash", "nas.version", PROTOCOL_TEXT)


def study_info(study: optuna.Study) -> StudyInfo:
    """The study's metadata; a damaged value (not of the shape nas writes) reads as absent and its key is
    listed in ``damage``, so status, report and export still work."""
    attrs = study.user_attrs
    minimize = [d == optuna.study.StudyDirection.MINIMIZE for d in study.directions]
    damage: list[str] = []

    def read(key: str, shape: type, default: Any) -> Any:
        value = attrs.get(key, default)
        if value is default or isinstance(value, shape):
            return value
        damage.append(f"{key}: damaged (not a {shape.__name__})")
        return default

    objectives = read(OBJECTIVES, dict, {})
    if not all(isinstance(k, str) for k in objectives):
        damage.append(f"{OBJECTIVES}: damaged (not a mapping of metric names)")
        objectives = {}
    texts = {key: read(key, str, None) for key in TEXT_KEYS}
    return StudyInfo(
        name=study.study_name,
        space_name=texts["nas.space_name"],
        space_hash=texts["nas.space_hash"],
        protocol_name=texts["nas.protocol_name"],
        protocol_hash=texts["nas.protocol_hash"],
        version=texts["nas.version"],
        protocol_text=texts[PROTOCOL_TEXT],
        objectives=list(objectives),
        minimize=minimize,
        search=read(SEARCH_ATTR, dict, {}),
        damage=damage,
    )


def record_stop(study: optuna.Study, reason: str, worker: str) -> None:
    """Note why a worker loop on ``study`` stopped (what `nas search --workers` reports); never raises."""
    try:
        study.set_user_attr(STOPPED_ATTR, {"reason": reason, "worker": worker, "time": time.time()})
    except Exception:  # a nicety: the search's result is in its trials
        pass


def last_stop(study: optuna.Study, since: float) -> str | None:
    """The reason the last worker loop stopped, if it stopped after ``since`` (a time.time())."""
    try:
        stop = study.user_attrs.get(STOPPED_ATTR)
        if isinstance(stop, dict) and float(stop.get("time", 0.0)) >= since and isinstance(stop.get("reason"), str):
            return str(stop["reason"])
    except Exception:  # damaged attributes: no reason
        pass
    return None


# ---- what a finished trial leaves behind ----------------------------------------------------------
def store_artifacts(trial: optuna.Trial, result: Any, store: Any, keep_weights: bool) -> None:
    """What a trained trial leaves behind: the dashboard note (:func:`trial_note`), the learning curve as
    JSON, and the weights when kept (``result`` is a nas.trial.TrialResult; ``store`` an artifact store)."""
    try:
        from optuna_dashboard import save_note

        save_note(trial, trial_note(result))
    except Exception:  # the note is a nicety; never fail a trial for it
        pass
    with tempfile.TemporaryDirectory() as tmp:
        curve_file = Path(tmp) / f"curve-{trial.number}.json"
        curve_file.write_text(json.dumps([p.to_dict() for p in result.curve], indent=1))
        upload = optuna.artifacts.upload_artifact
        records.write_artifact(
            trial,
            "curve",
            upload(artifact_store=store, file_path=str(curve_file), study_or_trial=trial, mimetype="application/json"),
        )
        if keep_weights and result.model is not None:
            result.model.save_pretrained(tmp)
            weights = str(Path(tmp) / "model.safetensors")
            weights_id = upload(artifact_store=store, file_path=weights, study_or_trial=trial)
            records.write_artifact(trial, "weights", weights_id)


def trial_note(result: Any) -> str:
    """The markdown note optuna-dashboard shows beside a trial: architecture, metrics (with baselines), time."""
    from nas.train.baselines import baseline_text

    arch = result.arch
    lines = [
        f"### {arch.summary()}",
        "",
        f"hash `{arch.arch_hash()}` · status **{result.status}**" + (f" · {result.cause}" if result.cause else ""),
        "",
        "| knob | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in arch.to_dict().items() if v is not None]
    if result.task_baselines:  # beside each task metric, what a trivial predictor scores
        lines += ["", "| metric | value | baseline (no model) |", "|---|---|---|"]
        lines += [
            f"| {k} | {v:.5g} | {baseline_text(k, result.task_baselines, result.baseline_predictors)} |"
            for k, v in result.metrics.items()
        ]
    else:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.5g} |" for k, v in result.metrics.items()]
    wall = result.wall_seconds
    if result.phase_seconds and wall > 0:  # where the trial's time went
        lines += ["", f"Time: {wall:.1f} s", "", "| phase | seconds | share |", "|---|---|---|"]
        lines += [f"| {k} | {v:.1f} | {100 * v / wall:.0f} % |" for k, v in result.phase_seconds.items()]
    return "\n".join(lines)
