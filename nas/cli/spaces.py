"""`nas spaces`: list, show, validate and sample search spaces."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nas.cli.common import SpaceArg, console, list_shipped, si, validate_each

app = typer.Typer(
    help="Search spaces: list, show, validate and sample them.", no_args_is_help=True, rich_markup_mode=None
)


@app.command("list")
def spaces_list() -> None:
    """List the shipped search spaces.

    Example: nas spaces list
    """
    from nas.space import load_space

    list_shipped("search_spaces", "Shipped search spaces", lambda name: load_space(name, feasibility_probe=0))


@app.command("show")
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
            summary.add_row(key, si(min(values)), si(max(values)))
        console.print(summary)


@app.command("validate")
def spaces_validate(
    files: Annotated[list[str], typer.Argument(help="Space files or shipped names.")],
) -> None:
    """Validate search spaces; every problem is reported with its file and key path (exit 2).

    Example: nas spaces validate search_spaces/*.yaml
    """
    from nas.space import load_space

    validate_each(files, load_space, lambda s: f"{s.source} ({s.name}, {len(s.params)} parameters)")


@app.command("sample")
def spaces_sample(
    space: SpaceArg,
    n: Annotated[int, typer.Option("-n", "--n", min=1, max=100_000, help="How many samples.")] = 8,
    seed: Annotated[
        int, typer.Option(min=0, max=2**32 - 1, help="Seed of Optuna's RandomSampler: same seed, same samples.")
    ] = 0,
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
            si(c["params"]),
            si(c["non_embedding_params"]),
            si(c["flops_per_token"]),
            f"{c['kv_cache_bytes_per_token']:,.0f}",
            sample.arch.arch_hash()[:8],
        )
    console.print(table)
