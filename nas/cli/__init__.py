"""The `nas` command line: parse → call the library → render with rich. Exit 0 ok, 1 failure, 2 bad input.

One module per group of verbs: ``spaces`` and ``protocols`` (files), ``search`` (search, worker),
``results`` (status, dashboard, export, report), ``train``; ``common`` holds what they share.
"""

from __future__ import annotations

import errno
import sys
from typing import Annotated

import typer
from rich.markup import escape

from nas.cli import protocols, results, search, spaces, train
from nas.cli.common import console, err_console
from nas.errors import NasInputError

app = typer.Typer(
    help="nas: find the best Transformer LM architecture for a compute budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: it wraps at any width instead of cutting option names
)
app.add_typer(spaces.app, name="spaces")
app.add_typer(protocols.app, name="protocols")
# the group's first name: kept for users' scripts and hidden from the help
app.add_typer(protocols.app, name="trials", hidden=True)


def _version(value: bool) -> None:
    if value:
        from nas import __version__

        console.print(f"nas {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """nas: find the best Transformer LM architecture for a compute budget."""


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
        app(args=_renamed(sys.argv[1:] if argv is None else argv))
    except NasInputError as exc:
        _refuse(str(exc))
    except OSError as exc:
        if exc.errno not in PATH_ERRORS or not exc.filename:
            raise
        _refuse(f"{exc.filename}: {exc.strerror}")  # a path the user gave that the system refuses


PROTOCOL_VERBS = ("search", "train")  # where --trial named the protocol (in export it is a trial number)


def _renamed(argv: list[str]) -> list[str]:
    """``--trial`` for a protocol became ``--protocol``: the old flag still works, with a one-line note."""
    if not argv or argv[0] not in PROTOCOL_VERBS or "--" in argv:
        return argv
    old = [a for a in argv if a == "--trial" or a.startswith("--trial=")]
    if old:
        err_console.print("note: --trial is now --protocol (the old name still works)", highlight=False)
    return ["--protocol" + a[len("--trial") :] if a in old else a for a in argv]


# A path the system refuses by its name or place (too long, under a file, not allowed, ...): bad input,
# wherever it is first touched. Other OS errors (a full disk mid-run, say) keep their traceback.
PATH_ERRORS = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.ELOOP, errno.EROFS, errno.ENOENT}


def _refuse(message: str) -> None:
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["app", "main", "console"]
