"""The `nas` command line: parse → call the library → render with rich. Exit 0 ok, 1 failure, 2 bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

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
    from nas.resources import shipped_dir, shipped_names
    from nas.space import load_space

    table = Table(title=f"Shipped search spaces ({shipped_dir('search_spaces')})")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name in shipped_names("search_spaces"):
        space = load_space(name, feasibility_probe=0)
        table.add_row(name, " ".join(space.description.split()))
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

    problems: list[NasInputError] = []
    for file in files:
        try:
            space = load_space(file)
        except NasInputError as exc:
            problems.append(exc)
            continue
        console.print(f"[green]ok[/green] {space.source} ({space.name}, {len(space.params)} parameters)")
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
    from nas.resources import shipped_dir, shipped_names

    table = Table(title=f"Shipped trial protocols ({shipped_dir('trials')})")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name in shipped_names("trials"):
        table.add_row(name, " ".join(load_protocol(name).description.split()))
    console.print(table)


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

    problems: list[NasInputError] = []
    for file in files:
        try:
            loaded = load_protocol(file)
        except NasInputError as exc:
            problems.append(exc)
            continue
        console.print(f"[green]ok[/green] {loaded.source} ({loaded.name}, {len(loaded.tasks)} tasks)")
    if problems:
        raise NasInputError(None, [("", str(p)) for p in problems])


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
