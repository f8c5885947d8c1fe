"""Find shipped search spaces and trial protocols, by name or path, from any working directory.

In a wheel they are package data (``nas/search_spaces``, ``nas/trials``); in a source checkout or
an editable install they are the top-level ``search_spaces/`` and ``trials/`` folders.
"""

from __future__ import annotations

from pathlib import Path

from nas.errors import NasInputError, did_you_mean
from nas.userfiles import check_file
from nas.userfiles import read_text as read_user_text

__all__ = ["shipped_dir", "shipped_names", "is_shipped", "resolve", "read_text"]

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


def is_shipped(kind: str, path: str | Path) -> bool:
    """Whether ``path`` is one of the shipped ``kind`` files (not a user's file of the same name)."""
    folder = shipped_dir(kind)
    try:
        return folder is not None and Path(path).resolve().parent == folder.resolve()
    except OSError:
        return False


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """A path to an existing file: ``name_or_path`` itself, or the shipped file of that name."""
    path = Path(name_or_path)
    try:
        if path.is_file():
            return path
        exists = path.exists()
    except OSError:
        exists = True
    if exists:
        return check_file(path)  # says what is wrong: a folder, a name too long, ...
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
    return path, read_user_text(path)
