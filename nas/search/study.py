"""Create, resume, warm-start and join a study.

A new study records its space, protocol and search settings (nas.search.storage.study_metadata);
resuming checks they did not change; a worker joins with only the study's name and storage.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.errors import NasInputError, StorageUnreachable
from nas.protocol import under_runs_dir
from nas.search import records
from nas.search.config import SearchConfig, range_problems
from nas.search.samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler
from nas.search.storage import (
    SEARCH_ATTR,
    close_storage,
    default_storage,
    find_study,
    open_storage,
    study_context,
    study_metadata,
)
from nas.search.workers import Heartbeats

__all__ = ["create_or_resume", "warm_start", "prepare_study", "join_study"]


def create_or_resume(
    config: SearchConfig, storage: optuna.storages.BaseStorage, log: Callable[[str], None] | None = None
) -> optuna.Study:
    """Create the study, or resume it after checking that its space and protocol did not change. A study
    resumed under a shipped protocol (no --set) that nas has changed since keeps the protocol it was created
    with: ``config.protocol`` becomes that one, and ``log`` hears so."""
    directions = [o.direction for o in config.protocol.objectives.values()]
    multi = len(directions) > 1
    study = optuna.create_study(
        study_name=config.study_name,
        storage=storage,
        directions=directions,
        sampler=make_sampler(config.sampler, config.seed, config.space, multi),
        pruner=make_pruner(config.pruner, config.protocol, multi)[0],
        load_if_exists=True,
    )
    if "nas.space_hash" in study.user_attrs:  # resumed
        if _keeps_its_protocol(study, config, log):
            directions = [o.direction for o in config.protocol.objectives.values()]
            study.pruner = make_pruner(config.pruner, config.protocol, len(directions) > 1)[0]
        _check_unchanged(study, config, study_metadata(config.space, config.protocol), directions)
        study.set_user_attr(SEARCH_ATTR, config.search_attrs())
        return study
    metadata = study_metadata(config.space, config.protocol)
    study.set_user_attr(SEARCH_ATTR, config.search_attrs())
    for key, value in metadata.items():
        study.set_user_attr(key, value)
    if len(directions) > 1 or list(config.protocol.objectives) != ["val_loss"]:
        study.set_metric_names(list(config.protocol.objectives))  # the dashboard's axis names
    return study


def _keeps_its_protocol(study: optuna.Study, config: SearchConfig, log: Callable[[str], None] | None) -> bool:
    """Resume under the protocol the study was created with, when the user named the shipped protocol of that
    name with no --set and the shipped file has changed since (a new nas): the study is theirs, the file is
    not. A protocol file of their own, or --set, that differs from the study's is still refused."""
    attrs = study.user_attrs
    old, new = attrs.get("nas.protocol_hash"), config.protocol.content_hash
    if not config.protocol_as_shipped or old == new or attrs.get("nas.protocol_name") != config.protocol.name:
        return False
    config.protocol = under_runs_dir(study_context(study)[1], config.runs_dir)
    if log is not None:
        log(
            f"study '{config.study_name}' keeps the protocol it was created with ({config.protocol.name}, hash "
            f"{old}); the shipped {config.protocol.name} has changed since (hash {new}): a new --study uses it"
        )
    return True


def _check_unchanged(
    study: optuna.Study, config: SearchConfig, metadata: dict[str, Any], directions: Sequence[str]
) -> None:
    existing = study.user_attrs
    for what in ("space", "protocol"):
        old, new = existing[f"nas.{what}_hash"], metadata[f"nas.{what}_hash"]
        if old != new:
            raise NasInputError(
                "--study",
                f"study '{config.study_name}' was created with another {what} (hash {old}, now {new}); "
                f"use a new --study name, and --warm-start {config.study_name} to seed it with this one's "
                "architectures",
            )
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
        raise NasInputError("--study", f"study '{config.study_name}' has other objective directions")


def warm_start(study: optuna.Study, old_name: str, storage: str | None, runs_dir: Path) -> int:
    """Enqueue the completed architectures of another study; returns how many."""
    old = find_study(
        old_name,
        storage if storage and storage != default_storage(runs_dir, study.study_name) else None,
        runs_dir,
        what="--warm-start",
    )
    seen, n = set(), 0
    for trial in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        arch_hash = records.arch_hash_of(trial)
        if arch_hash and arch_hash not in seen and records.is_trained(trial):
            seen.add(arch_hash)
            study.enqueue_trial(
                trial.params, user_attrs=records.warm_start_attrs(old_name, trial.number), skip_if_exists=True
            )
            n += 1
    return n


def prepare_study(config: SearchConfig, log: Callable[[str], None] | None = None) -> optuna.Study:
    """Create (or check and resume) the study, enqueue a warm start, and build the token cache.

    ``log`` (a callable taking a line) hears about the warm start.
    """
    from nas.data.tokens import prepare_tokens

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = config.storage or default_storage(config.runs_dir, config.study_name)
    if config.storage is None:
        config.run_dir.mkdir(parents=True, exist_ok=True)
    study = create_or_resume(config, open_storage(url, config.heartbeats), log)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    if config.warm_start:
        n = warm_start(study, config.warm_start, config.storage, config.runs_dir)
        if log is not None:
            log(f"warm start: enqueued {n} architectures from {config.warm_start}")
    prepare_tokens(config.protocol)  # build the shared token cache once, before any trial
    return study


def join_study(
    name: str,
    storage: str | None,
    runs_dir: Path = Path("runs"),
    n_trials: int | None = None,
    timeout: float | None = None,
    seed_offset: int | None = None,
    wait: float = 0.0,
    log: Callable[[str], None] | None = None,
) -> tuple[optuna.Study, SearchConfig]:
    """A worker's view of an existing study: space, protocol and search settings from its metadata. ``wait``:
    seconds to keep trying a database that refuses the connection (a worker requeued while it restarts),
    each try told to ``log``; then, or on any other problem, a NasInputError."""
    problems = range_problems({"--n-trials": n_trials, "--timeout": timeout, "--wait": wait})
    if problems:
        raise NasInputError(None, problems)
    reachable = functools.partial(_until_reachable, wait=wait, log=log)
    found = reachable(lambda: find_study(name, storage, runs_dir, what="--study"))
    space, protocol = study_context(found)
    stored = _stored_settings(found)
    close_storage(found._storage)  # the worker's own storage (with heartbeats) is opened below
    base_seed = stored["seed"]
    offset = seed_offset if seed_offset is not None else os.getpid()
    config = SearchConfig(
        space=space,
        protocol=under_runs_dir(protocol, runs_dir),
        study_name=found.study_name,
        storage=storage,
        runs_dir=runs_dir,
        n_trials=n_trials or stored["n_trials"],
        timeout=timeout,
        sampler=stored["sampler"],
        pruner=stored["pruner"],
        seed=None if base_seed is None else (base_seed + offset) % 2**32,  # workers must not all draw the same samples
        keep_weights=stored["keep_weights"],
        heartbeats=Heartbeats(stored["heartbeat"], stored["grace"]),
        checkpoint_every=stored["checkpoint_every"],
    )
    multi = len(found.directions) > 1
    url = storage or default_storage(runs_dir, found.study_name)
    study = optuna.load_study(
        study_name=found.study_name,
        storage=reachable(lambda: open_storage(url, config.heartbeats)),
        sampler=make_sampler(config.sampler, config.seed, space, multi),
        pruner=make_pruner(config.pruner, protocol, multi)[0],
    )
    return study, config


def _until_reachable(action: Callable[[], Any], wait: float, log: Callable[[str], None] | None) -> Any:
    """``action()``, tried again while it raises StorageUnreachable, for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return action()
        except StorageUnreachable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            if log is not None:
                log(f"{exc} (trying again for {left:.0f}s more, --wait)")
            time.sleep(min(5.0, left))


STORED_DEFAULTS: dict[str, Any] = {
    "n_trials": 10,
    "sampler": "tpe",
    "pruner": "hyperband",
    "seed": None,
    "keep_weights": False,
    "heartbeat": 10,
    "grace": 60,
    "checkpoint_every": None,
}


def _stored_settings(study: optuna.Study) -> dict[str, Any]:
    """The search settings stored with ``study`` (nas.search), checked: a damaged one is bad input naming
    its key, never a traceback in a worker."""
    where = f"study '{study.study_name}': {SEARCH_ATTR}"
    attrs = study.user_attrs.get(SEARCH_ATTR, {})
    if not isinstance(attrs, dict):
        raise NasInputError(where, f"damaged: a {type(attrs).__name__}, not a mapping; start a new --study")
    settings = {**STORED_DEFAULTS, **{k: v for k, v in attrs.items() if k in STORED_DEFAULTS}}
    flags = {"n_trials": "--n-trials", "seed": "--seed", "heartbeat": "--heartbeat", "grace": "--grace"}
    flags["checkpoint_every"] = "--checkpoint-every"
    problems = [(key, problem) for key, flag in flags.items() for _, problem in range_problems({flag: settings[key]})]
    problems += [(key, "missing") for key in ("n_trials", "heartbeat", "grace") if settings[key] is None]
    for key, allowed in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if settings[key] not in allowed:
            problems.append((key, f"{settings[key]!r} is not one of {', '.join(allowed)}"))
    if not isinstance(settings["keep_weights"], bool):
        problems.append(("keep_weights", f"{settings['keep_weights']!r} is not true or false"))
    if not problems and settings["grace"] <= settings["heartbeat"]:
        problems.append(("grace", f"{settings['grace']} must exceed heartbeat {settings['heartbeat']}"))
    if problems:
        raise NasInputError(where, [(key, f"damaged: {problem}") for key, problem in problems])
    return settings
