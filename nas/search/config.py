"""What a search is asked to do: :class:`SearchConfig`, and ONE validation of a request.

:func:`validate_search` checks every flag, the space, the protocol and the storage of a
:class:`SearchRequest`, collects every problem, and raises one NasInputError listing them all, so
`nas search` fails once with the whole list before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasInputError, did_you_mean
from nas.protocol import TrialProtocol, load_protocol
from nas.search.samplers import PRUNERS, SAMPLERS, PrunerName, SamplerName, grid_space, make_pruner
from nas.search.storage import open_storage
from nas.search.workers import Heartbeats
from nas.space import SearchSpace, load_space

__all__ = ["SearchConfig", "SearchRequest", "SearchPlan", "validate_search"]


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

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.study_name

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
    n_trials: int = 10
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    seed: int = 0
    keep_weights: bool = False
    warm_start: str | None = None
    workers: int | None = None
    devices: str | None = None
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

    space = check(lambda: load_space(request.space))
    protocol = check(lambda: load_protocol(request.trial, request.overrides))
    problems += _name_problems(request)
    if protocol is not None and request.pruner in PRUNERS:
        check(lambda: make_pruner(request.pruner, protocol, len(protocol.objectives) > 1))
    if protocol is not None and request.sampler == "cmaes" and len(protocol.objectives) > 1:
        problems.append(("", "--sampler: cmaes handles single-objective studies only; use tpe or nsga2"))
    if space is not None and request.sampler == "grid":
        check(lambda: grid_space(space))
    storage = request.storage
    if storage is not None and not dry_run:
        check(lambda: open_storage(storage))  # unreachable or unknown: exit 2 before anything is written
    devices = check(lambda: _device_list(request.devices)) or []
    heartbeats = check(lambda: _heartbeats(request.heartbeat, request.grace))
    if problems or space is None or protocol is None or heartbeats is None:
        raise NasInputError(None, problems)
    config = SearchConfig(
        space=space,
        protocol=protocol,
        study_name=request.study or f"{space.name}-{protocol.name}",
        storage=request.storage,
        runs_dir=request.runs_dir,
        n_trials=request.n_trials,
        timeout=request.timeout,
        sampler=request.sampler,  # type: ignore[arg-type]  # checked against SAMPLERS above
        pruner=request.pruner,  # type: ignore[arg-type]  # checked against PRUNERS above
        seed=request.seed,
        keep_weights=request.keep_weights,
        warm_start=request.warm_start,
        heartbeats=heartbeats,
        checkpoint_every=request.checkpoint_every,
    )
    return SearchPlan(config, request.workers or max(1, len(devices)), devices)


def _name_problems(request: SearchRequest) -> list[tuple[str, str]]:
    return [
        (name, f"unknown '{value}'{did_you_mean(value, allowed)}; one of {', '.join(allowed)}")
        for name, value, allowed in (("--sampler", request.sampler, SAMPLERS), ("--pruner", request.pruner, PRUNERS))
        if value not in allowed
    ]


def _device_list(devices: str | None) -> list[str]:
    if not devices:
        return []
    items = [d.strip() for d in devices.split(",") if d.strip()]
    if not items or not all(d.isdigit() for d in items):
        raise NasInputError("--devices", f"'{devices}': give GPU indices separated by commas, e.g. 0,1,2,3")
    return items


def _heartbeats(heartbeat: int, grace: int) -> Heartbeats:
    if grace <= heartbeat:
        raise NasInputError("--grace", f"{grace}s must exceed --heartbeat {heartbeat}s (a few beats, e.g. 6x)")
    return Heartbeats(heartbeat, grace)
