"""`nas search` and `nas worker`: run a study here, with local worker processes, or join one.

Every flag is checked (nas.search.validate_search) before anything is written or trained; a search
ends with one line saying what it did, or why it stopped short and that the same command continues it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from nas.cli.common import (
    LogFile,
    RunsOption,
    SetOption,
    StorageOption,
    choice,
    command_line,
    console,
    err_console,
    progress_bars,
)
from nas.cli.results import best_text, print_next
from nas.errors import NasInputError
from nas.search.samplers import PRUNERS, SAMPLERS, PrunerName, SamplerName

if TYPE_CHECKING:
    from nas.search import Callbacks, SearchConfig
    from nas.search.config import Placement

# Ranges are checked by nas.search.validate_search (every problem at once), not by the parser.
HeartbeatOption = Annotated[
    int, typer.Option(help="Seconds between a running trial's heartbeats (dead workers are detected), 1-3600.")
]
GraceOption = Annotated[int, typer.Option(help="Seconds without a heartbeat before a trial is failed and run again.")]
CheckpointOption = Annotated[
    int | None,
    typer.Option(help="Save a trial's state every K steps (default: the protocol's eval_every; 0: never)."),
]


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("worker")(worker)


class SearchView:
    """Two rich progress bars (the study; the running trial) and a log file in the run folder."""

    def __init__(self, n_trials: int, quiet: bool, run_dir: Path, prefix: str = "") -> None:
        self.n_trials = n_trials
        self.quiet = quiet
        self.prefix = prefix
        self.progress = progress_bars(quiet)
        self.log_file = LogFile(run_dir / "search.log", quiet, self.progress.console)
        self.study_bar = self.progress.add_task("study", total=n_trials, info="")
        self.trial_bar = self.progress.add_task("trial", total=None, info="", visible=False)
        self.started = time.monotonic()
        self.counts = {"complete": 0, "pruned": 0, "failed": 0, "infeasible": 0, "duplicate": 0}
        self.log_file(f"--- nas {command_line()}")

    def log(self, line: str) -> None:
        self.log_file(self.prefix + line)

    def trial_started(self, number: int, summary: str) -> None:
        self.progress.update(
            self.trial_bar, description=f"trial {number}", completed=0, total=None, info=summary, visible=True
        )

    def stage(self, name: str) -> None:
        self.progress.update(self.trial_bar, info=name)

    def step(self, step: int, loss: float, tps: float) -> None:
        self.progress.update(self.trial_bar, completed=step, info=f"step {step} loss {loss:.3f} {tps:,.0f} tok/s")

    def trial_finished(self, trial: Any, study: Any) -> None:
        from nas.search import TrialRecord, trained_count

        record = TrialRecord.from_trial(trial)
        key = record.status if record.status in ("duplicate", "infeasible") else record.state
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.quiet:  # no bar to update: the study's count and best are not read (a worker's load, per trial)
            return
        done = trained_count(study)
        elapsed = time.monotonic() - self.started
        trained = self.counts["complete"] + self.counts["pruned"]
        eta = f" ETA {elapsed / trained * max(0, self.n_trials - done):.0f}s" if trained else ""
        info = " ".join(f"{k} {v}" for k, v in self.counts.items() if v) + f" | best {best_text(study)}{eta}"
        self.progress.update(self.study_bar, completed=done, info=info)
        self.progress.update(self.trial_bar, visible=False)

    def callbacks(self) -> Callbacks:
        from nas.search import Callbacks

        return Callbacks(
            trial_started=self.trial_started,
            stage=self.stage,
            step=self.step,
            trial_finished=self.trial_finished,
            log=self.log,
        )


def search(
    space: Annotated[str, typer.Option(help="Search space: a shipped name or a YAML file.")] = "tiny",
    trial: Annotated[
        str, typer.Option("--protocol", help="Trial protocol: a shipped name or a YAML file.")
    ] = "cpu-tiny",
    study: Annotated[str | None, typer.Option(help="Study name (default: SPACE-PROTOCOL).")] = None,
    storage: StorageOption = None,
    n_trials: Annotated[
        int | None,
        typer.Option(help="Trials that train (completed or pruned), in total, 1-1000000 (default 10)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Start no new trial after this many seconds (default: none with --n-trials; else 540, "
            "a first look in 9 minutes)."
        ),
    ] = None,
    sampler: Annotated[SamplerName, choice("--sampler", SAMPLERS, "The sampler.")] = "tpe",
    pruner: Annotated[PrunerName, choice("--pruner", PRUNERS, "The pruner (held-out loss curve).")] = "hyperband",
    seed: Annotated[int, typer.Option(help="Sampler seed, 0-4294967295.")] = 0,
    overrides: SetOption = None,
    keep_weights: Annotated[bool, typer.Option(help="Store each trial's weights (safetensors artifact).")] = False,
    warm_start: Annotated[str | None, typer.Option(help="Seed a new study with an old study's architectures.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Estimate the study's compute; train nothing.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars (the log file still grows).")] = False,
    runs_dir: RunsOption = Path("runs"),
    workers: Annotated[
        int | None, typer.Option(help="Local worker processes, 1-128 (default 1, or one per --devices entry).")
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            help="Devices to use, one worker each: --devices 0,1,2,3 (sets CUDA_VISIBLE_DEVICES); an entry given "
            "twice (0,0) or cpu shares that device."
        ),
    ] = None,
    workers_per_device: Annotated[
        int | None,
        typer.Option(help="Workers on each --devices entry, 1-64 (small trials: several fill one GPU)."),
    ] = None,
    heartbeat: HeartbeatOption = 10,
    grace: GraceOption = 60,
    checkpoint_every: CheckpointOption = None,
) -> None:
    """Search a space for the best architecture under a trial protocol (an Optuna study).

    Example: nas search --space tiny --protocol cpu-tiny --n-trials 10 --pruner hyperband
    Several workers: nas search --workers 2 --storage journal:runs/journal.log (or postgresql://...).
    With no --n-trials and no --timeout: 10 trials or 9 minutes, whichever comes first. Ctrl-C marks
    the running trial interrupted; the same command continues the study (from its checkpoint).
    """
    flags = dict(locals())  # every option above, by name: a SearchRequest has the same fields
    _search(flags, dry_run, quiet)


def _search(flags: dict[str, Any], dry_run: bool, quiet: bool) -> None:
    """`nas search` once its options are read: validate, then estimate (--dry-run) or search."""
    from nas.search import SearchRequest, validate_search

    request = SearchRequest(**{k: v for k, v in flags.items() if k not in ("dry_run", "quiet")})
    with _interruptible():
        plan = validate_search(request, dry_run=dry_run)
        from nas.preflight import check_inputs, check_space_fits

        if dry_run:  # reads no data, but refuses a protocol the space cannot run (its seq_len)
            check_space_fits(plan.config.protocol, plan.config.space)
            _print_estimate(plan.config)
            return

        # the corpus and task files read, splits and seq_len checked: a bad file costs seconds, not a trial
        check_inputs(plan.config.protocol, plan.config.space)
        if plan.spawns_workers:
            _search_with_workers(plan.config, plan.n_workers, plan.devices, quiet)
        else:
            _search_here(plan.config, quiet)


def _print_estimate(config: SearchConfig) -> None:
    from nas.search import estimate_search

    estimate = estimate_search(config.space, config.protocol, config.n_trials, config.seed or 0)
    console.print(
        f"dry run: {estimate.n_trials:,} trials, estimated from {estimate.n_archs} sampled architectures of "
        f"{estimate.space_name}, median {estimate.median_params:,.0f} params",
        highlight=False,
    )
    if estimate.pretrain_seconds_per_trial:
        seconds = estimate.pretrain_seconds_per_trial
        console.print(
            f"time budget: {seconds:.0f}s pretraining per trial, "
            f"~{seconds * estimate.n_trials / 60:.1f} min for pretraining in all"
        )
    console.print(
        f"estimated compute: {estimate.total_flops:.3g} FLOPs (pretraining + fine-tuning, no pruning); "
        f"at {estimate.flops_per_second:.3g} FLOP/s measured here on {estimate.reference}: "
        f"~{estimate.minutes:.1f} min",
        highlight=False,
    )
    free = f" of the {estimate.available_bytes / 2**30:.1f} GiB free here" if estimate.available_bytes else ""
    console.print(
        f"peak memory per worker: ~{estimate.peak_bytes / 2**30:.2f} GiB{free} (a training step of the "
        f"largest sampled architecture, {estimate.peak_reference})",
        highlight=False,
    )


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ctrl-C is ignored inside (the search has stopped; its last words are being written)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C before the search loop runs (checking flags, loading, joining): one line and exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        with _no_interrupts():
            err_console.print("interrupted (Ctrl-C) before any trial started; re-run the same command", highlight=False)
        raise typer.Exit(130) from None


def _interrupted(exc: KeyboardInterrupt, view: SearchView, n_trials: int, prefix: str = "") -> typer.Exit:
    """Ctrl-C: say where the study stands (the running trial is marked interrupted and queued again)."""
    from nas.search import SearchInterrupted

    with _no_interrupts():
        if isinstance(exc, SearchInterrupted):
            line = exc.summary.final_line
        else:  # before the first trial (creating the study, building the token cache)
            line = (
                f"interrupted (Ctrl-C) before the search started ({n_trials} trials to train); re-run the same command"
            )
        view.log(f"stopped: {line}")
        err_console.print(escape(f"{prefix}{line}"), highlight=False, soft_wrap=True)
    return typer.Exit(130)


def _search_here(config: SearchConfig, quiet: bool) -> None:
    from nas.search import run_search

    view = SearchView(config.n_trials, quiet, config.run_dir)
    try:
        with view.progress:
            summary = run_search(config, view.callbacks())
    except KeyboardInterrupt as exc:
        raise _interrupted(exc, view, config.n_trials) from None
    view.log(f"stopped: {summary.final_line}")
    print_next(summary.study, config.storage)
    console.print(
        f"\n({summary.new_trained} new trials trained in {summary.elapsed:.0f}s; run folder {summary.run_dir})",
        highlight=False,
    )
    console.print(f"[bold]{escape(summary.final_line)}[/bold]", highlight=False, soft_wrap=True)


def worker_placement(device: str | None, sharing: int | None) -> Placement | None:
    """The placement `nas search` gave a worker it started (--device, --sharing); None when not given."""
    from nas.search.config import Placement, device_list, range_problems

    problems = range_problems({"--sharing": sharing})
    if problems:
        raise NasInputError(None, problems)
    if device is None:
        if sharing is not None:
            raise NasInputError("--sharing", "needs --device: the device that is shared")
        return None
    found = device_list(device, flag="--device")
    if len(found) != 1:
        raise NasInputError("--device", f"'{device}': one device, a GPU index or cpu")
    return Placement(found[0], sharing or 1)


def _search_with_workers(config: SearchConfig, n_workers: int, devices: list[str], quiet: bool) -> None:
    """Create the study here, then run ``n_workers`` `nas worker` processes on it and follow them."""
    from nas.search import LocalWorkers, confirm, default_storage, prepare_study, records, stopped_line, trained_count
    from nas.search.storage import last_stop

    view = SearchView(config.n_trials, quiet, config.run_dir)
    url = config.storage or default_storage(config.runs_dir, config.study_name)
    if url.startswith("sqlite"):
        message = (
            f"SQLite storage with {n_workers} workers: writes queue on one file lock; for several processes "
            f"use --storage journal:{config.run_dir / 'journal.log'}, across machines "
            "postgresql://... (see docs/scaling-out.md)"
        )
        err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
        view.log(f"warning: {message}")
    try:
        study = prepare_study(config, view.log)
    except KeyboardInterrupt as exc:
        raise _interrupted(exc, view, config.n_trials) from None
    local = LocalWorkers(config.study_name, url, config.runs_dir, n_workers, config.n_trials, config.timeout, devices)
    started, since, before = time.monotonic(), time.time(), trained_count(study)
    try:
        local.start()
        view.log(local.describe())
        with view.progress:
            while local.running():
                time.sleep(1.0)
                view.progress.update(view.study_bar, completed=trained_count(study), info=f"{n_workers} workers")
    except KeyboardInterrupt:
        with _no_interrupts():  # each worker marks its running trial interrupted and queues it again
            local.interrupt()
            line = stopped_line(trained_count(study), config.n_trials, "interrupted (Ctrl-C)")
            view.log(f"stopped: {line}")
            err_console.print(escape(line), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    done = trained_count(study)
    print_next(study, config.storage)
    failures = local.failures()
    if failures:
        err_console.print(f"{', '.join(failures)} (see {config.run_dir}/worker-*.log)", highlight=False)
    if done >= config.n_trials:
        line = f"{done} trials trained by {n_workers} workers{confirm.trained_line(records.read_trials(study)[0])}"
    else:
        reason = last_stop(study, since) if not failures else f"{len(failures)} workers failed"
        line = stopped_line(done, config.n_trials, reason or "the workers stopped")
    view.log(f"stopped: {line}")
    console.print(
        f"\n({done - before} new trials trained in {time.monotonic() - started:.0f}s; run folder {config.run_dir})",
        highlight=False,
    )
    console.print(f"[bold]{escape(line)}[/bold]", highlight=False, soft_wrap=True)
    if failures and done < config.n_trials:
        raise typer.Exit(1)


def worker(
    study: Annotated[str, typer.Option(help="The study to join (created by nas search).")],
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
    n_trials: Annotated[int | None, typer.Option(help="Override the study's target trial count (1-1000000).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Start no new trial after this many seconds.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads for this worker.")] = None,
    index: Annotated[int | None, typer.Option(help="This worker's index (seeds its sampler).")] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="The device nas search gave this worker (a GPU index or cpu), recorded per trial; it does not "
            "pin the device (CUDA_VISIBLE_DEVICES does)."
        ),
    ] = None,
    sharing: Annotated[
        int | None, typer.Option(help="How many workers share this worker's device (1-128), recorded per trial.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    wait: Annotated[
        float,
        typer.Option(
            help="Seconds to keep trying a database that refuses the connection at start (a worker requeued "
            "while it restarts); 0: exit 2 at once."
        ),
    ] = 0.0,
) -> None:
    """Join an existing study and run its trials until it has enough (run one per GPU or machine).

    The space, the protocol and the search settings come from the study itself, so a worker needs
    no files: nas worker --study tiny-cpu-tiny --storage postgresql://user@db-host/nas
    """

    from nas.search import join_study, work

    if threads:
        from nas.cpu import configure

        configure(threads)  # a fixed count: the load check steps aside
    with _interruptible():
        placement = worker_placement(device, sharing)
        said = lambda line: err_console.print(escape(line), highlight=False, soft_wrap=True)  # noqa: E731
        found, config = join_study(study, storage, runs_dir, n_trials, timeout, index, wait, said)
        config.placement = placement
    prefix = f"[worker {index if index is not None else os.getpid()}] "
    view = SearchView(config.n_trials, quiet, config.run_dir, prefix)
    try:
        with view.progress:
            summary = work(found, config, view.callbacks())
    except KeyboardInterrupt as exc:
        raise _interrupted(exc, view, config.n_trials, prefix) from None
    view.log(f"stopped: {summary.final_line}")
    console.print(f"{prefix}({summary.new_trained} new trials trained)", highlight=False)
    console.print(escape(f"{prefix}{summary.final_line}"), highlight=False, soft_wrap=True)
