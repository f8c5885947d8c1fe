"""Shipped spaces and protocols resolve by name from any directory, also after a non-editable install."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_editable_install_ships_spaces_and_protocols(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "nas/search_spaces/tiny.yaml").is_file() and (target / "nas/trials/cpu-tiny.yaml").is_file()
    code = (
        "import nas, nas.resources as r; from nas.space import load_space; from nas.protocol import load_protocol;"
        "print(nas.__file__); print(load_space('tiny').source); print(load_protocol('cpu-tiny').source)"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert all(line.startswith(str(target)) for line in out), out
