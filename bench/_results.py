"""Append a benchmark's row to bench/RESULTS.md with machine, date and command."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores {cpu}; {gpu}; torch {torch.__version__}"


# Runs trained before this moment (the ground truth's first session) ran on this machine; their JSON records
# predate the per-run "machine" field. Different CPUs give different floating-point rounding, so the same
# run differs across machines by about a seed's spread (e.g. 5.7947 vs 5.7596 for one T run): every run
# records where it ran.
FIRST_MACHINE = ("2026-11-29T11:28", "2 cores Intel(R) Xeon(R) Processor; no GPU; torch 2.13.0+cpu")


def stamp_machines(runs: dict) -> None:
    """Give every run record without a ``machine`` the machine it ran on: FIRST_MACHINE's before its cut-off
    (by the record's ``finished`` time), else this one (records are stamped when first saved here)."""
    here = None
    for run in runs.values():
        if "machine" not in run:
            if run.get("finished", "") < FIRST_MACHINE[0]:
                run["machine"] = FIRST_MACHINE[1]
            else:
                here = here or machine()
                run["machine"] = here


def command_line() -> str:
    """The command that runs this script as it ran, quoted so that it pastes back into a shell."""
    return "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


HISTORY = RESULTS.parent / "history"
HEADER = (
    "# Benchmark results\n\nThe current section of each bench, written by the script it names (`--record`); "
    "a bench's earlier sections are kept, unchanged, in `bench/history/<bench>.md`.\n"
)


def bench_of(title: str) -> str:
    """The bench a section belongs to: the first name of its title (``gt_iso: ...`` -> ``gt_iso``)."""
    return re.match(r"[A-Za-z0-9_]+", title.strip()).group(0)  # type: ignore[union-attr]


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(the text before the first section, [(title, section text with its heading)])."""
    parts = re.split(r"(?m)^(?=## )", text)
    head, sections = parts[0], []
    for part in parts[1:]:
        title = part.split("\n", 1)[0][3:]
        sections.append((title, part.rstrip("\n") + "\n"))
    return head, sections


def _to_history(title: str, section: str) -> None:
    HISTORY.mkdir(exist_ok=True)
    path = HISTORY / f"{bench_of(title)}.md"
    if not path.exists():
        path.write_text(f"# {bench_of(title)}: earlier sections, oldest first\n")
    with path.open("a") as f:
        f.write("\n" + section)


def append(title: str, body: str) -> None:
    """Record a section: title, machine, date, the command that ran, then ``body`` (markdown). It takes the
    place of the bench's current section in RESULTS.md, which moves, unchanged, to bench/history/."""
    command = command_line()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## {title}\n\n- machine: {machine()}\n- date: {stamp}\n- command: `{command}`\n\n{body.strip()}\n"
    head, sections = split_sections(RESULTS.read_text()) if RESULTS.exists() else (HEADER, [])
    bench, placed = bench_of(title), False
    out = []
    for old_title, old in sections:
        if bench_of(old_title) == bench:
            _to_history(old_title, old)
            if not placed:
                out.append(section)
                placed = True
        else:
            out.append(old)
    if not placed:
        out.append(section)
    RESULTS.write_text(head.rstrip("\n") + "\n\n" + "\n".join(out))
    print(section)


def tidy() -> None:
    """Once: keep each bench's last section in RESULTS.md (in the order of those), the rest to history/."""
    head, sections = split_sections(RESULTS.read_text())
    last = {bench_of(t): i for i, (t, _) in enumerate(sections)}
    keep = []
    for i, (title, section) in enumerate(sections):
        if last[bench_of(title)] == i:
            keep.append(section)
        else:
            _to_history(title, section)
    RESULTS.write_text(HEADER + "\n" + "\n".join(keep))


def record(title: str, body: str, no_record: bool) -> None:
    """Append to RESULTS.md, or with ``--no-record`` only print."""
    if no_record:
        print(body)
    else:
        append(title, body)


if __name__ == "__main__":
    if sys.argv[1:] == ["--tidy"]:
        tidy()
