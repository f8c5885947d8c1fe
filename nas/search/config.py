"""What a search is asked to do: :class:`SearchConfig`, and ONE validation of a request.

:func:`validate_search` checks every flag, the space, the protocol and the storage of a
:class:`SearchRequest`, collects every problem, and raises one NasInputError listing them all, so
`nas search` fails once with the whole list before anything is written (and before any training).

Without ``--n-trials`` and ``--timeout`` a search trains 10 trials and starts none after 9 minutes;
an explicit ``--n-trials N`` alone runs to N trained trials, however long that takes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasInputError, did_you_mean
from nas.protocol import TrialProtocol, load_protocol, under_runs_dir
from nas.resources import is_shipped
from nas.search.samplers import PRUNERS, SAMPLERS, PrunerName, SamplerName, grid_space, make_pruner
from nas.search.storage import check_study_name, open_storage, study_dir
from nas.search.workers import Heartbeats
from nas.space import SearchSpace, load_space

__all__ = [
    "Placement",
    "SearchConfig",
    "SearchRequest",
    "SearchPlan",
    "validate_search",
    "range_problems",
    "device_list",
    "LIMITS",
]

DEFAULT_N_TRIALS = 10
DEFAULT_TIMEOUT = 540.0  # seconds: the no-argument search's cap only
# flag: (lowest, highest) allowed
LIMITS: dict[str, tuple[float, float]] = {
    "--seed": (0, 2**32 - 1),  # what numpy's and Optuna's samplers accept
    "--n-trials": (1, 1_000_000),
    "--workers": (1, 128),
    "--workers-per-device": (1, 64),
    "--sharing": (1, 128),
    "--timeout": (1, 10 * 365 * 86400),
    "--heartbeat": (1, 3600),
    "--grace": (2, 7 * 86400),
    "--checkpoint-every": (0, 10**9),
    "--wait": (0, 86400),
}


@dataclass(frozen=True)
class Placement:
    """Where a worker that `nas search` started runs: its ``device`` (a GPU index, or "cpu") and how many
    of the search's workers share that device (``sharing``), recorded with each trial it runs."""

    device: str
    sharing: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "sharing": self.sharing}


@dataclass
class SearchConfig:
    space: SearchSpace
    protocol: TrialProtocol
    study_name: str
    storage: str | None = None  # None: sqlite in runs/<study>/study.db
    runs_dir: Path = Path("runs")
    n_trials: int = 10
    timeout: float | None = None
    sampler: SamplerName = "tpe"
    pruner: PrunerName = "hyperband"
    seed: int | None = 0
    keep_weights: bool = False
    warm_start: str | None = None
    heartbeats: Heartbeats = field(default_factory=Heartbeats)
    checkpoint_every: int | None = None  # steps between trial checkpoints; None: eval_every; 0: none
    placement: Placement | None = None  # where this worker runs, when nas search started it (recorded per trial)
    # the protocol is a shipped one, named with no --set: a study resumed under it keeps the protocol it was
    # created with when the shipped file has changed since (nas.search.study.create_or_resume)
    protocol_as_shipped: bool = False

    @property
    def run_dir(self) -> Path:
        return study_dir(self.runs_dir, self.study_name)

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
class SearchRequest:
    """A search as the command line states it (names and flags, nothing loaded yet)."""

    space: str = "tiny"
    trial: str = "cpu-tiny"
    overrides: list[str] | None = None
    study: str | None = None
    storage: str | None = None
    runs_dir: Path = Path("runs")
    n_trials: int | None = None  # None: 10, and with no timeout either, the 9-minute default cap
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    seed: int = 0
    keep_weights: bool = False
    warm_start: str | None = None
    workers: int | None = None
    devices: str | None = None
    workers_per_device: int | None = None
    heartbeat: int = 10
    grace: int = 60
    checkpoint_every: int | None = None


@dataclass
class SearchPlan:
    """A validated request: the config, and how many local workers on which devices."""

    config: SearchConfig
    n_workers: int = 1
    devices: list[str] = field(default_factory=list)

    @property
    def spawns_workers(self) -> bool:
        return self.n_workers > 1 or bool(self.devices)


def _flag_problems(request: SearchRequest) -> list[tuple[str, str]]:
    """The numeric flags outside their ranges (:func:`range_problems`)."""
    return range_problems(
        {
            "--seed": request.seed,
            "--n-trials": request.n_trials,
            "--workers": request.workers,
            "--workers-per-device": request.workers_per_device,
            "--timeout": request.timeout,
            "--heartbeat": request.heartbeat,
            "--grace": request.grace,
            "--checkpoint-every": request.checkpoint_every,
        }
    )


def validate_search(request: SearchRequest, dry_run: bool = False) -> SearchPlan:
    """Load and check everything a search needs; raise one NasInputError with every problem found.

    With ``dry_run`` the storage is not opened (a dry run writes nothing).
    """
    problems: list[tuple[str, str]] = []

    def check(action: Callable[[], Any]) -> Any:
        try:
            return action()
        except NasInputError as exc:
            problems.append(("", str(exc)))
            return None

    problems += _flag_problems(request)
    problems += _name_problems(request)
    for flag, name in (("--study", request.study), ("--warm-start", request.warm_start)):
        if name is not None:
            check(functools.partial(check_study_name, name, flag))
    space = check(lambda: load_space(request.space))
    protocol = check(lambda: load_protocol(request.trial, request.overrides))
    if protocol is not None and request.pruner in PRUNERS:
        check(lambda: make_pruner(request.pruner, protocol, len(protocol.objectives) > 1))
    if protocol is not None and request.sampler == "cmaes" and len(protocol.objectives) > 1:
        problems.append(("", "--sampler: cmaes handles single-objective studies only; use tpe or nsga2"))
    if space is not None and request.sampler == "grid":
        check(lambda: grid_space(space))
    storage = request.storage
    if storage is not None and not dry_run:
        check(lambda: open_storage(storage))  # unreachable or unknown: exit 2 before anything is written
    devices = check(lambda: device_list(request.devices, request.workers_per_device)) or []
    beat_ok = not any(flag in ("--heartbeat", "--grace") for flag, _ in problems)
    heartbeats = check(lambda: _heartbeats(request.heartbeat, request.grace)) if beat_ok else None
    study_name = request.study
    if study_name is None and space is not None and protocol is not None:
        default = f"{space.name}-{protocol.name}"
        study_name = check(lambda: check_study_name(default, "--study (default: SPACE-PROTOCOL)"))
    if problems or space is None or protocol is None or heartbeats is None or study_name is None:
        raise NasInputError(None, problems)
    n_trials, timeout = request.n_trials, request.timeout
    if n_trials is None and timeout is None:  # the no-argument default: 10 trials or 9 minutes
        n_trials, timeout = DEFAULT_N_TRIALS, DEFAULT_TIMEOUT
    config = SearchConfig(
        space=space,
        protocol=under_runs_dir(protocol, request.runs_dir),
        study_name=study_name,
        storage=request.storage,
        runs_dir=request.runs_dir,
        n_trials=DEFAULT_N_TRIALS if n_trials is None else n_trials,
        timeout=timeout,
        sampler=request.sampler,  # type: ignore[arg-type]  # checked against SAMPLERS above
        pruner=request.pruner,  # type: ignore[arg-type]  # checked against PRUNERS above
        seed=request.seed,
        keep_weights=request.keep_weights,
        warm_start=request.warm_start,
        heartbeats=heartbeats,
        checkpoint_every=request.checkpoint_every,
        protocol_as_shipped=not request.overrides and is_shipped("trials", protocol.source),
    )
    return SearchPlan(config, request.workers or max(1, len(devices)), devices)


def range_problems(values: dict[str, Any]) -> list[tuple[str, str]]:
    """(flag, problem) for each value of ``values`` (flag: value; None: not given) outside :data:`LIMITS`,
    not a number, or not whole where a count is meant."""
    problems = []
    for flag, value in values.items():
        if value is None:
            continue
        low, high = LIMITS[flag]
        whole = flag not in ("--timeout", "--wait")
        if isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int)):
            problems.append((flag, f"{value!r} is not {'a whole number' if whole else 'a number'}"))
        elif not math.isfinite(value) or not low <= value <= high:
            shown = (
                f"{value:g}" if isinstance(value, float) else (str(value) if abs(value) < 10**30 else "a huge number")
            )
            problems.append((flag, f"{shown} is out of range; use {low:,.0f} .. {high:,.0f}"))
    return problems


def _name_problems(request: SearchRequest) -> list[tuple[str, str]]:
    return [
        (name, f"unknown '{value}'{did_you_mean(value, allowed)}; one of {', '.join(allowed)}")
        for name, value, allowed in (("--sampler", request.sampler, SAMPLERS), ("--pruner", request.pruner, PRUNERS))
        if value not in allowed
    ]


def device_list(devices: str | None, per_device: int | None = None, flag: str = "--devices") -> list[str]:
    """The devices of ``--devices`` (GPU indices or ``cpu``; an entry given twice runs two workers there),
    each taken ``per_device`` times (``--workers-per-device``), interleaved: one entry per worker, so the
    first workers spread over the devices (``--workers N`` takes the first N)."""
    if not devices:
        if per_device is not None:
            raise NasInputError("--workers-per-device", "needs --devices: the devices to share, e.g. 0 or cpu")
        return []
    items = [d.strip().lower() for d in devices.split(",") if d.strip()]
    if not items or not all(d == "cpu" or (d.isascii() and d.isdigit() and len(d) <= 4) for d in items):
        raise NasInputError(
            flag, f"'{devices}': give GPU indices or cpu separated by commas, e.g. 0,1,2,3 or 0,0 or cpu"
        )
    items = [d if d == "cpu" else str(int(d)) for d in items]  # 00 is GPU 0
    k = per_device if isinstance(per_device, int) and per_device >= 1 else 1
    most = int(LIMITS["--workers"][1])
    if len(items) * k > most:  # checked before the list is built: a huge count must not take an hour
        raise NasInputError(flag, f"{len(items) * k} workers ({len(items)} devices x {k}): at most {most}")
    return [d for _ in range(k) for d in items]


def _heartbeats(heartbeat: int, grace: int) -> Heartbeats:
    if grace <= heartbeat:
        raise NasInputError("--grace", f"{grace}s must exceed --heartbeat {heartbeat}s (a few beats, e.g. 6x)")
    return Heartbeats(heartbeat, grace)
