"""`nas protocols` (alias `nas protocols`): list, show, validate trial protocols, and run one trial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nas.cli.common import ProtocolArg, SetOption, console, list_shipped, validate_each
from nas.errors import NasInputError

if TYPE_CHECKING:
    from nas.protocol import TrialProtocol

app = typer.Typer(
    help="Trial protocols: list, show, validate, and run one trial (alias: nas trials).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("list")
def trials_list() -> None:
    """List the shipped trial protocols.

    Example: nas protocols list
    """
    from nas.protocol import load_protocol

    list_shipped("trials", "Shipped trial protocols", load_protocol)


@app.command("show")
def trials_show(protocol: ProtocolArg, overrides: SetOption = None) -> None:
    """Print a protocol with every default filled in (after --set overrides), and its metrics.

    Example: nas protocols show cpu-tiny --set pretrain.budget.tokens=50000
    """
    import yaml

    from nas.protocol import load_protocol

    loaded = load_protocol(protocol, overrides)
    console.print(f"[bold]{loaded.name}[/bold]  ({loaded.source}, hash {loaded.content_hash})")
    console.print(yaml.safe_dump(loaded.model_dump(mode="json"), sort_keys=False), highlight=False, markup=False)
    console.print("metrics: " + ", ".join(loaded.metric_names()))


@app.command("validate")
def trials_validate(
    files: Annotated[list[str], typer.Argument(help="Protocol files or shipped names.")],
    data: Annotated[
        bool,
        typer.Option(
            "--data",
            help="Also read the corpus and every task file, and check that each split holds a sequence.",
        ),
    ] = False,
) -> None:
    """Validate trial protocols; every problem is reported with its file and key path (exit 2).

    Example: nas protocols validate trials/*.yaml --data
    """
    from nas.preflight import check_inputs
    from nas.protocol import load_protocol

    def load(file: str) -> TrialProtocol:
        protocol = load_protocol(file)
        if data:
            check_inputs(protocol)
        return protocol

    validate_each(files, load, _summary)


@app.command("run")
def trials_run(
    protocol: ProtocolArg = "cpu-tiny",
    space: Annotated[str, typer.Option(help="Space to draw the architecture from.")] = "tiny",
    seed: Annotated[
        int, typer.Option(min=0, max=2**32 - 1, help="Seed of the architecture draw (Optuna RandomSampler).")
    ] = 0,
    arch_dir: Annotated[
        Path | None, typer.Option("--arch", help="An exported folder (architecture.yaml) instead of a draw.")
    ] = None,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run one trial outside any study: pretrain, measure, fine-tune, and print every metric, each task
    metric beside its baseline: what a trivial predictor with no model scores (e.g. the majority class).

    Example: nas protocols run cpu-tiny --space tiny --seed 3 --set pretrain.budget.tokens=50000
    """
    from nas.export import load_architecture
    from nas.preflight import check_inputs
    from nas.protocol import load_protocol
    from nas.space import load_space, random_samples
    from nas.trial import run_trial

    loaded = load_protocol(protocol, overrides)
    if arch_dir is not None:
        arch = load_architecture(arch_dir)
    else:
        draws = [s.arch for s in random_samples(load_space(space), 64, seed) if s.arch is not None]
        if not draws:
            raise NasInputError(space, "no feasible architecture in 64 draws")
        arch = draws[0]
    check_inputs(loaded, arch=arch)
    console.print(f"architecture {arch.arch_hash()}: {arch.summary()}", highlight=False)
    with console.status("starting") as status:

        def on_step(step: int, loss: float, tps: float) -> None:
            status.update(f"pretrain step {step}  loss {loss:.3f}  {tps:,.0f} tokens/s")

        result = run_trial(arch, loaded, on_step=on_step, on_stage=lambda name: status.update(name))
    if as_json:
        print(json.dumps(result.to_dict(), default=float))
        return
    _print_result(result)
    if result.status == "failed":
        raise typer.Exit(1)


def _print_result(result: Any) -> None:
    """A trial's metrics (each task metric beside its no-model baseline), curve, notes and time by phase."""
    from nas.search.usage import time_shares
    from nas.train.baselines import baseline_text

    table = Table(title=f"trial: {result.status}" + (f" ({result.cause})" if result.cause else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    if result.task_baselines:
        table.add_column("baseline (no model)")
    for name, value in result.metrics.items():
        shown = f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"
        baseline = baseline_text(name, result.task_baselines, result.baseline_predictors)
        table.add_row(name, shown, *([baseline] if result.task_baselines else []))
    console.print(table)
    curve = "  ".join(f"{p.step}:{p.val_loss:.3f}" for p in result.curve)
    console.print(f"held-out loss by step: {curve}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}")
    shares = time_shares(result.phase_seconds)
    console.print(f"wall time {result.wall_seconds:.1f}s" + (f": {shares}" if shares else ""), highlight=False)


def _summary(protocol: TrialProtocol) -> str:
    """ "trials/cpu-tiny.yaml (cpu-tiny, 1 task: qa; off: claims, answer)" """
    names = ", ".join(t.name for t in protocol.tasks)
    text = f"{protocol.source} ({protocol.name}, {len(protocol.tasks)} task{'s' * (len(protocol.tasks) != 1)}"
    text += f": {names}" if names else ""
    text += f"; off: {', '.join(protocol.disabled_tasks)}" if protocol.disabled_tasks else ""
    return text + ")"
