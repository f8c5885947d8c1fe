"""bench/load.py, the load and fault harness (issue 33), run small: real `nas worker` processes with the
stand-in trial, a worker killed mid-trial and restarted, and the figures read back from the storage."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_killed_workers_lose_no_trial_on_a_journal(tmp_path):
    out = tmp_path / "load.jsonl"
    argv = [sys.executable, str(BENCH / "load.py"), "--storage", "journal", "--workers", "3", "--n-trials", "12"]
    argv += ["--seconds", "1,2", "--faults", "kill", "--kill-every", "3", "--grace", "10", "--heartbeat", "2"]
    done = subprocess.run([*argv, "--limit", "240", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text().splitlines()[-1])
    assert any("kill -9" in e for e in figures["events"]), figures["events"]
    assert figures["trained"] == 12 and figures["lost"] == 0 and figures["doubled"] == 0
    assert figures["stuck_running"] == 0 and figures["told_after_failed"] == 0
    assert figures["restarts"] >= 1 and figures["exits"] == {"0": 3}


def test_the_stand_in_is_reachable_only_from_the_bench():
    """No nas command or flag selects the stand-in trial: nothing in the package names it."""
    package = Path(__file__).resolve().parents[1] / "nas"
    assert not [p for p in package.rglob("*.py") if "_load_standin" in p.read_text() or "stand_in" in p.read_text()]
