"""The Optuna side of nas: a study whose trials sample a space and run a trial protocol.

One concern per module (as Optuna lays out ``study/``, ``samplers/``, ``pruners/``, ``storages/``):

- ``config``: :class:`SearchConfig` and :func:`validate_search`, the one check of a search request;
- ``storage``: storage URLs, opening a storage, study names, finding a study, a study's metadata, a trial's
  artifacts and dashboard note;
- ``samplers``: samplers and Optuna pruners by name, the grid, and the :class:`CurvePruner`;
- ``study``: creating, resuming, warm-starting and joining a study;
- ``loop``: the worker loop, ask → claim → dedupe → train → tell (→ requeue);
- ``summary``: what a search reports (summary, last line, callbacks);
- ``attrs``: the user-attribute keys of a trial and what each must hold;
- ``records``: one typed :class:`TrialRecord` per trial and the leaderboard;
- ``export``: which trials to export, and the export folder with its README and recipe;
- ``workers``: heartbeats, journal leases, and local worker processes;
- ``estimate``: the ``--dry-run`` estimate.
"""

from nas.search.config import SearchConfig, SearchPlan, SearchRequest, validate_search
from nas.search.estimate import Estimate, estimate_search
from nas.search.export import check_export_choice, export_from_study, export_targets
from nas.search.loop import run_search, work
from nas.search.ranking import leaderboard
from nas.search.records import Status, TrialRecord, study_records, trained_count
from nas.search.samplers import (
    PRUNERS,
    SAMPLERS,
    CurvePruner,
    PrunerName,
    SamplerName,
    grid_space,
    make_pruner,
    make_sampler,
)
from nas.search.storage import StudyInfo, default_storage, find_study, open_storage, study_context, study_info
from nas.search.study import create_or_resume, join_study, prepare_study, warm_start
from nas.search.summary import Callbacks, SearchInterrupted, SearchSummary, stopped_line
from nas.search.workers import Heartbeats, LocalWorkers

__all__ = [
    "SearchConfig",
    "SearchPlan",
    "SearchRequest",
    "validate_search",
    "Estimate",
    "estimate_search",
    "check_export_choice",
    "export_from_study",
    "export_targets",
    "Callbacks",
    "SearchInterrupted",
    "SearchSummary",
    "stopped_line",
    "run_search",
    "work",
    "Status",
    "TrialRecord",
    "leaderboard",
    "study_records",
    "trained_count",
    "PRUNERS",
    "SAMPLERS",
    "CurvePruner",
    "PrunerName",
    "SamplerName",
    "grid_space",
    "make_pruner",
    "make_sampler",
    "StudyInfo",
    "default_storage",
    "find_study",
    "open_storage",
    "study_context",
    "study_info",
    "create_or_resume",
    "join_study",
    "prepare_study",
    "warm_start",
    "Heartbeats",
    "LocalWorkers",
]
