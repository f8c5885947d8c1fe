"""Find shipped search spaces and trial protocols, by name or path, from any working directory.

In a wheel they are package data (``nas/search_spaces``, ``nas/trials``); in a source checkout or
an editable install they are the top-level ``search_spaces/`` and ``trials/`` folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.errors import NasInputError, did_you_mean

__all__ = ["shipped_dir", "shipped_names", "resolve", "read_text", "parse_yaml"]

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path | None:
    """The folder of shipped ``kind`` files ("search_spaces" or "trials"), if any."""
    for candidate in (_PACKAGE / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    return None


def shipped_names(kind: str) -> list[str]:
    folder = shipped_dir(kind)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder else []


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """A path to an existing file: ``name_or_path`` itself, or the shipped file of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    folder = shipped_dir(kind)
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    if folder is not None and path.parent == Path(".") and (folder / f"{stem}.yaml").is_file():
        return folder / f"{stem}.yaml"
    names = shipped_names(kind)
    what = "search space" if kind == "search_spaces" else "trial protocol"
    hint = did_you_mean(stem, names)
    raise NasInputError(
        str(name_or_path),
        f"no such file, and no shipped {what} of that name{hint}; shipped: {', '.join(names) or 'none'}",
    )


def read_text(kind: str, name_or_path: str | Path) -> tuple[Path, str]:
    """The resolved path of a shipped name or file, and its text."""
    path = resolve(kind, name_or_path)
    try:
        return path, path.read_text()
    except OSError as exc:
        raise NasInputError(path, f"cannot read: {exc.strerror}") from None


def parse_yaml(text: str, source: str) -> Any:
    """Safe-load YAML; a syntax error names the file, line and column."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise NasInputError(source, f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
