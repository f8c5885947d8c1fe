"""What every command shares: the consoles, the common options, progress bars and small renderers."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nas.errors import NasInputError, did_you_mean

console = Console()
err_console = Console(stderr=True)


def choice(flag: str, values: tuple[str, ...], help: str) -> Any:
    """An option over a Literal's ``values``: `--help` lists them, and a wrong value is bad input
    ("FLAG: unknown 'x' (did you mean 'y'?); one of ...", exit 2), like every other."""

    def parse(value: str) -> str:
        if value not in values:
            raise NasInputError(flag, f"unknown '{value}'{did_you_mean(value, values)}; one of {', '.join(values)}")
        return value

    return typer.Option(parser=parse, metavar=f"[{'|'.join(values)}]", help=help)


ProtocolArg = Annotated[str, typer.Argument(help="A shipped protocol name (see `nas protocols list`) or a YAML file.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a protocol key: --set pretrain.budget.tokens=50000")
]
SpaceArg = Annotated[str, typer.Argument(help="A shipped space name (see `nas spaces list`) or a YAML file.")]
StudyArg = Annotated[str | None, typer.Argument(help="Study name (default: the newest in runs/).")]
RunsOption = Annotated[Path, typer.Option("--runs-dir", help="Where run folders (runs/<study>/) live.")]
StorageOption = Annotated[
    str | None,
    typer.Option(help="Optuna storage URL: sqlite:///PATH, postgresql://..., mysql://..., journal:PATH."),
]


def si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def list_shipped(kind: str, title: str, load: Callable[[str], Any]) -> None:
    """A table of the shipped files of ``kind`` with their descriptions."""
    from nas.resources import shipped_dir, shipped_names

    table = Table(title=f"{title} ({shipped_dir(kind)})")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name in shipped_names(kind):
        table.add_row(name, " ".join(load(name).description.split()))
    console.print(table)


def validate_each(files: list[str], load: Callable[[str], Any], describe: Callable[[Any], str]) -> None:
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


def progress_bars(quiet: bool) -> Progress:
    """A rich progress display: description, bar, m/n, elapsed, and a free-text info field."""
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


class LogFile:
    """Time-stamped lines appended to a file, echoed dim on the console unless ``quiet``."""

    def __init__(self, path: Path | None, quiet: bool, echo: Console = console) -> None:
        self.quiet = quiet
        self.echo = echo
        self.file: TextIO | None = None
        self.failing = False
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = path.open("a")

    def __call__(self, line: str) -> None:
        if self.file is not None:
            try:
                self.file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
                self.file.flush()
            except OSError as exc:  # a full disk: the search goes on, the line goes to the console
                if not self.failing:
                    err_console.print(
                        f"log file {self.file.name}: {exc.strerror or exc}; lines not kept", highlight=False
                    )
                self.failing = True
            else:
                self.failing = False
        if not self.quiet:
            self.echo.print(f"[dim]{escape(line)}[/dim]", highlight=False)


def command_line() -> str:
    return " ".join(sys.argv[1:])
