"""The `nas` command line: parse → call the library → render with rich. Exit 0 ok, 1 failure, 2 bad input.

One module per group of verbs: ``spaces`` and ``trials`` (files), ``search`` (search, worker),
``results`` (status, dashboard, export, report), ``train``; ``common`` holds what they share.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from nas.cli import results, search, spaces, train, trials
from nas.cli.common import console, err_console
from nas.errors import NasInputError

app = typer.Typer(
    help="nas: find the best Transformer LM architecture for a compute budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(spaces.app, name="spaces")
app.add_typer(trials.app, name="trials")
search.register(app)
train.register(app)
results.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: bad input ends with one clear message and exit code 2, no traceback.

    Typer's standalone mode already exits 2 on usage errors; the library's NasInputError is turned
    into the same here.
    """
    from nas.cpu import configure

    configure()  # torch's CPU threads and OpenMP wait policy: before anything imports torch (see nas/cpu.py)
    try:
        app(args=argv)
    except NasInputError as exc:
        err_console.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True
        )
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["app", "main", "console"]
