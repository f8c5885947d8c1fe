"""Bad input to `nas search`, `nas worker` and the study name every command takes (issue 15): exit 2 naming
the flag or the name, no traceback, in seconds, refused before anything trains, and nothing written
outside --runs-dir (the run happens two folders down in the temporary directory, so `../../x` would land
inside it, where the test looks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input.harness import Case, check

RUNS = ("--runs-dir", "{tmp}/work/here/runs")
DRY = ("search", "--dry-run", *RUNS)


def search(*flags: str, culprit: str, dry: bool = True) -> Case:
    argv = (*DRY, *flags) if dry else ("search", *RUNS, "--n-trials", "1", *flags)
    return Case(argv, (culprit,))


BAD_NAMES = {
    "parent": "../../x",
    "dot-dot": "..",
    "dot": ".",
    "slash": "a/b",
    "absolute": "/tmp/x",
    "backslash": "a\\b",
    "empty": "",
    "dash first": "-x",
    "underscore first": "_x",
    "dot first": ".hidden",
    "space": "a b",
    "newline": "a\nb",
    "tab": "a\tb",
    "nul": "a\x00b",
    "too long": "x" * 101,
    "very long": "y" * 5000,
    "unicode letters": "名前",
    "accented": "étude",
    "colon": "a:b",
    "star": "a*b",
    "tilde": "~user",
    "dollar": "$HOME",
    "semicolon": "a;rm -rf x",
    "trailing dot-dot": "x..",
    "inner dot-dot": "a..b",
    "parent inside": "a/../b",
    "url": "sqlite:///x.db",
    "quote": "a'b",
}

CASES: dict[str, Case] = {}
for label, name in BAD_NAMES.items():
    CASES[f"--study {label}"] = search(f"--study={name}", culprit="--study")
for label in ("parent", "slash", "empty", "too long", "dot-dot"):
    name = BAD_NAMES[label]
    CASES[f"--study {label}, no dry run"] = search(f"--study={name}", culprit="--study", dry=False)
    CASES[f"--warm-start {label}"] = search(f"--warm-start={name}", culprit="--warm-start")
    CASES[f"worker --study {label}"] = Case(("worker", f"--study={name}", *RUNS), ("--study",))
    CASES[f"status {label}"] = Case(("status", *RUNS, "--", name), ("STUDY",))
for command in ("export", "report"):
    extra = ("--best",) if command == "export" else ()
    CASES[f"{command} parent"] = Case((command, *RUNS, *extra, "--", "../../x"), ("STUDY", "'..'"))

NUMBERS = {
    "--seed": ["-1", "4294967296", str(10**30), "abc", "1.5", ""],
    "--n-trials": ["0", "-1", "1000001", "1000000000", "abc", "1e3"],
    "--workers": ["0", "-1", "129", "1000000", "x"],
    "--timeout": ["0", "-5", "nan", "inf", "abc"],
    "--heartbeat": ["0", str(10**20)],
    "--checkpoint-every": ["-1", str(10**12)],
}
for flag, values in NUMBERS.items():
    for value in values:
        CASES[f"{flag} {value[:12]!r}"] = search(flag, value, culprit=flag)
CASES["--seed -1, no dry run"] = search("--seed", "-1", culprit="--seed", dry=False)
CASES["--workers 0, no dry run"] = search("--workers", "0", culprit="--workers", dry=False)
CASES["--grace not above --heartbeat"] = search("--heartbeat", "5", "--grace", "5", culprit="--grace")
CASES["--devices letters"] = search("--devices", "a,b", culprit="--devices")
CASES["--devices only commas"] = search("--devices", ",,", culprit="--devices")
CASES["--workers-per-device without --devices"] = search("--workers-per-device", "2", culprit="--workers-per-device")
CASES["--workers-per-device 0"] = search("--devices", "0", "--workers-per-device", "0", culprit="--workers-per-device")
CASES["--workers-per-device past 128 workers"] = search(
    "--devices", "0,1,2", "--workers-per-device", "64", culprit="--devices"
)
CASES["--devices 200 of them"] = search("--devices", ",".join(str(i) for i in range(200)), culprit="--devices")
# A protocol the space cannot run (gpu-files's 1024-token windows, tiny's max_seq_len 256) is refused by a dry run
# too, not estimated: the search it plans would stop at its first step.
CASES["gpu-files on tiny, dry run"] = search(
    "--trial", "gpu-files", culprit="pretrain.seq_len: 1024 exceeds max_seq_len 256"
)
CASES["seq_len past the space, dry run"] = search(
    "--set", "pretrain.seq_len=512", culprit="pretrain.seq_len: 512 exceeds max_seq_len 256"
)
CASES["worker --n-trials 0"] = Case(("worker", "--study", "s", *RUNS, "--n-trials", "0"), ("--n-trials",))
CASES["worker --n-trials huge"] = Case(("worker", "--study", "s", *RUNS, "--n-trials", "99999999"), ("--n-trials",))
CASES["worker --timeout nan"] = Case(("worker", "--study", "s", *RUNS, "--timeout", "nan"), ("--timeout",))
CASES["worker --device two of them"] = Case(("worker", "--study", "s", *RUNS, "--device", "0,1"), ("--device",))
CASES["worker --device letters"] = Case(("worker", "--study", "s", *RUNS, "--device", "gpu"), ("--device: 'gpu'",))
CASES["worker --sharing alone"] = Case(("worker", "--study", "s", *RUNS, "--sharing", "2"), ("--sharing",))
CASES["worker --sharing 0"] = Case(("worker", "--study", "s", *RUNS, "--device", "0", "--sharing", "0"), ("--sharing",))


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_bad_search_input(case: Case, tmp_path: Path, capsys, monkeypatch) -> None:
    here = tmp_path / "work" / "here"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    check(case, tmp_path, capsys)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [], written  # refused before anything was written, inside --runs-dir or out


def test_every_problem_of_a_command_line_at_once(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ("search", "--dry-run", "--seed", "-1", "--n-trials", "0", "--workers", "0", "--study", "../x")
    err = check(Case(argv, ("--seed", "--n-trials", "--workers", "--study")), tmp_path, capsys)
    assert len(err.strip().splitlines()) == 4, err


def test_a_dry_run_of_a_million_trials_is_quick(tmp_path: Path, capsys, monkeypatch) -> None:
    """The largest --n-trials allowed: the estimate samples at most 100 architectures and scales."""
    from tests.conftest import run

    monkeypatch.chdir(tmp_path)
    code, out, err = run(["search", "--dry-run", "--n-trials", "1000000"], capsys)
    assert code == 0, err
    assert "1,000,000 trials, estimated from 100 sampled architectures" in out
    assert not (tmp_path / "runs").exists()
