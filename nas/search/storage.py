"""Where studies live: storage URLs, opening a storage, finding a study, and a study's metadata.

SQLite in ``runs/<study>/study.db`` is the default; ``journal:PATH`` (a file journal),
``postgresql://`` and ``mysql+pymysql://`` scale out. A study created by nas carries its space,
protocol and search settings as user attributes, so a worker joining it needs no files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from nas import __version__
from nas.errors import NasInputError, did_you_mean
from nas.protocol import TrialProtocol, parse_protocol
from nas.search.workers import HeartbeatJournalStorage, Heartbeats
from nas.space import SearchSpace, parse_space

__all__ = [
    "default_storage",
    "open_storage",
    "study_names",
    "find_study",
    "study_context",
    "study_metadata",
    "StudyInfo",
    "study_info",
    "SEARCH_ATTR",
]

SCHEMES = ("sqlite", "postgresql", "mysql")
SEARCH_ATTR = "nas.search"  # the search settings a joining worker reads (SearchConfig.search_attrs)
SPACE_TEXT = "nas.space_text"
PROTOCOL_TEXT = "nas.protocol_text"
OBJECTIVES = "nas.objectives"


def default_storage(runs_dir: Path, study_name: str) -> str:
    return f"sqlite:///{(runs_dir / study_name / 'study.db').as_posix()}"


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
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(scheme), **beat)
        except Exception as exc:  # sqlalchemy's OperationalError, a missing driver, ...
            if _creating_race(exc) and attempt < 4:  # another process is creating the tables
                time.sleep(0.5 * (attempt + 1))
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NasInputError("--storage", f"cannot open {url}: {first}") from None
    raise AssertionError("unreachable")


def _journal(url: str, heartbeats: Heartbeats | None) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    path = Path(url.removeprefix("journal:"))
    if not path.parent.is_dir():
        raise NasInputError("--storage", f"{url}: folder {path.parent} does not exist")
    if heartbeats is not None:
        return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeats)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _creating_race(exc: Exception) -> bool:
    signs = ("already exists", "UNIQUE constraint failed", "Duplicate entry", "duplicate key")
    return any(sign in str(exc) for sign in signs)


def _engine_kwargs(scheme: str) -> dict[str, Any]:
    if scheme == "sqlite":
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def study_names(runs_dir: Path) -> list[str]:
    return sorted(p.parent.name for p in runs_dir.glob("*/study.db"))


def find_study(name: str | None, storage: str | None, runs_dir: Path = Path("runs")) -> optuna.Study:
    """An existing study by name (in runs/ or in ``storage``); the newest in runs/ when no name is given."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        name = _name_in_runs(name, runs_dir)
        storage = default_storage(runs_dir, name)
    backend = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
    if name is None:
        if len(names) != 1:
            raise NasInputError("STUDY", f"name a study; {storage} holds: {', '.join(names) or 'none'}")
        name = names[0]
    if name not in names:
        raise NasInputError(
            "STUDY",
            f"no study '{name}' in {storage}{did_you_mean(name, names)}; it holds: {', '.join(names) or 'none'}",
        )
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


def study_info(study: optuna.Study) -> StudyInfo:
    attrs = study.user_attrs
    minimize = [d == optuna.study.StudyDirection.MINIMIZE for d in study.directions]
    return StudyInfo(
        name=study.study_name,
        space_name=attrs.get("nas.space_name"),
        space_hash=attrs.get("nas.space_hash"),
        protocol_name=attrs.get("nas.protocol_name"),
        protocol_hash=attrs.get("nas.protocol_hash"),
        version=attrs.get("nas.version"),
        protocol_text=attrs.get(PROTOCOL_TEXT),
        objectives=list(attrs.get(OBJECTIVES, {})),
        minimize=minimize,
        search=attrs.get(SEARCH_ATTR, {}),
    )
