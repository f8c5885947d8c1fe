"""The `nas` command line: parse → call the library → render with rich. Exit 0 ok, 1 failure, 2 bad input."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nas.errors import NasInputError

app = typer.Typer(
    help="nas: find the best Transformer LM architecture for a compute budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
spaces_app = typer.Typer(help="Search spaces: list, show, validate and sample them.", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")
trials_app = typer.Typer(help="Trial protocols: list, show, validate, and run one trial.", no_args_is_help=True)
app.add_typer(trials_app, name="trials")

console = Console()
err_console = Console(stderr=True)

ProtocolArg = Annotated[str, typer.Argument(help="A shipped protocol name (see `nas trials list`) or a YAML file.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a protocol key: --set pretrain.budget.tokens=50000")
]
SpaceArg = Annotated[str, typer.Argument(help="A shipped space name (see `nas spaces list`) or a YAML file.")]


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


@spaces_app.command("list")
def spaces_list() -> None:
    """List the shipped search spaces.

    Example: nas spaces list
    """
    from nas.space import load_space

    _list_shipped("search_spaces", "Shipped search spaces", lambda name: load_space(name, feasibility_probe=0))


def _list_shipped(kind: str, title: str, load: Any) -> None:
    """A table of the shipped files of ``kind`` with their descriptions."""
    from nas.resources import shipped_dir, shipped_names

    table = Table(title=f"{title} ({shipped_dir(kind)})")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name in shipped_names(kind):
        table.add_row(name, " ".join(load(name).description.split()))
    console.print(table)


@spaces_app.command("show")
def spaces_show(space: SpaceArg) -> None:
    """Show a space: its parameters, derived values, constraints and the range of its counts.

    Example: nas spaces show tiny
    """
    from nas.space import load_space, random_samples

    loaded = load_space(space)
    console.print(f"[bold]{loaded.name}[/bold]  ({loaded.source}, hash {loaded.content_hash})")
    if loaded.description:
        console.print(" ".join(loaded.description.split()))
    table = Table(title="parameters (sampled in this order)")
    table.add_column("name", style="bold")
    table.add_column("values")
    for param in loaded.params:
        table.add_row(param.name, param.describe())
    for name, expr in loaded.derived:
        table.add_row(name, f"derived: {expr}")
    console.print(table)
    for expr in loaded.constraints:
        console.print(f"constraint: {expr}")
    samples = [s for s in random_samples(loaded, 256, seed=0) if s.arch is not None]
    feasible = len(samples)
    if samples:
        counts = [s.arch.counts() for s in samples if s.arch is not None]
        summary = Table(title=f"counts over {feasible}/256 feasible random samples")
        for column in ("count", "min", "max"):
            summary.add_column(column)
        for key in counts[0]:
            values = [c[key] for c in counts]
            summary.add_row(key, _si(min(values)), _si(max(values)))
        console.print(summary)


@spaces_app.command("validate")
def spaces_validate(
    files: Annotated[list[str], typer.Argument(help="Space files or shipped names.")],
) -> None:
    """Validate search spaces; every problem is reported with its file and key path (exit 2).

    Example: nas spaces validate search_spaces/*.yaml
    """
    from nas.space import load_space

    _validate_each(files, load_space, lambda s: f"{s.source} ({s.name}, {len(s.params)} parameters)")


def _validate_each(files: list[str], load: Any, describe: Any) -> None:
    """Load every file, print ok lines, then raise one error listing every file's problems."""
    problems: list[NasInputError] = []
    for file in files:
        try:
            loaded = load(file)
        except NasInputError as exc:
            problems.append(exc)
            continue
        console.print(f"[green]ok[/green] {describe(loaded)}", highlight=False)
    if problems:
        raise NasInputError(None, [("", str(p)) for p in problems])


@spaces_app.command("sample")
def spaces_sample(
    space: SpaceArg,
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="How many samples.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of Optuna's RandomSampler: same seed, same samples.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """Draw random architectures from a space, with their counts; infeasible ones show the reason.

    Example: nas spaces sample tiny -n 8 --seed 0
    """
    from nas.space import load_space, random_samples

    loaded = load_space(space)
    samples = random_samples(loaded, n, seed)
    if as_json:
        for sample in samples:
            record = {"values": sample.values, "feasible": sample.feasible, "reason": sample.reason}
            if sample.arch is not None:
                record |= {"arch": sample.arch.to_dict(), "hash": sample.arch.arch_hash(), **sample.arch.counts()}
            print(json.dumps(record))
        return
    sampled = [p.name for p in loaded.params if p.possible_values() is None or len(p.possible_values() or []) > 1]
    table = Table(title=f"{n} samples from {loaded.name} (seed {seed})")
    table.add_column("#", justify="right")
    table.add_column("sampled knobs", overflow="fold")
    table.add_column("architecture", overflow="fold")
    for column in ("params", "non-emb", "FLOPs/tok", "KV B/tok"):
        table.add_column(column, justify="right", overflow="fold")
    table.add_column("hash", overflow="fold")
    for i, sample in enumerate(samples):
        knobs = "\n".join(f"{k}={sample.values[k]}" for k in sampled if k in sample.values)
        if sample.arch is None:
            table.add_row(str(i), knobs, f"[red]infeasible: {escape(sample.reason or '')}[/red]", "", "", "", "", "")
            continue
        c = sample.arch.counts()
        table.add_row(
            str(i),
            knobs,
            sample.arch.summary(),
            _si(c["params"]),
            _si(c["non_embedding_params"]),
            _si(c["flops_per_token"]),
            f"{c['kv_cache_bytes_per_token']:,.0f}",
            sample.arch.arch_hash()[:8],
        )
    console.print(table)


@trials_app.command("list")
def trials_list() -> None:
    """List the shipped trial protocols.

    Example: nas trials list
    """
    from nas.protocol import load_protocol

    _list_shipped("trials", "Shipped trial protocols", load_protocol)


@trials_app.command("show")
def trials_show(protocol: ProtocolArg, overrides: SetOption = None) -> None:
    """Print a protocol with every default filled in (after --set overrides), and its metrics.

    Example: nas trials show cpu-tiny --set pretrain.budget.tokens=50000
    """
    import yaml

    from nas.protocol import load_protocol

    loaded = load_protocol(protocol, overrides)
    console.print(f"[bold]{loaded.name}[/bold]  ({loaded.source}, hash {loaded.content_hash})")
    console.print(yaml.safe_dump(loaded.model_dump(mode="json"), sort_keys=False), highlight=False, markup=False)
    console.print("metrics: " + ", ".join(loaded.metric_names()))


@trials_app.command("validate")
def trials_validate(files: Annotated[list[str], typer.Argument(help="Protocol files or shipped names.")]) -> None:
    """Validate trial protocols; every problem is reported with its file and key path (exit 2).

    Example: nas trials validate trials/*.yaml
    """
    from nas.protocol import load_protocol

    _validate_each(files, load_protocol, lambda p: f"{p.source} ({p.name}, {len(p.tasks)} tasks)")


@trials_app.command("run")
def trials_run(
    protocol: ProtocolArg = "cpu-tiny",
    space: Annotated[str, typer.Option(help="Space to draw the architecture from.")] = "tiny",
    seed: Annotated[int, typer.Option(help="Seed of the architecture draw (Optuna RandomSampler).")] = 0,
    arch_dir: Annotated[
        Path | None, typer.Option("--arch", help="An exported folder (architecture.yaml) instead of a draw.")
    ] = None,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run one trial outside any study: pretrain, measure, fine-tune, and print every metric.

    Example: nas trials run cpu-tiny --space tiny --seed 3 --set pretrain.budget.tokens=50000
    """
    from nas.export import load_architecture
    from nas.protocol import load_protocol
    from nas.space import load_space, random_samples
    from nas.trial import run_trial

    loaded = load_protocol(protocol, overrides)
    if arch_dir is not None:
        arch = load_architecture(arch_dir)
    else:
        draws = [s for s in random_samples(load_space(space), 64, seed) if s.arch is not None]
        if not draws:
            raise NasInputError(space, "no feasible architecture in 64 draws")
        arch = draws[0].arch
    assert arch is not None
    console.print(f"architecture {arch.arch_hash()}: {arch.summary()}", highlight=False)
    with console.status("starting") as status:

        def on_step(step: int, loss: float, tps: float) -> None:
            status.update(f"pretrain step {step}  loss {loss:.3f}  {tps:,.0f} tokens/s")

        result = run_trial(arch, loaded, on_step=on_step, on_stage=lambda name: status.update(name))
    if as_json:
        print(json.dumps(result.to_dict(), default=float))
        return
    table = Table(title=f"trial: {result.status}" + (f" ({result.cause})" if result.cause else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:,.4g}" if isinstance(value, float) else f"{value:,}")
    console.print(table)
    curve = "  ".join(f"{p.step}:{p.val_loss:.3f}" for p in result.curve)
    console.print(f"held-out loss by step: {curve}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"wall time {result.wall_seconds:.1f}s")
    if result.status == "failed":
        raise typer.Exit(1)


# ---- search, status, dashboard, export ---------------------------------------------------------
HeartbeatOption = Annotated[
    int, typer.Option(min=1, help="Seconds between a running trial's heartbeats (dead workers are detected).")
]
GraceOption = Annotated[
    int, typer.Option(min=2, help="Seconds without a heartbeat before a trial is failed and run again.")
]
CheckpointOption = Annotated[
    int | None,
    typer.Option(min=0, help="Save a trial's state every K steps (default: the protocol's eval_every; 0: never)."),
]
RunsOption = Annotated[Path, typer.Option("--runs-dir", help="Where run folders (runs/<study>/) live.")]
StorageOption = Annotated[
    str | None,
    typer.Option(help="Optuna storage URL: sqlite:///PATH, postgresql://..., mysql://..., journal:PATH."),
]


def _progress(quiet: bool) -> Any:
    """A rich progress display: description, bar, m/n, elapsed, and a free-text info field."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=quiet,
        transient=False,
    )


class _SearchView:
    """Two rich progress bars (the study; the running trial) and a log file in the run folder."""

    def __init__(self, n_trials: int, quiet: bool, study_name: str) -> None:

        self.quiet = quiet
        self.log_file = None
        self.n_trials = n_trials
        self.study_name = study_name
        self.progress = _progress(quiet)
        self.study_bar = self.progress.add_task("study", total=n_trials, info="")
        self.trial_bar = self.progress.add_task("trial", total=None, info="", visible=False)
        self.started = time.monotonic()
        self.counts = {"complete": 0, "pruned": 0, "failed": 0, "infeasible": 0, "duplicate": 0}
        self.best = ""

    def open_log(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = (run_dir / "search.log").open("a")
        self.log(f"--- nas {' '.join(sys.argv[1:])}")

    def log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if self.log_file:
            self.log_file.write(f"{stamp} {line}\n")
            self.log_file.flush()
        if not self.quiet:
            self.progress.console.print(f"[dim]{escape(line)}[/dim]", highlight=False)

    def trial_started(self, number: int, summary: str) -> None:
        self.progress.update(
            self.trial_bar, description=f"trial {number}", completed=0, total=None, info=summary, visible=True
        )

    def stage(self, name: str) -> None:
        self.progress.update(self.trial_bar, info=name)

    def step(self, step: int, loss: float, tps: float) -> None:
        self.progress.update(self.trial_bar, completed=step, info=f"step {step} loss {loss:.3f} {tps:,.0f} tok/s")

    def trial_finished(self, trial: Any, done: int, best: str) -> None:
        status = trial.user_attrs.get("nas_status")
        key = {"duplicate": "duplicate", "infeasible": "infeasible"}.get(status, trial.state.name.lower())
        self.counts[key] = self.counts.get(key, 0) + 1
        self.best = best
        elapsed = time.monotonic() - self.started
        trained = self.counts["complete"] + self.counts["pruned"]
        eta = f" ETA {elapsed / trained * max(0, self.n_trials - done):.0f}s" if trained else ""
        info = " ".join(f"{k} {v}" for k, v in self.counts.items() if v) + f" | best {best}{eta}"
        self.progress.update(self.study_bar, completed=done, info=info)
        self.progress.update(self.trial_bar, visible=False)


def _best_text(study: Any) -> str:
    from nas.study import leaderboard

    rows = [r for r in leaderboard(study) if r.rank == 1]
    return ", ".join(f"{v:.4g}" for v in rows[0].values) if rows and rows[0].values else "-"


def _render_leaderboard(study: Any, limit: int | None = None) -> None:
    from nas.study import leaderboard

    rows = leaderboard(study)
    objectives = list(study.user_attrs.get("nas.objectives", {})) or [f"value{i}" for i in range(len(study.directions))]
    multi = len(study.directions) > 1
    table = Table(title=f"study {study.study_name}: {len(rows)} trials" + (" (* = Pareto set)" if multi else ""))
    for column in ("rank", "trial", "architecture", "params", *objectives, "state", "cause"):
        table.add_column(column, overflow="fold", justify="right" if column in ("rank", "trial", "params") else "left")
    shown = rows if limit is None else rows[:limit]
    for row in shown:
        values = [f"{v:.4g}" for v in row.values] if row.values else [""] * len(objectives)
        rank = "" if row.rank is None else f"{row.rank}{'*' if row.pareto else ''}"
        state = row.state if row.status in ("trained", "running", "?") else f"{row.state} ({row.status})"
        table.add_row(
            rank,
            str(row.number),
            row.summary,
            f"{row.params:,}" if row.params else "",
            *values,
            state,
            escape(row.cause or ""),
        )
    console.print(table)
    if limit is not None and len(rows) > limit:
        console.print(f"... {len(rows) - limit} more: nas status {study.study_name}")


@app.command("search")
def search(
    space: Annotated[str, typer.Option(help="Search space: a shipped name or a YAML file.")] = "tiny",
    trial: Annotated[str, typer.Option("--trial", help="Trial protocol: a shipped name or a YAML file.")] = "cpu-tiny",
    study: Annotated[str | None, typer.Option(help="Study name (default: SPACE-PROTOCOL).")] = None,
    storage: StorageOption = None,
    n_trials: Annotated[int, typer.Option(min=1, help="Trials that train (completed or pruned), in total.")] = 10,
    timeout: Annotated[float | None, typer.Option(min=1, help="Start no new trial after this many seconds.")] = 540,
    sampler: Annotated[str, typer.Option(help="tpe | random | nsga2 | gp | cmaes | grid")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median | sha | hyperband | none")] = "hyperband",
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    overrides: SetOption = None,
    keep_weights: Annotated[bool, typer.Option(help="Store each trial's weights (safetensors artifact).")] = False,
    warm_start: Annotated[str | None, typer.Option(help="Seed a new study with an old study's architectures.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Estimate the study's compute; train nothing.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars (the log file still grows).")] = False,
    runs_dir: RunsOption = Path("runs"),
    workers: Annotated[
        int | None, typer.Option(min=1, help="Local worker processes (default 1, or one per --devices entry).")
    ] = None,
    devices: Annotated[
        str | None, typer.Option(help="GPUs to use, one worker each: --devices 0,1,2,3 (sets CUDA_VISIBLE_DEVICES).")
    ] = None,
    heartbeat: HeartbeatOption = 10,
    grace: GraceOption = 60,
    checkpoint_every: CheckpointOption = None,
) -> None:
    """Search a space for the best architecture under a trial protocol (an Optuna study).

    Example: nas search --space tiny --trial cpu-tiny --n-trials 10 --pruner hyperband
    Several workers: nas search --workers 2 --storage journal:runs/journal.log (or postgresql://...).
    """
    from nas.protocol import load_protocol
    from nas.space import load_space
    from nas.study import PRUNERS, SAMPLERS, Callbacks, SearchConfig, make_pruner, open_storage, run_search

    loaded_space = load_space(space)
    protocol = load_protocol(trial, overrides)
    for name, value, allowed in (("--sampler", sampler, SAMPLERS), ("--pruner", pruner, PRUNERS)):
        if value not in allowed:
            from nas.errors import did_you_mean

            raise NasInputError(name, f"unknown '{value}'{did_you_mean(value, allowed)}; one of {', '.join(allowed)}")
    multi = len(protocol.objectives) > 1
    make_pruner(pruner, protocol, multi)
    if sampler == "cmaes" and multi:
        raise NasInputError("--sampler", "cmaes handles single-objective studies only; use tpe or nsga2")
    if sampler == "grid":
        from nas.study import grid_space

        grid_space(loaded_space)
    name = study or f"{loaded_space.name}-{protocol.name}"
    if dry_run:
        _dry_run(loaded_space, protocol, n_trials, seed)
        return
    if storage is not None:
        open_storage(storage)  # unreachable or unknown: exit 2 before anything is written
    device_list = _device_list(devices)
    n_workers = workers or max(1, len(device_list))
    heartbeats = _heartbeats(heartbeat, grace)
    view = _SearchView(n_trials, quiet, name)
    view.open_log(runs_dir / name)
    config = SearchConfig(
        space=loaded_space,
        protocol=protocol,
        study_name=name,
        storage=storage,
        runs_dir=runs_dir,
        n_trials=n_trials,
        timeout=timeout,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        keep_weights=keep_weights,
        warm_start=warm_start,
        heartbeats=heartbeats,
        checkpoint_every=checkpoint_every,
    )
    if n_workers > 1 or device_list:
        _search_with_workers(config, view, n_workers, device_list, quiet)
        return

    def finished(frozen: Any, study_obj: Any) -> None:
        from nas.study import trained_count

        view.trial_finished(frozen, trained_count(study_obj), _best_text(study_obj))

    callbacks = Callbacks(
        trial_started=view.trial_started, stage=view.stage, step=view.step, trial_finished=finished, log=view.log
    )
    try:
        with view.progress:
            summary = run_search(config, callbacks)
    except KeyboardInterrupt:
        view.log("interrupted: the running trial is marked failed (interrupted); re-run the same command to continue")
        err_console.print("interrupted; re-run the same command to continue the study")
        raise typer.Exit(130) from None
    view.log(f"stopped: {summary.stopped_because}")
    console.print(
        f"\n[bold]{summary.stopped_because}[/bold] in {summary.elapsed:.0f}s "
        f"({summary.new_trained} new trials trained; run folder {summary.run_dir})"
    )
    _finish(summary.study, storage)


def _finish(study: Any, storage: str | None) -> None:
    _render_leaderboard(study, limit=15)
    _print_best(study)
    where = f" --storage {storage}" if storage else ""
    name = study.study_name
    console.print(
        "next:\n"
        f"  nas status {name}{where}\n"
        f"  nas dashboard {name}{where}\n"
        f"  nas export {name}{where} --best -o exports/{name}",
        highlight=False,
    )


def _device_list(devices: str | None) -> list[str]:
    if not devices:
        return []
    items = [d.strip() for d in devices.split(",") if d.strip()]
    if not items or not all(d.isdigit() for d in items):
        raise NasInputError("--devices", f"'{devices}': give GPU indices separated by commas, e.g. 0,1,2,3")
    return items


def _heartbeats(heartbeat: int, grace: int) -> Any:
    from nas.workers import Heartbeats

    if grace <= heartbeat:
        raise NasInputError("--grace", f"{grace}s must exceed --heartbeat {heartbeat}s (a few beats, e.g. 6x)")
    return Heartbeats(heartbeat, grace)


def _search_with_workers(config: Any, view: Any, n_workers: int, device_list: list[str], quiet: bool) -> None:
    """Create the study here, then run ``n_workers`` `nas worker` processes on it and follow them."""
    import os
    import signal
    import subprocess

    from nas.study import default_storage, prepare_study, trained_count

    url = config.storage or default_storage(config.runs_dir, config.study_name)
    if url.startswith("sqlite"):
        message = (
            f"SQLite storage with {n_workers} workers: writes queue on one file lock; for several processes "
            f"use --storage journal:{config.runs_dir / config.study_name / 'journal.log'}, across machines "
            "postgresql://... (see README, Scaling out)"
        )
        err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)
        view.log(f"warning: {message}")
    study = prepare_study(config)
    threads = max(1, (os.cpu_count() or 1) // n_workers) if not device_list else 0
    run_dir = config.runs_dir / config.study_name
    procs = []
    for index in range(n_workers):
        env = dict(os.environ)
        if device_list:
            env["CUDA_VISIBLE_DEVICES"] = device_list[index % len(device_list)]
        argv = [sys.executable, "-m", "nas", "worker", "--study", config.study_name, "--storage", url]
        argv += ["--runs-dir", str(config.runs_dir), "--index", str(index), "--quiet"]
        argv += ["--n-trials", str(config.n_trials)] + (["--threads", str(threads)] if threads else [])
        if config.timeout is not None:
            argv += ["--timeout", str(config.timeout)]
        log = (run_dir / f"worker-{index}.log").open("a")
        procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    where = f"GPUs {','.join(device_list)}" if device_list else f"{threads} CPU threads each"
    view.log(f"started {n_workers} workers ({where}); their output: {run_dir}/worker-*.log")
    started = time.monotonic()
    before = trained_count(study)
    try:
        with view.progress:
            while any(p.poll() is None for p in procs):
                time.sleep(1.0)
                view.progress.update(view.study_bar, completed=trained_count(study), info=f"{n_workers} workers")
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        err_console.print("interrupted; re-run the same command to continue the study")
        raise typer.Exit(130) from None
    codes = [p.returncode for p in procs]
    done = trained_count(study)
    console.print(
        f"\n[bold]{done} trials trained[/bold] by {n_workers} workers in {time.monotonic() - started:.0f}s "
        f"({done - before} new; run folder {run_dir})"
    )
    _finish(study, config.storage)
    if any(codes):
        lost = ", ".join(f"worker {i}: exit {c}" for i, c in enumerate(codes) if c)
        err_console.print(f"{lost} (see {run_dir}/worker-*.log)", highlight=False)
        if done < config.n_trials:
            raise typer.Exit(1)


@app.command("worker")
def worker(
    study: Annotated[str, typer.Option(help="The study to join (created by nas search).")],
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
    n_trials: Annotated[int | None, typer.Option(min=1, help="Override the study's target trial count.")] = None,
    timeout: Annotated[float | None, typer.Option(min=1, help="Start no new trial after this many seconds.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads for this worker.")] = None,
    index: Annotated[int | None, typer.Option(help="This worker's index (seeds its sampler).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Join an existing study and run its trials until it has enough (run one per GPU or machine).

    The space, the protocol and the search settings come from the study itself, so a worker needs
    no files: nas worker --study tiny-cpu-tiny --storage postgresql://user@db-host/nas
    """
    import torch

    from nas.study import Callbacks, join_study, trained_count, work

    if threads:
        torch.set_num_threads(threads)
    found, config = join_study(study, storage, runs_dir, n_trials, timeout, index)
    view = _SearchView(config.n_trials, quiet, config.study_name)
    view.open_log(runs_dir / config.study_name)
    prefix = f"[worker {index if index is not None else os.getpid()}] "

    def finished(frozen: Any, study_obj: Any) -> None:
        view.trial_finished(frozen, trained_count(study_obj), _best_text(study_obj))

    callbacks = Callbacks(
        trial_started=view.trial_started,
        stage=view.stage,
        step=view.step,
        trial_finished=finished,
        log=lambda line: view.log(prefix + line),
    )
    try:
        with view.progress:
            summary = work(found, config, callbacks)
    except KeyboardInterrupt:
        view.log(prefix + "interrupted: the running trial is marked failed and queued again")
        raise typer.Exit(130) from None
    view.log(prefix + f"stopped: {summary.stopped_because}")
    console.print(f"{prefix}{summary.stopped_because} ({summary.new_trained} new trials trained)", highlight=False)


def _print_best(study: Any) -> None:
    from nas.study import leaderboard

    best = [r for r in leaderboard(study) if r.rank == 1]
    if not best:
        console.print("[yellow]no trial completed yet[/yellow]")
        return
    row = best[0]
    metrics = ", ".join(
        f"{k} {v:.4g}"
        for k, v in row.metrics.items()
        if isinstance(v, float) and "." in k or k in ("val_loss", "tokens_per_second")
    )
    console.print(
        f"[bold]best[/bold]: trial {row.number}: {row.summary} ({row.params:,} params) {metrics}", highlight=False
    )


def _dry_run(space: Any, protocol: Any, n_trials: int, seed: int) -> None:
    """Sample the space and estimate the study's compute at the throughput measured here and now."""
    import statistics

    from nas.space import random_samples
    from nas.train.pretrain import budget_tokens

    archs = [s.arch for s in random_samples(space, n_trials * 4, seed) if s.arch is not None][:n_trials]
    if not archs:
        raise NasInputError(space.source, "no feasible architecture to estimate")
    config = protocol.pretrain
    total_flops = 0.0
    for arch in archs:
        fpt = arch.flops_per_token(config.seq_len)
        tokens = budget_tokens(config, fpt) or 0
        finetune = sum(t.steps * t.batch_size * t.max_length for t in protocol.tasks)
        total_flops += (tokens + finetune) * fpt
    reference = sorted(archs, key=lambda a: a.flops_per_token())[len(archs) // 2]
    flops_per_second = _measure_flops_per_second(reference, protocol)
    console.print(
        f"dry run: {len(archs)} sampled architectures of {space.name}, median "
        f"{statistics.median(a.param_count() for a in archs):,.0f} params"
    )
    if config.budget.seconds:
        console.print(
            f"time budget: {config.budget.seconds:.0f}s pretraining per trial, "
            f"~{config.budget.seconds * len(archs) / 60:.1f} min for pretraining in all"
        )
    console.print(
        f"estimated compute: {total_flops:.3g} FLOPs (pretraining + fine-tuning, no pruning); "
        f"at {flops_per_second:.3g} FLOP/s measured here on {reference.summary()}: "
        f"~{total_flops / flops_per_second / 60:.1f} min",
        highlight=False,
    )


def _measure_flops_per_second(arch: Any, protocol: Any) -> float:
    import torch
    import transformers

    from nas.train.pretrain import make_optimizer, resolve_device

    config = protocol.pretrain
    device = resolve_device(config)
    model = transformers.AutoModelForCausalLM.from_config(arch.to_hf_config()).to(device)
    optimizer = make_optimizer(model, config, 1e-4, device)
    x = torch.randint(0, arch.vocab_size, (config.batch_size, config.seq_len), device=device)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return arch.flops_per_token(config.seq_len) * config.batch_tokens / min(times[1:])


@app.command("train")
def train_command(
    export_dir: Annotated[
        Path | None, typer.Argument(help="A folder written by `nas export` (omit with --resume).")
    ] = None,
    trial: Annotated[
        str | None, typer.Option("--trial", help="Protocol (name or YAML); default: the export's recipe.yaml.")
    ] = None,
    tokens: Annotated[int | None, typer.Option(min=1, help="Tokens to train (default: 20 per parameter).")] = None,
    flops: Annotated[float | None, typer.Option(min=1, help="Training FLOPs instead of --tokens.")] = None,
    overrides: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Output folder (a plain HF model at the end).")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this output folder.")] = None,
    nproc: Annotated[int | None, typer.Option(min=1, help="Data-parallel processes (torchrun; gloo on CPU).")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(min=1, help="Steps between checkpoints (default: the protocol's eval_every).")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train an exported architecture for real: the search's data and tokenizer at the full budget.

    Example: nas train exports/tiny --tokens 5000000 -o trained/tiny   (then: nas train --resume trained/tiny)
    """
    from nas.train.full import load_spec, plan

    if resume is not None:
        out_dir = resume
        spec = load_spec(out_dir)
        if export_dir is not None or trial or tokens or flops or overrides:
            raise NasInputError("--resume", "resume takes the run's own settings; give only --resume OUT_DIR")
        if nproc is not None:
            spec.nproc = nproc
            spec.save(out_dir)
        if (out_dir / "metrics.json").is_file() and (out_dir / "model.safetensors").is_file():
            console.print(f"{out_dir}: this run already finished; nothing to resume")
            return
    else:
        if export_dir is None:
            raise NasInputError("EXPORT_DIR", "give the exported folder to train (or --resume OUT_DIR)")
        if out is None:
            raise NasInputError("--out", "give the output folder: -o OUT_DIR")
        if (out / "train.json").exists():
            raise NasInputError(
                "--out", f"{out} already holds a run: continue it with --resume {out}, or pick another -o"
            )
        spec = plan(export_dir, trial, tokens, flops, overrides, checkpoint_every, nproc or 1)
        out_dir = out
        spec.save(out_dir)
    if spec.nproc > 1:
        _train_distributed(out_dir, spec.nproc)
    else:
        _train_here(out_dir, spec, quiet)


def _train_here(out_dir: Path, spec: Any, quiet: bool) -> None:

    from nas.protocol import parse_protocol
    from nas.train.full import train

    protocol = parse_protocol(spec.protocol_text)
    config = protocol.pretrain
    log_file = (out_dir / "train.log").open("a")

    def log(line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log_file.write(f"{stamp} {line}\n")
        log_file.flush()
        progress.console.print(f"[dim]{escape(line)}[/dim]", highlight=False)

    progress = _progress(quiet)
    total = config.budget.tokens // config.batch_tokens if config.budget.tokens else None
    bar = progress.add_task("train", total=total, info="")

    def on_step(step: int, loss: float, tps: float) -> None:
        progress.update(bar, completed=step, info=f"loss {loss:.3f} {tps:,.0f} tok/s")

    with progress:
        result = train(out_dir, spec, on_step=on_step, log=log)
    _print_trained(out_dir, result)


def _train_distributed(out_dir: Path, nproc: int) -> None:
    import subprocess

    env = {**os.environ, "NAS_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    argv += ["-m", "nas.train.full", str(out_dir)]
    code = subprocess.call(argv, env=env)
    if code != 0:
        err_console.print(f"torchrun exited with {code}; see {out_dir}/train.log, then nas train --resume {out_dir}")
        raise typer.Exit(1)
    _print_trained(out_dir, json.loads((out_dir / "metrics.json").read_text()))


def _print_trained(out_dir: Path, result: dict[str, Any]) -> None:
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float) and k != "train_seconds")
    console.print(f"[bold]trained[/bold]: {shown}", highlight=False)
    console.print(
        f"a Hugging Face model folder: AutoModelForCausalLM.from_pretrained('{out_dir}'); "
        f"metrics per eval in {out_dir}/metrics.jsonl",
        highlight=False,
    )


@app.command("status")
def status(
    study: Annotated[str | None, typer.Argument(help="Study name (default: the newest in runs/).")] = None,
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
    all_rows: Annotated[bool, typer.Option("--all", help="Every trial, not the first 30.")] = False,
) -> None:
    """The leaderboard of a study: rank, trial, architecture, params, objectives, state, cause.

    Example: nas status tiny-cpu-tiny
    """
    from nas.study import find_study

    found = find_study(study, storage, runs_dir)
    attrs = found.user_attrs
    console.print(
        f"study [bold]{found.study_name}[/bold]: space {attrs.get('nas.space_name')} "
        f"({attrs.get('nas.space_hash')}), protocol {attrs.get('nas.protocol_name')} "
        f"({attrs.get('nas.protocol_hash')}), nas {attrs.get('nas.version')}",
        highlight=False,
    )
    _render_leaderboard(found, limit=None if all_rows else 30)
    _print_best(found)
    failed = [t for t in found.get_trials(deepcopy=False) if t.user_attrs.get("traceback")]
    for trial in failed[-5:]:
        tail = "\n    ".join(trial.user_attrs["traceback"].splitlines()[-4:])
        console.print(f"[red]trial {trial.number}[/red] traceback (last lines):\n    {escape(tail)}", highlight=False)


@app.command("dashboard")
def dashboard(
    study: Annotated[str | None, typer.Argument(help="Study name (default: the newest in runs/).")] = None,
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
) -> None:
    """Start optuna-dashboard on 127.0.0.1 for a study, with its artifacts; prints the URL.

    Example: nas dashboard tiny-cpu-tiny --port 8080
    """
    import optuna
    from optuna_dashboard import run_server

    from nas.study import default_storage, find_study

    found = find_study(study, storage, runs_dir)
    url = storage or default_storage(runs_dir, found.study_name)
    artifacts = optuna.artifacts.FileSystemArtifactStore(str(runs_dir / found.study_name / "artifacts"))
    console.print(f"optuna-dashboard for {found.study_name}: http://127.0.0.1:{port}/dashboard/ (Ctrl-C to stop)")
    run_server(url, host="127.0.0.1", port=port, artifact_store=artifacts)


@app.command("export")
def export(
    study: Annotated[str | None, typer.Argument(help="Study name (default: the newest in runs/).")] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder to write.")] = Path("exports/best"),
    trial_number: Annotated[int | None, typer.Option("--trial", help="Export this trial.")] = None,
    best: Annotated[bool, typer.Option("--best", help="Export the best trial (single objective).")] = False,
    pareto: Annotated[int | None, typer.Option(min=1, help="Export the first K of the Pareto set.")] = None,
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
) -> None:
    """Export a trial as a Hugging Face model folder with tokenizer, metrics and a training recipe.

    Example: nas export tiny-cpu-tiny --best -o exports/tiny
    """
    from nas.study import export_from_study, find_study, leaderboard

    if sum(x is not None and x is not False for x in (trial_number, best or None, pareto)) != 1:
        raise NasInputError("export", "give exactly one of --trial N, --best, --pareto K")
    found = find_study(study, storage, runs_dir)
    ranked = [r for r in leaderboard(found) if r.rank is not None]
    if trial_number is not None:
        targets = [(trial_number, out)]
    elif best:
        if len(found.directions) > 1:
            raise NasInputError("--best", "the study has several objectives: use --pareto K or --trial N")
        if not ranked:
            raise NasInputError("--best", f"study '{found.study_name}' has no completed trial yet")
        targets = [(ranked[0].number, out)]
    else:
        front = [r for r in ranked if r.pareto][:pareto]
        if not front:
            raise NasInputError("--pareto", f"study '{found.study_name}' has no completed trial yet")
        targets = [(r.number, out / f"trial-{r.number}") for r in front]
    for number, folder in targets:
        written = export_from_study(found, number, folder, runs_dir)
        console.print(f"exported trial {number} to {written}")


@app.command("report")
def report(
    study: Annotated[str | None, typer.Argument(help="Study name (default: the newest in runs/).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="HTML file (default: reports/<study>.html).")] = None,
    png: Annotated[Path | None, typer.Option(help="Also write static PNGs here (kaleido + Chromium).")] = None,
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
) -> None:
    """Write one offline HTML report of a study (Plotly; plotly.js embedded once).

    Example: nas report tiny-cpu-tiny -o reports/tiny.html
    """
    from nas.report import build_report
    from nas.study import find_study

    found = find_study(study, storage, runs_dir)
    path = out or Path("reports") / f"{found.study_name}.html"
    written = build_report(found, path, png)
    size = written.path.stat().st_size / 2**20
    console.print(f"report: {written.path} ({size:.1f} MB, {len(written.figures)} figures, {written.seconds:.1f}s)")
    for warning in written.warnings:
        console.print(f"[yellow]{escape(warning)}[/yellow]")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: bad input ends with one clear message and exit code 2, no traceback.

    Typer's standalone mode already exits 2 on usage errors; the library's NasInputError is turned
    into the same here.
    """
    try:
        app(args=argv)
    except NasInputError as exc:
        err_console.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
        )
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["app", "main"]
