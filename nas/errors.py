"""Errors for bad user input: they name the file and the key path, and the CLI exits 2 on them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class NasInputError(Exception):
    """Bad user input (a file, a key, a value). Carries every problem found, each with its key path.

    ``str(error)`` is the message a person reads: one line per problem, each naming the file and
    the key path, e.g. ``search_spaces/x.yaml: parameters.n_layers.low: must be <= high (8 > 4)``.
    """

    def __init__(self, source: str | Path | None, problems: Iterable[tuple[str, str]] | str):
        self.source = str(source) if source is not None else None
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems: list[tuple[str, str]] = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for key, message in self.problems:
            where = ": ".join(part for part in (self.source, key) if part)
            lines.append(f"{where}: {message}" if where else message)
        return "\n".join(lines)


class StorageUnreachable(NasInputError):
    """A database storage that refused or lost the connection (it may be down, restarting, or the URL wrong):
    a worker started with ``--wait`` tries again for a while before it gives up."""


def a_number(value: Any) -> Any:
    """A pydantic before-validator for numbers in user files: YAML's true/false would otherwise pass as 1/0."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close candidate exists, else the empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def validation_problems(exc: Any, prefix: str = "", fields: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Turn a pydantic ``ValidationError`` into ``(key path, message)`` pairs.

    Unknown keys get a "did you mean" among ``fields``.
    """
    problems = []
    fields = list(fields)
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        path = ".".join(part for part in [prefix, *loc] if part)
        if error["type"] == "extra_forbidden":
            key = loc[-1] if loc else "?"
            allowed = ", ".join(fields)
            message = f"unknown key '{key}'{did_you_mean(key, fields)}; allowed keys: {allowed}"
        else:
            message = error["msg"]
            if error["type"] not in ("missing", "value_error") and "input" in error:
                message += f" (got {error['input']!r})"
            message = message.removeprefix("Value error, ")
        problems.append((path, message))
    return problems
