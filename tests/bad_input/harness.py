"""The bad-input contract, checked case by case (issue 15): a command given bad input ends with exit 2
(or 1 for a real runtime failure), one message naming the culprit, no traceback, in under 10 s.

Every table in this folder is a dict ``{case id: Case}``; ``check(case, capsys)`` runs it in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import run

LIMIT_S = 10.0


@dataclass(frozen=True)
class Case:
    """``argv`` for ``nas`` (``{path}`` in it is replaced by the file ``text`` or ``data`` is written to,
    ``{tmp}`` by the test's folder, also in ``text``), the exit code expected, and fragments the error must
    contain (both replaced too). ``setup(tmp)`` prepares more files."""

    argv: tuple[str, ...]
    culprit: tuple[str, ...]
    text: str | None = None
    data: bytes | None = None
    code: int = 2
    name: str = "input.yaml"
    setup: Callable[[Path], None] | None = field(default=None, compare=False)


def check(case: Case, tmp_path: Path, capsys) -> str:
    """Run ``case`` in ``tmp_path``; assert the contract; return stderr."""
    path = tmp_path / case.name
    if case.data is not None:
        path.write_bytes(case.data)
    elif case.text is not None:
        path.write_text(case.text.replace("{tmp}", str(tmp_path)))
    if case.setup is not None:
        case.setup(tmp_path)
    argv = [a.replace("{path}", str(path)).replace("{tmp}", str(tmp_path)) for a in case.argv]
    start = time.perf_counter()
    code, out, err = run(argv, capsys)
    seconds = time.perf_counter() - start
    assert seconds < LIMIT_S, f"{argv} took {seconds:.1f}s"
    assert "Traceback" not in out + err, err
    assert code == case.code, (argv, code, out[-2000:], err[-2000:])
    for fragment in case.culprit:
        fragment = fragment.replace("{path}", str(path)).replace("{tmp}", str(tmp_path))
        assert fragment in err, (fragment, err)
    return err
