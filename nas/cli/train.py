"""`nas train`: full training of an exported architecture (resume rules live in nas.train.full)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from nas.cli.common import LogFile, SetOption, console, err_console, progress_bars
from nas.errors import NasInputError


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    export_dir: Annotated[
        Path | None, typer.Argument(help="A folder written by `nas export` (omit with --resume).")
    ] = None,
    trial: Annotated[
        str | None,
        typer.Option("--protocol", help="Protocol (name or YAML); default: the export's recipe.yaml."),
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
    from nas.train.full import launch_distributed, new_run, resume_run

    if resume is not None:
        others = export_dir is not None or bool(trial or tokens or flops or overrides)
        spec = resume_run(resume, nproc, others)
        if spec is None:
            console.print(f"{resume}: this run already finished; nothing to resume")
            return
        out_dir: Path = resume
    else:
        existed = _exists(out)
        spec = new_run(export_dir, out, trial, tokens, flops, overrides, checkpoint_every, nproc)
        out_dir = cast(Path, out)  # new_run refused a missing -o
        if spec.nproc == 1:
            try:
                _train_here(out_dir, spec, quiet)
            except NasInputError:
                _undo_start(out_dir, existed)
                raise
            return
    if spec.nproc == 1:
        _train_here(out_dir, spec, quiet)
        return
    code = launch_distributed(out_dir, spec.nproc)
    if code != 0:
        err_console.print(f"torchrun exited with {code}; see {out_dir}/train.log, then nas train --resume {out_dir}")
        raise typer.Exit(1)
    _print_trained(out_dir, json.loads((out_dir / "metrics.json").read_text()))


def _exists(path: Path | None) -> bool:
    """Whether ``path`` exists; a path the system refuses (a name too long) does not: new_run names it."""
    try:
        return path is not None and path.exists()
    except OSError:
        return False


def _undo_start(out_dir: Path, existed: bool) -> None:
    """A new run refused before it trained a step (its data, say): the folder goes as it came, so the same
    command can be given again once the input is fixed; nothing of a run that trained is touched."""
    import shutil

    from nas.train.run_folder import SPEC_FILE

    if any(out_dir.rglob("step-*")):
        return
    if not existed:
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    for name in (SPEC_FILE, "train.log"):
        (out_dir / name).unlink(missing_ok=True)


def _train_here(out_dir: Path, spec: Any, quiet: bool) -> None:
    from nas.protocol import parse_protocol
    from nas.train.full import train

    config = parse_protocol(spec.protocol_text).pretrain
    progress = progress_bars(quiet)
    log = LogFile(out_dir / "train.log", quiet=False, echo=progress.console)
    total = config.budget.tokens // config.batch_tokens if config.budget.tokens else None
    bar = progress.add_task("train", total=total, info="")

    def on_step(step: int, loss: float, tps: float) -> None:
        progress.update(bar, completed=step, info=f"loss {loss:.3f} {tps:,.0f} tok/s")

    with progress:
        result = train(out_dir, spec, on_step=on_step, log=log)
    _print_trained(out_dir, result)


def _print_trained(out_dir: Path, result: dict[str, Any]) -> None:
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float) and k != "train_seconds")
    console.print(f"[bold]trained[/bold]: {shown}", highlight=False)
    console.print(
        f"a Hugging Face model folder: AutoModelForCausalLM.from_pretrained('{out_dir}'); "
        f"metrics per eval in {out_dir}/metrics.jsonl",
        highlight=False,
    )
