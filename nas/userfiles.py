"""The one place that reads user files: bytes to text in a stated encoding, and YAML with bounded size.

- Text is decoded strictly (UTF-8 unless the protocol names another ``encoding``); a file that does not
  decode is refused with its path, the byte offset and a hint, never a ``UnicodeDecodeError``.
- YAML is parsed safely, and its size after alias expansion and its nesting depth are bounded before a
  Python object is built: a 2 KB "billion laughs" file is refused in milliseconds instead of expanding
  into 10^9 nodes, and a self-referencing alias is refused instead of building a cycle.
- File lists may hold glob patterns (:func:`expand_paths`): ``books/*.txt`` reads every match, in order.
- User line patterns (regular expressions) are compiled and checked when the file loads, and matched
  with a time limit (catastrophic backtracking cannot stall a run).
"""

from __future__ import annotations

import codecs
import errno
import glob
import os
from pathlib import Path
from typing import Any

from nas.errors import NasInputError

__all__ = [
    "expand_paths",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "check_encoding",
    "check_file",
    "compile_line_pattern",
    "decode",
    "folder_problem",
    "match_lines",
    "parse_yaml",
    "parse_yaml_value",
    "read_text",
]

MAX_YAML_NODES = 100_000  # scalars + collections, counting every alias expansion
MAX_YAML_DEPTH = 64
MAX_YAML_CHARS = 1_000_000  # a space or protocol is a few KB
MATCH_SECONDS = 2.0  # a line pattern's total matching time per file
_CHUNK = 1 << 20


def check_encoding(encoding: str) -> str | None:
    """The problem with an ``encoding`` name, or None when Python knows it."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        return f"unknown encoding '{encoding}' (e.g. utf-8, utf-16, latin-1, cp1252)"
    return None


def _cannot_read(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    return f"cannot read: {exc.strerror or exc}"


def _fail(path: Path, source: str | None, key: str, message: str) -> NasInputError:
    """The error for a problem with ``path``: under the protocol's key when a protocol names it."""
    if source is None:
        return NasInputError(str(path), message)
    return NasInputError(
        source, [(key, f"no such file: {path}" if message == "no such file" else f"{path}: {message}")]
    )


GLOB_CHARS = frozenset("*?[")


def expand_paths(paths: list[str], source: str | None = None, key: str = "") -> list[str]:
    """The files ``paths`` names: an entry as written, or, when it holds a glob pattern (``*``, ``?``,
    ``[...]``; ``**`` for any depth), the files that match it in sorted order. A pattern that matches
    no file is a NasInputError naming ``key``; a plain entry is checked where it is read."""
    files: list[str] = []
    for entry in paths:
        if not GLOB_CHARS & set(entry) or Path(entry).is_file():  # a file named "notes[v2].txt" is itself
            files.append(entry)
            continue
        matches = sorted(p for p in glob.glob(entry, recursive=True) if Path(p).is_file())
        if not matches:
            raise _fail(Path(entry), source, key, "no file matches this pattern")
        files += matches
    return files


def folder_problem(path: str | Path, file: bool = False) -> str | None:
    """Why a folder (with ``file``, a file) cannot be written at ``path``, as '{path}: ...': it is a file, it lies
    under one, its first existing folder is not writable, or the path is not usable (a name too long); None when
    it can be (its folders existing or made when missing). Nothing is created or removed."""
    path = Path(path)
    start = path.parent if file else path
    try:
        for part in (start, *start.parents):
            if part.is_dir():
                if not os.access(part, os.W_OK | os.X_OK):
                    return f"{path}: cannot write in {part} (permission denied)"
                return None
            if part.exists() or part.is_symlink():
                where = "is a file, not a folder" if part == path else f"lies under {part}, which is a file"
                return f"{path}: {where}; give a {'file in a ' if file else ''}folder (made if missing)"
    except OSError as exc:  # a name too long, a loop of links
        return f"{path}: not a usable path ({exc.strerror or exc})"
    return None


def check_file(path: str | Path, source: str | None = None, key: str = "") -> Path:
    """``path`` as a Path when it is a readable regular file; else a NasInputError naming it (and ``key``)."""
    path = Path(path)
    try:
        ok = path.is_file()
    except OSError as exc:
        raise _fail(path, source, key, _cannot_read(path, exc)) from None
    if not ok:
        raise _fail(path, source, key, "is a folder, not a file" if path.is_dir() else "no such file")
    return path


def decode(
    data: bytes, encoding: str, path: str | Path, source: str | None = None, key: str = "", base: int = 0
) -> str:
    """``data`` (the bytes of ``path`` from offset ``base``) as text; bytes that are not ``encoding`` are refused
    with their offset in the file."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        snippet = data[exc.start : exc.start + 4].hex(" ")
        hint = (
            "save the file as UTF-8, or name its encoding with the `encoding` key (e.g. latin-1)"
            if key
            else "save the file as UTF-8"
        )
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = "it looks like UTF-16: " + hint
        elif data[:2] == b"\x1f\x8b":
            hint = "it looks gzip-compressed: decompress it first"
        elif b"\x00" in data[:_CHUNK]:
            hint = "it looks binary (NUL bytes): " + hint
        message = f"not {encoding} text: byte {base + exc.start} (0x{snippet}) does not decode; {hint}"
        raise _fail(Path(path), source, key, message) from None


def read_text(path: str | Path, source: str | None = None, key: str = "", encoding: str = "utf-8") -> str:
    """The text of a user file, decoded strictly; every failure is a NasInputError naming the file."""
    path = check_file(path, source, key)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(path, source, key, _cannot_read(path, exc)) from None
    return decode(data, encoding, path, source, key)


def check_decodes(path: str | Path, source: str, key: str, encoding: str = "utf-8") -> None:
    """Refuse ``path`` (as :func:`decode` does) unless all of it decodes as ``encoding``; reads it in chunks."""
    path = check_file(path, source, key)
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                try:
                    decoder.decode(chunk, final=len(chunk) < _CHUNK)
                except UnicodeDecodeError as exc:
                    # exc.start counts from bytes the decoder still held from the previous chunk (< 4)
                    at = max(0, offset + exc.start - 4)
                    f.seek(at)
                    decode(f.read(16), encoding, path, source, key, base=at)
                    raise _fail(path, source, key, f"not {encoding} text near byte {offset + exc.start}") from None
                offset += len(chunk)
    except OSError as exc:
        raise _fail(path, source, key, _cannot_read(path, exc)) from None


# ---- YAML -----------------------------------------------------------------------------------
def _check_yaml_size(root: Any, source: str) -> None:
    """Refuse a composed YAML node graph whose expansion is too large or too deep, or that contains itself."""
    import yaml

    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            kids = children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_YAML_NODES:
                line = f" (at line {node.start_mark.line + 1})" if node.start_mark else ""
                raise NasInputError(
                    source, f"YAML expands to more than {MAX_YAML_NODES} values{line}: aliases (*name) nest too much"
                )
            if depth[key] > MAX_YAML_DEPTH:
                raise NasInputError(source, f"YAML nested more than {MAX_YAML_DEPTH} levels deep")
            continue
        if key in size:
            continue
        if key in on_path:
            raise NasInputError(source, "YAML alias refers to a collection that contains it (a cycle)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in children(node) if id(kid) not in size)


def _flow_depth(text: str) -> int:
    """The deepest nesting of [ and { (quotes ignored: an upper bound that only matters when absurd)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def _load(text: str, source: str) -> Any:
    """Bounded safe-load; raises NasInputError for the bounds and yaml.YAMLError for syntax."""
    import yaml

    if len(text) > MAX_YAML_CHARS:
        raise NasInputError(source, f"{len(text)} characters of YAML; at most {MAX_YAML_CHARS}")
    if _flow_depth(text) > 4 * MAX_YAML_DEPTH:  # PyYAML's scanner slows quadratically with [ { nesting
        raise NasInputError(source, f"YAML nested more than {MAX_YAML_DEPTH} levels deep")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml's parser where PyYAML has it: 5-10x faster
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_size(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise NasInputError(source, f"YAML nested more than {MAX_YAML_DEPTH} levels deep") from None
    except (OverflowError, ValueError) as exc:  # e.g. a timestamp or number PyYAML cannot build
        raise yaml.YAMLError(str(exc)) from None
    finally:
        loader.dispose()


def parse_yaml(text: str, source: str) -> Any:
    """Safe-load one YAML document with bounded expansion and depth; a syntax error names the line and column."""
    import yaml

    try:
        return _load(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise NasInputError(source, f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def parse_yaml_value(text: str, source: str) -> Any:
    """A command-line value read as YAML (``--set k=[1, 2]``), or the text itself when it is not valid YAML;
    the same bounds as :func:`parse_yaml`."""
    import yaml

    try:
        return _load(text, source)
    except yaml.YAMLError:
        return text


# ---- line patterns --------------------------------------------------------------------------
def compile_line_pattern(pattern: str, groups: tuple[str, ...]) -> Any:
    """``pattern`` compiled (the ``regex`` module, for match time limits); ValueError names what is wrong."""
    import regex

    try:
        compiled = regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    missing = [g for g in groups if g not in compiled.groupindex]
    if missing:
        wanted = " and ".join(f"(?P<{g}>...)" for g in groups)
        raise ValueError(f"needs named groups {wanted}; missing: {', '.join(missing)}")
    return compiled


def match_lines(compiled: Any, lines: list[str], path: str, source: str, key: str) -> list[Any]:
    """The match of ``compiled`` at the start of each line (None where it does not match), within a time limit."""
    import time

    deadline = time.monotonic() + MATCH_SECONDS
    out = []
    for number, line in enumerate(lines, 1):
        left = deadline - time.monotonic()
        try:
            out.append(compiled.match(line, timeout=max(left, 0.001)))
        except TimeoutError:
            raise NasInputError(
                source,
                [
                    (
                        key,
                        f"matching {path} took over {MATCH_SECONDS:g} s (line {number}): the pattern backtracks "
                        "catastrophically; avoid nested repetition such as (a+)+",
                    )
                ],
            ) from None
    return out
