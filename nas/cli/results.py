"""`nas status`, `nas dashboard`, `nas export`, `nas report`: reading a study, and the leaderboard table."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nas.cli.common import RunsOption, StorageOption, StudyArg, console, err_console
from nas.errors import NasInputError


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("dashboard")(dashboard)
    app.command("export")(export)
    app.command("report")(report)


def best_text(study: Any) -> str:
    """The best trial's objective values, for progress lines."""
    from nas.search import leaderboard

    rows = [r for r in leaderboard(study) if r.rank == 1]
    return ", ".join(f"{v:.4g}" for v in rows[0].values) if rows and rows[0].values else "-"


def render_leaderboard(study: Any, limit: int | None = None) -> None:
    from nas.search import leaderboard, study_info
    from nas.search.ranking import ties_line
    from nas.search.records import baselines_line

    rows = leaderboard(study)
    objectives = study_info(study).objectives or [f"value{i}" for i in range(len(study.directions))]
    multi = len(study.directions) > 1
    predicted = any("predicted_val_loss" in r.metrics for r in rows)
    rungs = any(r.rungs for r in rows)
    marks = " (* = Pareto set)" if multi else " (= ties with the best)" if any(r.tie for r in rows) else ""
    table = Table(title=f"study {study.study_name}: {len(rows)} trials{marks}")
    extra = ("measured", "predicted at target") if predicted else ()
    head = ("rank", "trial", "architecture", *(["rung"] if rungs else []), "params")
    for column in (*head, *objectives, *extra, "state", "cause"):
        # numbers never break (no_wrap); text wraps between words, and only the cause folds a long word
        text = column in ("architecture", "state", "cause")
        table.add_column(
            column,
            overflow="fold" if column == "cause" else "ellipsis",
            no_wrap=not text,
            justify="right" if column in ("rank", "trial", "params") else "left",
        )
    shown = rows if limit is None else rows[:limit]
    for row in shown:
        values = _value_cells(row, len(objectives))
        rank = "" if row.rank is None else f"{row.rank}{'*' if row.pareto and multi else ''}{'=' if row.tie else ''}"
        state = row.state if row.status in ("trained", "running", "?") else f"{row.state} ({row.status})"
        state = "confirmation" if row.confirmation else state
        params = f"{row.params:,}" if row.params else ""
        shown_extra = _prediction_cells(row) if predicted else []
        rung = [f"{len(row.rungs)} ({row.rungs[-1][0]:,.0f} tok)" if row.rungs else ""] if rungs else []
        cells = (rank, str(row.number), row.summary, *rung, params, *values, *shown_extra, state)
        table.add_row(*cells, escape(row.cause or ""))
    console.print(table)
    if baselines := baselines_line(rows, objectives):
        console.print(f"baselines (no model): {baselines}", highlight=False, soft_wrap=True)
    if limit is not None and len(rows) > limit:
        console.print(f"... {len(rows) - limit} more: nas status {study.study_name}")
    if not multi and any(r.rank for r in rows):
        console.print(f"ties: {ties_line(rows, objectives[0])}", highlight=False)


def _value_cells(row: Any, width: int) -> list[str]:
    """Each objective's value; over several runs (confirmations), the mean, ± the sd between them, and n runs."""
    if not row.values:
        return [""] * width
    if len(row.runs) < 2:
        return [f"{v:.4g}" for v in row.values]
    cells = []
    for i, mean in enumerate(row.values):
        runs = [run[i] for run in row.runs]
        sd = (sum((x - mean) ** 2 for x in runs) / (len(runs) - 1)) ** 0.5
        cells.append(f"{mean:.4g} ±{sd:.1g} n={len(runs)}")
    return cells


def _prediction_cells(row: Any) -> list[str]:
    """The held-out loss measured at the trial budget, and the prediction at the target with its std."""
    measured = row.metric("val_loss")
    value, std, tokens = (row.metric(k) for k in ("predicted_val_loss", "predicted_val_loss_std", "target_tokens"))
    if value != value:  # NaN: no prediction (fewer than two annealed points)
        return [f"{measured:.4g}" if measured == measured else "", ""]
    return [f"{measured:.4g}", f"{value:.4g} ± {std:.2g} @ {tokens:,.0f} tok"]


def print_best(study: Any) -> None:
    from nas.search import leaderboard

    best = [r for r in leaderboard(study) if r.rank == 1]
    if not best:
        console.print("[yellow]no trial completed yet[/yellow]")
        return
    row = best[0]
    metrics = ", ".join(
        f"{k} {v:.4g}" + (f" ({baseline})" if (baseline := row.baseline(k)) else "")
        for k, v in row.metrics.items()
        if (isinstance(v, float) and "." in k)
        or (isinstance(v, int | float) and k in ("val_loss", "predicted_val_loss", "tokens_per_second"))
    )
    params = f" ({row.params:,} params)" if row.params is not None else ""
    if row.runs:  # confirmed: ranked by the mean over its runs; the metrics are its own run's
        mean = ", ".join(f"{v:.4g}" for v in row.values or [])
        params += f" mean {mean} over {len(row.runs)} runs; this run's"
    console.print(f"[bold]best[/bold]: trial {row.number}: {row.summary}{params} {metrics}", highlight=False)


def print_next(study: Any, storage: str | None) -> None:
    """The leaderboard, the best trial and the commands to run next (the end of a search)."""
    render_leaderboard(study, limit=15)
    print_best(study)
    where = f" --storage {storage}" if storage else ""
    name = study.study_name
    console.print(
        "next:\n"
        f"  nas status {name}{where}\n"
        f"  nas report {name}{where}\n"
        f"  nas dashboard {name}{where}\n"
        f"  nas export {name}{where} --best -o exports/{name}",
        highlight=False,
    )


def status(
    study: StudyArg = None,
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
    all_rows: Annotated[bool, typer.Option("--all", help="Every trial, not the first 30.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: every trial's record and the time by phase.")
    ] = False,
) -> None:
    """The leaderboard of a study: rank, trial, architecture, params, objectives, state, cause (under it,
    the no-model baselines of objectives that are task metrics); then where the trained trials' time went,
    and the best trial with each task metric beside its baseline.

    Example: nas status tiny-cpu-tiny
    """
    from nas.search import find_study, study_info, study_records
    from nas.search.usage import by_placement, placement_lines, time_by_phase, time_shares

    found = find_study(study, storage, runs_dir)
    info = study_info(found)
    if as_json:
        print(json.dumps(_status_json(found, info), default=str))
        return
    console.print(
        f"study [bold]{found.study_name}[/bold]: space {info.space_name} ({info.space_hash}), "
        f"protocol {info.protocol_name} ({info.protocol_hash}), nas {info.version}",
        highlight=False,
    )
    for line in info.damage:
        console.print(f"[yellow]study metadata {line}[/yellow]", highlight=False)
    render_leaderboard(found, limit=None if all_rows else 30)
    records = study_records(found)
    if shares := time_shares(time_by_phase(records)):
        console.print(f"time: {shares}", highlight=False, soft_wrap=True)
    for line in placement_lines(by_placement(records)):
        console.print(f"workers: {line}", highlight=False, soft_wrap=True)
    print_best(found)
    failed = [r for r in records if r.traceback]
    for record in failed[-5:]:
        tail = "\n    ".join((record.traceback or "").splitlines()[-4:])
        console.print(f"[red]trial {record.number}[/red] traceback (last lines):\n    {escape(tail)}", highlight=False)


def _status_json(study: Any, info: Any) -> dict[str, Any]:
    """The study's metadata, its trials in leaderboard order (each a TrialRecord, with its phase_seconds)
    and ``time_by_phase``, the seconds of each phase summed over the trained trials."""
    from nas.search import leaderboard
    from nas.search.usage import by_placement, time_by_phase

    rows = leaderboard(study)
    return {
        "study": study.study_name,
        "space": {"name": info.space_name, "hash": info.space_hash},
        "protocol": {"name": info.protocol_name, "hash": info.protocol_hash},
        "version": info.version,
        "objectives": {o: "min" if m else "max" for o, m in zip(info.objectives, info.minimize, strict=False)},
        "trials": [asdict(row) for row in rows],
        "time_by_phase": time_by_phase(rows),
        "placement": [asdict(u) | {"trials_per_hour": u.trials_per_hour} for u in by_placement(rows)],
    }


def dashboard(
    study: StudyArg = None,
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1 (1-65535).")] = 8080,
) -> None:
    """Start optuna-dashboard on 127.0.0.1 for a study, with its artifacts; prints the URL.

    Example: nas dashboard tiny-cpu-tiny --port 8080
    """
    import optuna
    from optuna_dashboard import run_server

    from nas.search import default_storage, find_study

    found = find_study(study, storage, runs_dir)
    url = storage or default_storage(runs_dir, found.study_name)
    artifacts = optuna.artifacts.FileSystemArtifactStore(str(runs_dir / found.study_name / "artifacts"))
    console.print(f"optuna-dashboard for {found.study_name}: http://127.0.0.1:{port}/dashboard/ (Ctrl-C to stop)")
    try:
        run_server(url, host="127.0.0.1", port=port, artifact_store=artifacts)
    except OSError as exc:  # the port is taken, or may not be bound: a runtime failure, not bad input
        err_console.print(f"[bold red]error:[/bold red] --port {port}: cannot serve there: {escape(str(exc))}")
        raise typer.Exit(1) from None


def export(
    study: StudyArg = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder to write.")] = Path("exports/best"),
    trial_number: Annotated[int | None, typer.Option("--trial", help="Export this trial.")] = None,
    best: Annotated[bool, typer.Option("--best", help="Export the best trial (single objective).")] = False,
    pareto: Annotated[int | None, typer.Option(min=1, help="Export the first K of the Pareto set.")] = None,
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
    force: Annotated[bool, typer.Option("--force", help="Replace an -o folder that already holds files.")] = False,
) -> None:
    """Export a trial as a Hugging Face model folder with tokenizer, metrics and a training recipe.

    Example: nas export tiny-cpu-tiny --best -o exports/tiny
    """
    from nas.export import check_output_path
    from nas.search import check_export_choice, export_from_study, export_targets, find_study
    from nas.search.export import damaged_notes

    check_export_choice(trial_number, best, pareto)
    check_output_path(out, "--out")
    found = find_study(study, storage, runs_dir)
    if trial_number is None:
        for note in damaged_notes(found):
            err_console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    targets = export_targets(found, out, trial_number, best, pareto)
    taken = [folder for _, folder in targets if folder.is_dir() and any(folder.iterdir())]
    if taken and not force:
        raise NasInputError("--out", f"{taken[0]} already holds files: give --force to replace it, or another -o")
    for folder in taken:  # --force: the folder is replaced, not mixed with an earlier export's files
        shutil.rmtree(folder)
    for number, folder in targets:
        written = export_from_study(found, number, folder, runs_dir)
        console.print(f"exported trial {number} to {written}")


def report(
    study: StudyArg = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="HTML file (default: reports/<study>.html).")] = None,
    png: Annotated[Path | None, typer.Option(help="Also write static PNGs here (kaleido + Chromium).")] = None,
    storage: StorageOption = None,
    runs_dir: RunsOption = Path("runs"),
) -> None:
    """Write one offline HTML report of a study (Plotly; plotly.js embedded once).

    Example: nas report tiny-cpu-tiny -o reports/tiny.html
    """
    from nas.export import check_output_path
    from nas.report import build_report, check_report_path
    from nas.search import find_study

    if out is not None:  # checked before the study is read (build_report checks the default path)
        check_report_path(out, "--out")
    if png is not None:
        check_output_path(png, "--png")
    found = find_study(study, storage, runs_dir)
    written = build_report(found, out or Path("reports") / f"{found.study_name}.html", png)
    size = written.path.stat().st_size / 2**20
    console.print(f"report: {written.path} ({size:.1f} MB, {len(written.figures)} figures, {written.seconds:.1f}s)")
    for warning in written.warnings:
        console.print(f"[yellow]{escape(warning)}[/yellow]")
