"""The search: an Optuna study whose trials sample a space and run a trial protocol.

ask → sample → (infeasible? duplicate?) → run_trial (reporting the held-out loss for pruning) →
tell, with every trial's architecture, counts, metrics, curve and cause in its user attributes, an
optuna-dashboard note, and artifacts (learning curve JSON, weights when kept) in the run folder.
Optuna stays here and in the CLI; the trial runner knows nothing of it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from nas import __version__
from nas.errors import NasInputError, did_you_mean
from nas.protocol import TrialProtocol, parse_protocol
from nas.pruning import CurvePruner
from nas.space import SearchSpace, parse_space
from nas.workers import HeartbeatJournalStorage, Heartbeats, beating, fail_stale, worker_id

__all__ = [
    "SearchConfig",
    "SearchSummary",
    "SAMPLERS",
    "PRUNERS",
    "open_storage",
    "find_study",
    "run_search",
    "leaderboard",
    "study_context",
    "trained_count",
]

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# nas's worker loop (ask/tell) beats and fails stale trials itself (nas.workers), as Study.optimize would
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

SAMPLERS = ("tpe", "random", "nsga2", "gp", "cmaes", "grid")
PRUNERS = ("median", "sha", "hyperband", "none")
TRAINED = "trained"
EXHAUSTED_AFTER = 100  # consecutive samples that are infeasible or duplicates: the space is exhausted
FAILURES_IN_A_ROW = 5


@dataclass
class SearchConfig:
    space: SearchSpace
    protocol: TrialProtocol
    study_name: str
    storage: str | None = None  # None: sqlite in runs/<study>/study.db
    runs_dir: Path = Path("runs")
    n_trials: int = 10
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    seed: int | None = 0
    keep_weights: bool = False
    warm_start: str | None = None
    heartbeats: Heartbeats = field(default_factory=Heartbeats)
    checkpoint_every: int | None = None  # steps between trial checkpoints; None: eval_every; 0: none

    def search_attrs(self) -> dict[str, Any]:
        """What a joining worker needs besides the space and protocol (study attribute nas.search)."""
        return {
            "n_trials": self.n_trials,
            "sampler": self.sampler,
            "pruner": self.pruner,
            "seed": self.seed,
            "keep_weights": self.keep_weights,
            "heartbeat": self.heartbeats.interval,
            "grace": self.heartbeats.grace,
            "checkpoint_every": self.checkpoint_every,
        }


@dataclass
class SearchSummary:
    study: optuna.Study
    trained: int
    new_trained: int
    stopped_because: str
    run_dir: Path
    elapsed: float


@dataclass
class Callbacks:
    """What the CLI listens to (all optional)."""

    trial_started: Callable[[int, str], None] = lambda number, summary: None
    stage: Callable[[str], None] = lambda name: None
    step: Callable[[int, float, float], None] = lambda step, loss, tps: None
    trial_finished: Callable[[optuna.trial.FrozenTrial, optuna.Study], None] = lambda trial, study: None
    log: Callable[[str], None] = lambda line: None


# ---- storage and lookup ---------------------------------------------------------------------
def default_storage(runs_dir: Path, study_name: str) -> str:
    return f"sqlite:///{(runs_dir / study_name / 'study.db').as_posix()}"


def open_storage(url: str, heartbeats: Heartbeats | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; an unreachable or unknown one is a NasInputError.

    With ``heartbeats`` (workers that train), running trials beat and stale ones are failed and
    retried (see nas.workers); without, the storage is for reading (status, report, export).
    """
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise NasInputError("--storage", f"{url}: folder {path.parent} does not exist")
        if heartbeats is not None:
            return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeats)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise NasInputError(
            "--storage",
            f"{url}: unknown storage scheme '{scheme}'{did_you_mean(scheme, ['sqlite', 'postgresql', 'mysql'])}; "
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
        known = study_names(runs_dir)
        if name is None:
            if not known:
                raise NasInputError(str(runs_dir), "no study here yet; run `nas search` first, or give --storage")
            name = max(known, key=lambda n: (runs_dir / n / "study.db").stat().st_mtime)
        elif name not in known:
            hint = did_you_mean(name, known)
            raise NasInputError(
                "STUDY", f"no study '{name}' in {runs_dir}/{hint}; studies there: {', '.join(known) or 'none'}"
            )
        storage = default_storage(runs_dir, name)
    backend = open_storage(storage)
    summaries = optuna.get_all_study_summaries(backend)
    names = [s.study_name for s in summaries]
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


def study_context(study: optuna.Study) -> tuple[SearchSpace, TrialProtocol]:
    """The space and protocol a study was created with (from its metadata; workers need no files)."""
    attrs = study.user_attrs
    if "nas.space_text" not in attrs:
        raise NasInputError("STUDY", f"study '{study.study_name}' was not created by nas search")
    space = parse_space(attrs["nas.space_text"], source=f"study {study.study_name}: space", feasibility_probe=0)
    protocol = parse_protocol(attrs["nas.protocol_text"], source=f"study {study.study_name}: protocol")
    return space, protocol


def _metadata(space: SearchSpace, protocol: TrialProtocol) -> dict[str, Any]:
    return {
        "nas.version": __version__,
        "nas.space_name": space.name,
        "nas.space_hash": space.content_hash,
        "nas.space_text": space.text,
        "nas.protocol_name": protocol.name,
        "nas.protocol_hash": protocol.content_hash,
        "nas.protocol_text": yaml.safe_dump(protocol.model_dump(mode="json"), sort_keys=False),
        "nas.objectives": {name: o.direction for name, o in protocol.objectives.items()},
    }


# ---- samplers and pruners -------------------------------------------------------------------
def make_sampler(name: str, seed: int | None, space: SearchSpace, multi: bool) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=5, constant_liar=True
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)
    if name == "cmaes":
        if multi:
            raise NasInputError("--sampler", "cmaes handles single-objective studies only; use tpe or nsga2")
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(space), seed=seed)
    raise NasInputError(
        "--sampler", f"unknown sampler '{name}'{did_you_mean(name, SAMPLERS)}; one of {', '.join(SAMPLERS)}"
    )


def grid_space(space: SearchSpace) -> dict[str, list[Any]]:
    """Every parameter's finite values, for the grid sampler (float ranges need a step)."""
    grid: dict[str, list[Any]] = {}
    for param in space.params:
        values = param.possible_values()
        spec = param.spec
        if values is None:
            if spec.type == "int":
                values = list(range(spec.low, spec.high + 1, spec.step))
            elif spec.step is not None:
                n = int(round((spec.high - spec.low) / spec.step))
                values = [round(spec.low + i * spec.step, 12) for i in range(n + 1)]
            else:
                raise NasInputError(
                    "--sampler", f"grid needs a finite space; parameter '{param.name}' is a float range without step"
                )
        if len(values) > 1:
            grid[param.name] = values
    return grid


def make_pruner(
    name: str, protocol: TrialProtocol, multi: bool
) -> tuple[optuna.pruners.BasePruner, CurvePruner | None]:
    """(Optuna's pruner, our curve pruner). Optuna's is used when the study has one objective that is the
    held-out loss (minimised); otherwise the curve pruner decides on the loss curve (see nas.pruning)."""
    if name not in PRUNERS:
        raise NasInputError(
            "--pruner", f"unknown pruner '{name}'{did_you_mean(name, PRUNERS)}; one of {', '.join(PRUNERS)}"
        )
    if name == "none":
        return optuna.pruners.NopPruner(), None
    every = protocol.pretrain.eval_every
    objectives = protocol.objectives
    native = not multi and list(objectives) == ["val_loss"] and objectives["val_loss"].direction == "minimize"
    if native:
        if name == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=every), None
        if name == "sha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=every, reduction_factor=3), None
        return optuna.pruners.HyperbandPruner(min_resource=every, reduction_factor=3), None
    kind = "median" if name == "median" else "sha"  # hyperband's first bracket is successive halving
    return optuna.pruners.NopPruner(), CurvePruner(
        kind=kind, n_warmup_steps=every if kind == "median" else 0, min_resource=every
    )


# ---- the loop -------------------------------------------------------------------------------
def trained_count(study: optuna.Study) -> int:
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if t.user_attrs.get("nas_status") == TRAINED
    )


def create_or_resume(config: SearchConfig, storage: optuna.storages.BaseStorage) -> optuna.Study:
    directions = [o.direction for o in config.protocol.objectives.values()]
    multi = len(directions) > 1
    sampler = make_sampler(config.sampler, config.seed, config.space, multi)
    pruner, _ = make_pruner(config.pruner, config.protocol, multi)
    study = optuna.create_study(
        study_name=config.study_name,
        storage=storage,
        directions=directions,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    metadata = _metadata(config.space, config.protocol)
    existing = study.user_attrs
    if "nas.space_hash" in existing:
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
        study.set_user_attr("nas.search", config.search_attrs())
    else:
        study.set_user_attr("nas.search", config.search_attrs())
        for key, value in metadata.items():
            study.set_user_attr(key, value)
        if len(directions) > 1 or list(config.protocol.objectives) != ["val_loss"]:
            study.set_metric_names(list(config.protocol.objectives))  # the dashboard's axis names
    return study


def warm_start(study: optuna.Study, old_name: str, storage: str | None, runs_dir: Path) -> int:
    """Enqueue the completed architectures of another study; returns how many."""
    old = find_study(
        old_name, storage if storage and storage != default_storage(runs_dir, study.study_name) else None, runs_dir
    )
    seen, n = set(), 0
    for trial in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        arch_hash = trial.user_attrs.get("arch_hash")
        if arch_hash and arch_hash not in seen and trial.user_attrs.get("nas_status") == TRAINED:
            seen.add(arch_hash)
            study.enqueue_trial(
                trial.params, user_attrs={"warm_start_from": f"{old_name}#{trial.number}"}, skip_if_exists=True
            )
            n += 1
    return n


def prepare_study(config: SearchConfig, callbacks: Callbacks | None = None) -> optuna.Study:
    """Create (or check and resume) the study, enqueue a warm start, and build the token cache."""
    from nas.data.tokens import prepare_tokens

    cb = callbacks or Callbacks()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = config.runs_dir / config.study_name
    url = config.storage or default_storage(config.runs_dir, config.study_name)
    if config.storage is None:
        run_dir.mkdir(parents=True, exist_ok=True)
    study = create_or_resume(config, open_storage(url, config.heartbeats))
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.warm_start:
        cb.log(
            f"warm start: enqueued {warm_start(study, config.warm_start, config.storage, config.runs_dir)} "
            f"architectures from {config.warm_start}"
        )
    prepare_tokens(config.protocol)  # build the shared token cache once, before any trial
    return study


def run_search(config: SearchConfig, callbacks: Callbacks | None = None) -> SearchSummary:
    """Run (or resume) the study in this process until ``n_trials`` trials have trained, the timeout, or
    exhaustion."""
    study = prepare_study(config, callbacks)
    return work(study, config, callbacks)


def join_study(
    name: str,
    storage: str | None,
    runs_dir: Path = Path("runs"),
    n_trials: int | None = None,
    timeout: float | None = None,
    seed_offset: int | None = None,
) -> tuple[optuna.Study, SearchConfig]:
    """A worker's view of an existing study: space, protocol and search settings from its metadata."""
    found = find_study(name, storage, runs_dir)
    space, protocol = study_context(found)
    attrs = found.user_attrs.get("nas.search", {})
    base_seed = attrs.get("seed")
    offset = seed_offset if seed_offset is not None else os.getpid()
    config = SearchConfig(
        space=space,
        protocol=protocol,
        study_name=found.study_name,
        storage=storage,
        runs_dir=runs_dir,
        n_trials=n_trials or attrs.get("n_trials", 10),
        timeout=timeout,
        sampler=attrs.get("sampler", "tpe"),
        pruner=attrs.get("pruner", "hyperband"),
        seed=None if base_seed is None else base_seed + offset,  # workers must not all draw the same samples
        keep_weights=attrs.get("keep_weights", False),
        heartbeats=Heartbeats(attrs.get("heartbeat", 10), attrs.get("grace", 60)),
        checkpoint_every=attrs.get("checkpoint_every"),
    )
    multi = len(found.directions) > 1
    url = storage or default_storage(runs_dir, found.study_name)
    study = optuna.load_study(
        study_name=found.study_name,
        storage=open_storage(url, config.heartbeats),
        sampler=make_sampler(config.sampler, config.seed, space, multi),
        pruner=make_pruner(config.pruner, protocol, multi)[0],
    )
    return study, config


def work(study: optuna.Study, config: SearchConfig, callbacks: Callbacks | None = None) -> SearchSummary:
    """The worker loop: ask, run, tell, until the study has ``n_trials`` trained trials.

    Several workers may run it on one study at once. A worker starts a trial only while the trained
    trials plus the running ones fall short of ``n_trials``; otherwise it waits, because a running trial
    may still fail (its worker killed) and need a re-run. A trial that lost the race (another worker
    asked at the same moment) is told FAIL as "surplus" before it trains, so the study ends with exactly
    ``n_trials`` trained.
    """
    cb = callbacks or Callbacks()
    run_dir = config.runs_dir / config.study_name
    run_dir.mkdir(parents=True, exist_ok=True)
    multi = len(study.directions) > 1
    _, curve_pruner = make_pruner(config.pruner, config.protocol, multi)
    artifacts = optuna.artifacts.FileSystemArtifactStore(str(_mkdir(run_dir / "artifacts")))
    poll = min(2.0, config.heartbeats.interval)

    started = time.monotonic()
    before = trained_count(study)
    wasted = failures = 0
    waiting = False
    while True:
        fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if _is_trained(t))
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if done >= config.n_trials:
            stopped = f"{done} trials trained (--n-trials {config.n_trials})"
            break
        if config.timeout is not None and time.monotonic() - started > config.timeout:
            stopped = f"timeout after {time.monotonic() - started:.0f}s"
            break
        if wasted >= EXHAUSTED_AFTER or _grid_exhausted(study):
            stopped = f"the space ran out of new architectures (last {wasted} samples were infeasible or seen)"
            break
        if failures >= FAILURES_IN_A_ROW:
            stopped = f"{failures} trials failed in a row; see `nas status {config.study_name}` for the causes"
            break
        if done + len(running) >= config.n_trials:
            if not waiting:
                cb.log(
                    f"waiting: {done} trained and {len(running)} running (trials "
                    f"{', '.join(str(t.number) for t in running)}) may complete the study"
                )
                waiting = True
            time.sleep(poll)
            continue
        waiting = False
        trial = study.ask()
        with beating(study, trial._trial_id, study._storage):
            try:
                outcome = _run_one(study, trial, config, curve_pruner, artifacts, cb)
            except optuna.exceptions.UpdateFinishedTrialError:
                outcome = "stale"
                cb.log(
                    f"trial {trial.number}: another worker failed it as stale while it ran (no heartbeat "
                    f"within {config.heartbeats.grace}s); its retry resumes from the checkpoint"
                )
        frozen = study.get_trials(deepcopy=False)[trial.number] if trial.number < len(study.trials) else None
        if frozen is not None:
            cb.trial_finished(frozen, study)
        wasted = wasted + 1 if outcome in ("infeasible", "duplicate") else 0
        failures = failures + 1 if outcome == "failed" else 0
    return SearchSummary(
        study, trained_count(study), trained_count(study) - before, stopped, run_dir, time.monotonic() - started
    )


def _is_trained(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and trial.user_attrs.get("nas_status") == TRAINED


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _grid_exhausted(study: optuna.Study) -> bool:
    sampler = study.sampler
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


def _surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """True when trials trained, or running and asked before this one, already make ``n_trials``."""
    ahead = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if _is_trained(t) or (t.state == TrialState.RUNNING and t.number < trial.number)
    )
    return ahead >= n_trials


def _requeue(study: optuna.Study, trial: optuna.Trial, retry: bool = False) -> None:
    """Put a trial's parameters back in the queue: an enqueued one (a retry, a warm start) that lost
    the race for the last slot, or (``retry``) an interrupted one, to resume from its checkpoint."""
    frozen = study._storage.get_trial(trial._trial_id)
    if not (retry or frozen.params or "fixed_params" in frozen.system_attrs):
        return
    user_attrs = {k: v for k, v in frozen.user_attrs.items() if k not in ("nas_status", "cause", "curve")}
    system_attrs = dict(frozen.system_attrs)
    if retry:
        system_attrs["failed_trial"] = system_attrs.get("failed_trial", frozen.number)
        system_attrs["retry_history"] = [*system_attrs.get("retry_history", []), frozen.number]
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    )


def _killed_cause(config: SearchConfig) -> str:
    return (
        f"killed: worker {worker_id()} stopped beating (no heartbeat for {config.heartbeats.grace}s); "
        "retried from its checkpoint"
    )


def _exception_cause(exc: BaseException, lines: list[str]) -> str:
    where = next((line.strip() for line in reversed(lines) if line.strip().startswith("File ")), "")
    return f"exception: {type(exc).__name__}: {exc}" + (f" ({where})" if where else "")


def _run_one(study, trial, config: SearchConfig, curve_pruner, artifacts, cb: Callbacks) -> str:
    """Sample, dedupe, train and tell one trial; returns its nas_status."""
    from nas.train.checkpoint import Checkpoint
    from nas.trial import run_trial

    if _surplus(study, trial, config.n_trials):
        _requeue(study, trial)
        trial.set_user_attr("nas_status", "surplus")
        trial.set_user_attr("cause", f"surplus: another worker's trial completes the {config.n_trials}")
        study.tell(trial, state=TrialState.FAIL)
        return "surplus"
    retry_of = study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
    sample = config.space.sample(trial)
    if sample.arch is None:
        trial.set_user_attr("nas_status", "infeasible")
        trial.set_user_attr("cause", f"infeasible: {sample.reason}")
        study.tell(trial, state=TrialState.FAIL)
        cb.log(f"trial {trial.number}: infeasible: {sample.reason}")
        return "infeasible"
    arch = sample.arch
    arch_hash = arch.arch_hash()
    trial.set_user_attr("arch", arch.to_dict())
    trial.set_user_attr("arch_hash", arch_hash)
    trial.set_user_attr("summary", arch.summary())
    for name, value in arch.counts().items():
        trial.set_user_attr(name, value)
    # The claim: other workers now see this architecture as taken. The cause is what stays if this
    # worker dies; every ending below overwrites it.
    trial.set_user_attr("nas_status", "running")
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr("cause", _killed_cause(config))
    if retry_of is not None:
        trial.set_user_attr("retry_of", retry_of)
    duplicate = _duplicate_of(study, trial.number, arch_hash)
    if duplicate is not None:
        trial.set_user_attr("nas_status", "duplicate")
        trial.set_user_attr("duplicate_of", duplicate.number)
        if duplicate.state == TrialState.RUNNING:
            trial.set_user_attr("cause", f"duplicate of trial {duplicate.number}, running on another worker")
            study.tell(trial, state=TrialState.PRUNED)
        elif duplicate.state == TrialState.COMPLETE:
            trial.set_user_attr("cause", f"duplicate of trial {duplicate.number}: its values are reused")
            study.tell(trial, duplicate.values)
        else:
            trial.set_user_attr("cause", f"duplicate of trial {duplicate.number} (pruned)")
            study.tell(trial, state=TrialState.PRUNED)
        cb.log(f"trial {trial.number}: duplicate of trial {duplicate.number} ({arch.summary()})")
        return "duplicate"

    every = config.protocol.pretrain.eval_every if config.checkpoint_every is None else config.checkpoint_every
    key = f"{arch_hash}-{config.protocol.content_hash}"
    run_dir = config.runs_dir / config.study_name
    checkpoint = Checkpoint(run_dir / "checkpoints" / key, every, key=key) if every else None

    cb.trial_started(trial.number, arch.summary())
    curve: list[list[float]] = []
    checked: set[int] = set()

    def reporter(point) -> bool:
        curve.append([point.step, point.tokens, point.val_loss])
        trial.set_user_attr("curve", curve)
        if curve_pruner is not None:
            trials = study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
            return curve_pruner.should_prune(trials, trial.number, point.step, point.val_loss, checked)
        if isinstance(study.pruner, optuna.pruners.NopPruner):
            return False
        trial.report(point.val_loss, point.step)
        return trial.should_prune()

    try:
        result = run_trial(
            arch,
            config.protocol,
            reporter=reporter,
            on_step=cb.step,
            on_stage=cb.stage,
            keep_model=config.keep_weights,
            checkpoint=checkpoint,
        )
    except KeyboardInterrupt:
        trial.set_user_attr("nas_status", "interrupted")
        trial.set_user_attr("cause", "interrupted (Ctrl-C); re-run the same command to continue")
        study.tell(trial, state=TrialState.FAIL)
        _requeue(study, trial, retry=True)
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        raise
    except Exception as exc:
        lines = traceback.format_exc().strip().splitlines()
        trial.set_user_attr("nas_status", "failed")
        trial.set_user_attr("cause", _exception_cause(exc, lines))
        trial.set_user_attr("traceback", "\n".join(lines[-12:]))
        study.tell(trial, state=TrialState.FAIL)
        if checkpoint is not None:
            checkpoint.clear()
        cb.log(f"trial {trial.number}: failed: {type(exc).__name__}: {exc}")
        return "failed"

    if result.resumed_from_step is not None:
        trial.set_user_attr("resumed_from_step", result.resumed_from_step)
        cb.log(f"trial {trial.number}: resumed from the checkpoint at step {result.resumed_from_step}")
    _record(trial, result, artifacts, config)
    outcome = _tell(study, trial, result, config, cb)
    if checkpoint is not None:
        checkpoint.clear()
    return outcome


def _tell(study, trial, result, config: SearchConfig, cb: Callbacks) -> str:
    arch = result.arch
    if result.status == "complete":
        values = config.protocol.objective_values(result.metrics)
        if not all(math.isfinite(v) for v in values):
            trial.set_user_attr("nas_status", "failed")
            trial.set_user_attr("cause", f"non-finite objective values {values}")
            study.tell(trial, state=TrialState.FAIL)
            return "failed"
        trial.set_user_attr("nas_status", TRAINED)
        study.tell(trial, values)
        cb.log(
            f"trial {trial.number}: complete {dict(zip(config.protocol.objectives, values, strict=True))} "
            f"({arch.summary()}, {result.wall_seconds:.1f}s)"
        )
        return TRAINED
    if result.status == "pruned":
        trial.set_user_attr("nas_status", TRAINED)
        study.tell(trial, state=TrialState.PRUNED)
        cb.log(f"trial {trial.number}: {result.cause} ({arch.summary()})")
        return TRAINED
    trial.set_user_attr("nas_status", "failed")
    study.tell(trial, state=TrialState.FAIL)
    cb.log(f"trial {trial.number}: failed: {result.cause} ({arch.summary()})")
    return "failed"


def _duplicate_of(study: optuna.Study, number: int, arch_hash: str) -> Any:
    """A trained trial of the same architecture, or one running on another worker. Each of two workers
    that claim the same architecture at once writes its claim before reading the other's, so at least
    one of them sees the other and stands down: an architecture never trains twice."""
    running = None
    for other in study.get_trials(deepcopy=False):
        if other.number == number or other.user_attrs.get("arch_hash") != arch_hash:
            continue
        if other.state in (TrialState.COMPLETE, TrialState.PRUNED) and other.user_attrs.get("nas_status") == TRAINED:
            return other
        if other.state == TrialState.RUNNING and other.user_attrs.get("nas_status") == "running":
            running = running or other
    return running


def _record(trial: optuna.Trial, result: Any, artifacts: Any, config: SearchConfig) -> None:
    """User attributes, the dashboard note and the artifacts of a finished trial."""
    metrics = {k: (v if math.isfinite(v) else str(v)) for k, v in result.metrics.items()}
    trial.set_user_attr("metrics", metrics)
    for name in ("val_loss", "tokens_per_second", "peak_memory_mb", "latency_ms_per_token"):
        if name in result.metrics:
            trial.set_user_attr(name, metrics[name])
    trial.set_user_attr("curve", [[p.step, p.tokens, p.val_loss] for p in result.curve])
    trial.set_user_attr("wall_seconds", result.wall_seconds)
    trial.set_user_attr("cause", result.cause)  # None when it completed: replaces the "killed" placeholder
    if result.notes:
        trial.set_user_attr("notes", result.notes)
    try:
        from optuna_dashboard import save_note

        save_note(trial, _note(result))
    except Exception:  # the note is a nicety; never fail a trial for it
        pass
    with tempfile.TemporaryDirectory() as tmp:
        curve_file = Path(tmp) / f"curve-{trial.number}.json"
        curve_file.write_text(json.dumps([p.to_dict() for p in result.curve], indent=1))
        trial.set_user_attr(
            "artifact_curve",
            optuna.artifacts.upload_artifact(
                artifact_store=artifacts, file_path=str(curve_file), study_or_trial=trial, mimetype="application/json"
            ),
        )
        if config.keep_weights and result.model is not None:
            result.model.save_pretrained(tmp)
            weights = Path(tmp) / "model.safetensors"
            trial.set_user_attr(
                "artifact_weights",
                optuna.artifacts.upload_artifact(
                    artifact_store=artifacts, file_path=str(weights), study_or_trial=trial
                ),
            )


def _note(result: Any) -> str:
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
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.5g} |" for k, v in result.metrics.items()]
    return "\n".join(lines)


# ---- reading results ------------------------------------------------------------------------
@dataclass
class Row:
    rank: int | None
    number: int
    state: str
    status: str
    summary: str
    params: int | None
    values: list[float] | None
    metrics: dict[str, Any] = field(default_factory=dict)
    cause: str | None = None
    pareto: bool = False


def leaderboard(study: optuna.Study) -> list[Row]:
    """Trained trials ranked (single objective by value; multi-objective Pareto set first), then the rest."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("nas_status") == TRAINED]
    pareto = {t.number for t in study.best_trials} if complete else set()
    if len(study.directions) == 1:
        sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
        ranked = sorted(complete, key=lambda t: sign * t.values[0])
    else:
        first = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
        ranked = sorted(complete, key=lambda t: (t.number not in pareto, first * t.values[0]))
    rows = [_row(t, i + 1, t.number in pareto) for i, t in enumerate(ranked)]
    rest = [t for t in trials if t not in ranked]
    rows += [_row(t, None, False) for t in rest]
    retried_as = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    for row in rows:
        if row.number in retried_as:
            row.cause = f"{row.cause or 'failed'}; retried as trial {retried_as[row.number]}"
        if row.state == "running":
            row.cause = None  # a running trial's cause is only what it would be if its worker died
    return rows


def _row(trial: optuna.trial.FrozenTrial, rank: int | None, pareto: bool) -> Row:
    attrs = trial.user_attrs
    return Row(
        rank=rank,
        number=trial.number,
        state=trial.state.name.lower(),
        status=attrs.get("nas_status", "running" if trial.state == TrialState.RUNNING else "?"),
        summary=attrs.get("summary", ""),
        params=attrs.get("params"),
        values=list(trial.values) if trial.values else None,
        metrics=attrs.get("metrics", {}),
        cause=attrs.get("cause") or _resumed(attrs),
        pareto=pareto,
    )


def export_from_study(study: optuna.Study, number: int, out_dir: Path, runs_dir: Path = Path("runs")) -> Path:
    """The foundation's export folder for one trial, plus the trained tokenizer, metrics, the protocol
    as recipe.yaml, a README recipe for full training, and the weights when they were kept."""
    from nas.arch import ArchConfig
    from nas.data.tokens import prepare_tokens
    from nas.export import export_architecture

    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise NasInputError("--trial", f"study '{study.study_name}' has no trial {number} (0..{len(trials) - 1})")
    trial = trials[number]
    if "arch" not in trial.user_attrs:
        raise NasInputError(
            "--trial", f"trial {number} has no architecture ({trial.user_attrs.get('cause', 'not sampled')})"
        )
    _, protocol = study_context(study)
    arch = ArchConfig(**trial.user_attrs["arch"])
    tokens = prepare_tokens(protocol)
    metrics = {
        **trial.user_attrs.get("metrics", {}),
        "trial": number,
        "study": study.study_name,
        "state": trial.state.name.lower(),
        "arch_hash": arch.arch_hash(),
    }
    out = export_architecture(
        arch,
        out_dir,
        metrics=metrics,
        pad_token_id=tokens.pad_id,
        eos_token_id=tokens.eos_id,
        bos_token_id=tokens.eos_id,
    )
    tokens.tokenizer.save_pretrained(out)
    (out / "recipe.yaml").write_text(study.user_attrs["nas.protocol_text"])
    weights = trial.user_attrs.get("artifact_weights")
    if weights:
        from optuna.artifacts import download_artifact

        store = optuna.artifacts.FileSystemArtifactStore(str(runs_dir / study.study_name / "artifacts"))
        download_artifact(artifact_store=store, artifact_id=weights, file_path=str(out / "model.safetensors"))
    (out / "README.md").write_text(_recipe(study, trial, arch, bool(weights)))
    return out


def _recipe(study: optuna.Study, trial: Any, arch: Any, has_weights: bool) -> str:
    metrics = trial.user_attrs.get("metrics", {})
    shown = "\n".join(f"| {k} | {v:.5g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    weights_line = "\n- `model.safetensors`: the weights after the short trial." if has_weights else ""
    load = (
        "AutoModelForCausalLM.from_pretrained(folder)"
        if has_weights
        else "AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))"
    )
    return f"""# {arch.summary()}

Trial {trial.number} of study `{study.study_name}` (space `{study.user_attrs.get("nas.space_name")}`, protocol
`{study.user_attrs.get("nas.protocol_name")}`), architecture hash `{arch.arch_hash()}`:
{arch.param_count():,} parameters ({arch.non_embedding_params():,} non-embedding),
{arch.flops_per_token():,.0f} training FLOPs per token, {arch.kv_cache_bytes_per_token():,.0f} KV-cache bytes per token.

| metric | value |
|---|---|
{shown}

## Files

- `config.json`: the Hugging Face config ({arch.spec.config_class});
  `architecture.yaml`: the nas ArchConfig it came from.
- `tokenizer.json` and friends: the tokenizer the trial trained with.
- `recipe.yaml`: the trial protocol (data, tokenizer, budget, optimizer, schedule, tasks).
- `metrics.json`: the trial's metrics.{weights_line}

## Full training

Train it at the full budget with the same data pipeline and tokenizer (`recipe.yaml`):

```bash
nas train <this folder> --tokens 20000000 -o trained/{arch.arch_hash()}   # --resume, --nproc N, --flops F
```

The architecture also loads in plain `transformers`:

```python
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

folder = "{"<this folder>"}"
model = {load}
tokenizer = AutoTokenizer.from_pretrained(folder)
```
"""


def _resumed(attrs: dict[str, Any]) -> str | None:
    step = attrs.get("resumed_from_step")
    retry_of = attrs.get("retry_of")
    if step is None:
        return None
    return f"resumed from step {step}" + (f" (re-run of trial {retry_of})" if retry_of is not None else "")
