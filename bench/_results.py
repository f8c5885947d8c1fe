"""Append a benchmark's row to bench/RESULTS.md with machine, date and command."""

from __future__ import annotations

import datetime as dt
import os
import platform
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


def append(title: str, body: str) -> None:
    """Append a section: title, machine, date, the command that ran, then ``body`` (markdown)."""
    command = command_line()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title}\n\n- machine: {machine()}\n- date: {stamp}\n- command: `{command}`\n\n{body.strip()}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by the script it names.\n")
    with RESULTS.open("a") as f:
        f.write(section)
    print(section)


def record(title: str, body: str, no_record: bool) -> None:
    """Append to RESULTS.md, or with ``--no-record`` only print."""
    if no_record:
        print(body)
    else:
        append(title, body)
