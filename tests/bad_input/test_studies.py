"""Studies with damaged trial attributes: `nas status` lists the damaged trial with its cause and ranks the
rest, `nas report` lists it among the failures, `nas export --best` skips it with a note and
`nas export --trial N` of it exits 2 naming the trial. Also: output paths of `nas export` and `nas report`
that are, or lie under, a file (exit 2, the file left as it was) and `nas dashboard --port` out of range.

One study (five trials, no training) is written once per module; each case damages a copy of its
database with sqlite, as a hand edit or a broken tool would.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from tests.bad_input.harness import LIMIT_S, Case, check
from tests.conftest import MICRO_OVERRIDES, MICRO_SPACE, run

NAME = "dmg"
DAMAGED = 1  # the best trial by value: every case damages it
ARCHS = [
    {"vocab_size": 512, "max_seq_len": 64, "n_layers": n, "d_model": 32, "n_heads": 2, "ffn_dim": 64} for n in (1, 2, 3)
]


def _attrs(arch: dict, loss: float, status: str = "trained", **extra) -> dict:
    """A trial's user attributes as nas.search.records writes them."""
    from nas.arch import ArchConfig

    config = ArchConfig(**arch)
    return {
        "arch": config.to_dict(),
        "arch_hash": config.arch_hash(),
        "summary": config.summary(),
        **config.counts(),
        "nas_status": status,
        "metrics": {"val_loss": loss, "tokens_trained": 16384, "qa.f1": 0.25, "weird": "nan"},
        "task_baselines": {"qa.f1": 0.07},
        "baseline_predictors": {"qa.f1": "first 2 words"},
        "curve": [[0, 0, 6.0], [8, 4096, loss + 0.5], [16, 8192, loss]],
        "annealed": [[4096, loss + 0.4], [8192, loss]],
        "wall_seconds": 12.5,
        "phase_seconds": {"pretrain": 10.0, "other": 2.5},
        "cause": None,
        **extra,
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory, micro_cache) -> Path:
    """runs/dmg/study.db: trials 0-2 trained (1 the best), 3 pruned, 4 failed."""
    from nas.data.tokens import prepare_tokens
    from nas.protocol import load_protocol
    from nas.search.storage import study_metadata
    from nas.space import parse_space

    root = tmp_path_factory.mktemp("studies")
    folder = root / "runs" / NAME
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name=NAME, storage=f"sqlite:///{folder}/study.db", direction="minimize")
    space = parse_space(MICRO_SPACE, source="micro.yaml", feasibility_probe=0)
    protocol = load_protocol("cpu-tiny", [f"cache_dir={micro_cache}", *MICRO_OVERRIDES, "tasks=[]"])
    for key, value in study_metadata(space, protocol).items():
        study.set_user_attr(key, value)
    prepare_tokens(protocol)  # the tokenizer an export saves, trained here once (it takes seconds)
    for loss, arch in ((3.0, ARCHS[0]), (2.0, ARCHS[1]), (2.5, ARCHS[2])):
        study.add_trial(create_trial(value=loss, user_attrs=_attrs(arch, loss)))
    pruned = _attrs(ARCHS[0], 4.0, cause="pruned at step 8", resumed_from_step=8)
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs=pruned))
    failed = {"nas_status": "failed", "cause": "exception: ValueError: x", "traceback": "line\nraise X"}
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs=failed, system_attrs={"retry_history": [0]}))
    return folder / "study.db"


def damage(db: Path, key: str, value_json: str | None, number: int = DAMAGED, table: str = "user") -> None:
    """Replace trial ``number``'s attribute ``key`` by the raw ``value_json`` (None: remove it)."""
    with sqlite3.connect(db) as con:
        (trial_id,) = con.execute("SELECT trial_id FROM trials WHERE number = ?", (number,)).fetchone()
        con.execute(f"DELETE FROM trial_{table}_attributes WHERE trial_id = ? AND key = ?", (trial_id, key))
        if value_json is not None:
            con.execute(
                f"INSERT INTO trial_{table}_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
                (trial_id, key, value_json),
            )
    con.close()


def copy_of(template: Path, tmp: Path) -> Path:
    db = tmp / "runs" / NAME / "study.db"
    db.parent.mkdir(parents=True)
    shutil.copy(template, db)
    return db


def ok(argv: list[str], capsys) -> tuple[str, str]:
    """`nas ARGV` in-process: exit 0, no traceback, in time; (stdout, stderr)."""
    start = time.perf_counter()
    code, out, err = run(argv, capsys)
    assert time.perf_counter() - start < LIMIT_S, argv
    assert "Traceback" not in out + err, err
    assert code == 0, (argv, code, out[-2000:], err[-2000:])
    return out, err


# ---- damaged user attributes: (key, stored JSON or None to remove it, what the cause names) -------------
def j(value) -> str:
    return json.dumps(value)


ARCH_BAD_KNOB = {**ARCHS[1], "n_layers": "many"}
USER_DAMAGES: dict[str, tuple[str, str | None, str]] = {
    "arch a string": ("arch", j("{garbage"), "arch: must be a mapping of architecture knobs"),
    "arch a list": ("arch", j([1, 2]), "arch: must be a mapping"),
    "arch a number": ("arch", j(42), "arch: must be a mapping"),
    "arch nested values": ("arch", j({"n_layers": [1, 2]}), "arch: must be a mapping"),
    "arch a bad knob": ("arch", j(ARCH_BAD_KNOB), "arch: not a valid architecture (n_layers"),
    "arch an unknown knob": ("arch", j({**ARCHS[1], "bogus": 1}), "arch: not a valid architecture (bogus"),
    "arch a knob missing": ("arch", j({"n_layers": 2}), "arch: not a valid architecture"),
    "arch empty": ("arch", j({}), "arch: not a valid architecture"),
    "arch removed": ("arch", None, "arch: missing"),
    "arch null": ("arch", "null", "arch: missing"),
    "nas_status a number": ("nas_status", j(7), "nas_status: must be one of trained"),
    "nas_status unknown": ("nas_status", j("bogus"), "nas_status: must be one of"),
    "metrics a string": ("metrics", j("{not json"), "metrics: must be a mapping"),
    "metrics a list": ("metrics", j([1, 2]), "metrics: must be a mapping"),
    "metrics a nested value": ("metrics", j({"val_loss": {"x": 1}}), "metrics: must be a mapping"),
    "params a string": ("params", j("many"), "params: must be a finite number"),
    "params infinite": ("params", "Infinity", "params: must be a finite number"),
    "params true": ("params", "true", "params: must be a finite number"),
    "flops_per_token NaN": ("flops_per_token", "NaN", "flops_per_token: must be a finite number"),
    "curve a string": ("curve", j("garbage"), "curve: must be a list of [step, tokens, val_loss] rows"),
    "curve ragged rows": ("curve", j([[1, 2]]), "curve: must be a list"),
    "curve strings": ("curve", j([["a", "b", "c"]]), "curve: must be a list"),
    "annealed a mapping": ("annealed", j({"x": 1}), "annealed: must be a list of [tokens, val_loss] rows"),
    "wall_seconds a string": ("wall_seconds", j("soon"), "wall_seconds: must be a number of seconds"),
    "wall_seconds negative": ("wall_seconds", j(-5), "wall_seconds: must be a number of seconds"),
    "phase_seconds a list": ("phase_seconds", j([1]), "phase_seconds: must be a mapping"),
    "phase_seconds strings": ("phase_seconds", j({"pretrain": "long"}), "phase_seconds: must be a mapping"),
    "task_baselines strings": ("task_baselines", j({"qa.f1": "high"}), "task_baselines: must be a mapping"),
    "baseline_predictors numbers": ("baseline_predictors", j({"qa.f1": 3}), "baseline_predictors: must be"),
    "summary a number": ("summary", j(12), "summary: must be a string"),
    "arch_hash a list": ("arch_hash", j(["a"]), "arch_hash: must be a string"),
    "cause a list": ("cause", j(["a"]), "cause: must be a string"),
    "traceback a number": ("traceback", j(3), "traceback: must be a string"),
    "resumed_from_step a string": ("resumed_from_step", j("8"), "resumed_from_step: must be a step number"),
    "retry_of negative": ("retry_of", j(-1), "retry_of: must be a trial number"),
    "duplicate_of a float": ("duplicate_of", j(1.5), "duplicate_of: must be a trial number"),
    "artifact_weights a number": ("artifact_weights", j(5), "artifact_weights: must be an artifact id"),
}


@pytest.mark.parametrize("name", list(USER_DAMAGES))
def test_status_lists_a_damaged_trial_with_its_cause(name, template, tmp_path, capsys, monkeypatch):
    from nas import cli

    key, value, cause = USER_DAMAGES[name]
    damage(copy_of(template, tmp_path), key, value)
    argv = ["status", NAME, "--runs-dir", str(tmp_path / "runs")]
    trials = {t["number"]: t for t in json.loads(ok([*argv, "--json"], capsys)[0])["trials"]}
    assert any(cause in d for d in trials[DAMAGED]["damage"]), trials[DAMAGED]
    assert trials[DAMAGED]["cause"].startswith("damaged: ") and trials[DAMAGED]["rank"] is None
    assert [trials[n]["rank"] for n in (2, 0)] == [1, 2]  # the rest of the study ranks as before
    assert all(not trials[n]["damage"] for n in (0, 2, 3, 4))
    monkeypatch.setattr(cli.console, "width", 400)
    out, _ = ok(argv + ["--all"], capsys)
    assert "damaged: " in out and "best: trial 2:" in out


ONE_PER_KEY: dict[str, str] = {}  # key: the first damage of it
for _name, (_key, _, _) in USER_DAMAGES.items():
    ONE_PER_KEY.setdefault(_key, _name)


@pytest.mark.parametrize("name", list(ONE_PER_KEY.values()))
def test_export_of_the_damaged_trial_names_it(name, template, tmp_path, capsys):
    key, value, cause = USER_DAMAGES[name]
    damage(copy_of(template, tmp_path), key, value)
    argv = ("export", NAME, "--trial", str(DAMAGED), "-o", "{tmp}/out", "--runs-dir", "{tmp}/runs")
    check(Case(argv, ("--trial", f"trial {DAMAGED} cannot be exported: damaged: ", cause)), tmp_path, capsys)
    assert not (tmp_path / "out").exists()


WORKER_READS = [n for n in USER_DAMAGES if n.split()[0] in ("arch_hash", "nas_status", "curve", "annealed", "params")]


@pytest.mark.parametrize("name", WORKER_READS)
def test_a_worker_reads_the_damaged_study(name, template, tmp_path):
    """What `nas worker` reads of the other trials (dedupe, retries, the curve pruner, the prediction's fit)
    goes through nas.search.records and takes a damaged value as absent."""
    from nas.scaling import fit_beta
    from nas.search.records import (
        arch_hash_of,
        is_enqueued,
        is_trained,
        requeue_attrs,
        retry_of,
        status_of,
        study_records,
    )
    from nas.search.samplers import CurvePruner

    key, value, _ = USER_DAMAGES[name]
    damage(db := copy_of(template, tmp_path), key, value)
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{db}")
    trials = study.get_trials()
    for t in trials:
        assert arch_hash_of(t) is None or isinstance(arch_hash_of(t), str)
        assert status_of(t) is None or isinstance(status_of(t), str)
        is_trained(t), retry_of(t), is_enqueued(t), requeue_attrs(t, retry=True)
    others = [r.annealed for r in study_records(study) if r.trained and len(r.annealed) >= 2]
    assert len(others) >= 3 and fit_beta(others).beta > 0
    for kind in ("median", "sha"):
        pruner = CurvePruner(kind=kind, n_startup_trials=1, min_resource=8, cost_names=("params",))
        assert pruner.should_prune(trials, 99, 16, 9.0, set(), {"params": 1e12})  # worse than every other curve


@pytest.mark.parametrize("name", ["arch a string", "arch removed", "metrics a list", "params infinite"])
def test_export_best_skips_the_damaged_trial_with_a_note(name, template, tmp_path, capsys):
    key, value, cause = USER_DAMAGES[name]
    damage(copy_of(template, tmp_path), key, value)
    _, err = ok(["export", NAME, "--best", "-o", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")], capsys)
    assert f"trial {DAMAGED} skipped: damaged: " in err and cause in err
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["trial"] == 2


@pytest.mark.parametrize("name", ["arch a bad knob", "metrics a nested value", "curve ragged rows", "params a string"])
def test_report_lists_the_damaged_trial_among_the_failures(name, template, tmp_path, capsys):
    import html

    key, value, cause = USER_DAMAGES[name]
    damage(copy_of(template, tmp_path), key, value)
    out = tmp_path / "report.html"
    ok(["report", NAME, "-o", str(out), "--runs-dir", str(tmp_path / "runs")], capsys)
    failures = html.unescape(out.read_text().split("id='failures-and-stopped-trials'")[1])
    assert f"<tr><td>{DAMAGED}</td>" in failures and cause in failures
    assert "1 damaged" in out.read_text()  # the summary's count of trials by state


SYSTEM_DAMAGES = {
    "retry_history a string": ("retry_history", j("garbage"), 4),
    "retry_history negative": ("retry_history", j([-3]), 4),
    "failed_trial a string": ("failed_trial", j("x"), 2),
    "fixed_params a list": ("fixed_params", j([1]), 2),
}


@pytest.mark.parametrize("name", list(SYSTEM_DAMAGES))
def test_damaged_system_attributes_read(name, template, tmp_path, capsys):
    from nas.search.records import requeue_attrs, retry_of

    key, value, number = SYSTEM_DAMAGES[name]
    damage(copy_of(template, tmp_path), key, value, number=number, table="system")
    trials = json.loads(ok(["status", NAME, "--runs-dir", str(tmp_path / "runs"), "--json"], capsys)[0])["trials"]
    assert [t["number"] for t in trials if t["rank"]] == [1, 2, 0]
    frozen = optuna.load_study(study_name=NAME, storage=f"sqlite:///{tmp_path}/runs/{NAME}/study.db").trials[number]
    assert retry_of(frozen) is None
    assert requeue_attrs(frozen, retry=True)[1]["retry_history"][-1] == number  # what a worker requeues


# ---- stored JSON that Optuna itself cannot decode ------------------------------------------------------
@pytest.mark.parametrize("raw", ["{garbage", "", "[1, 2", "nan nan"])
def test_an_attribute_optuna_cannot_decode_leaves_the_rest_readable(raw, template, tmp_path):
    """The library side (status, report, export and a worker's reads go through these): the damaged trial
    is listed as unreadable. `nas status` itself needs nas.search.storage.find_study not to decode every
    trial (optuna.get_all_study_summaries does)."""
    from nas.errors import NasInputError
    from nas.report import build_report
    from nas.search import export_from_study, export_targets, leaderboard, study_records, trained_count

    db = copy_of(template, tmp_path)
    damage(db, "metrics", raw)
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{db}")
    with pytest.raises(ValueError):
        study.get_trials()
    records = study_records(study)
    assert [r.number for r in records] == [0, 1, 2, 3, 4] and records[DAMAGED].state == "?"
    assert "unreadable in storage (JSONDecodeError" in records[DAMAGED].damage[0]
    rows = leaderboard(study)
    assert [r.number for r in rows if r.rank] == [2, 0] and "unreadable" in rows[2].cause
    assert trained_count(study) == 3  # 0, 2 and the pruned 3
    assert export_targets(study, Path("out"), best=True) == [(2, Path("out"))]
    with pytest.raises(NasInputError, match=f"--trial: trial {DAMAGED} cannot be exported: damaged: unreadable"):
        export_from_study(study, DAMAGED, tmp_path / "out", tmp_path / "runs")
    report = build_report(study, tmp_path / "r.html")
    assert "unreadable in storage" in report.path.read_text()


def test_the_undamaged_study_reads_whole(template, tmp_path, capsys):
    """The control: nothing damaged, nothing noted, trial 1 ranks first and exports."""
    copy_of(template, tmp_path)
    trials = json.loads(ok(["status", NAME, "--runs-dir", str(tmp_path / "runs"), "--json"], capsys)[0])["trials"]
    assert [t["number"] for t in trials if t["rank"]] == [1, 2, 0] and not any(t["damage"] for t in trials)
    by_number = {t["number"]: t for t in trials}
    assert by_number[3]["cause"] == "pruned at step 8" and math.isclose(by_number[1]["metrics"]["val_loss"], 2.0)
    ok(["export", NAME, "--best", "-o", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")], capsys)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["trial"] == 1


# ---- output paths and ports ---------------------------------------------------------------------------
def _file(tmp: Path) -> None:
    (tmp / "file").write_text("keep me\n")
    (tmp / "folder").mkdir()
    (tmp / "old.html").write_text("<!DOCTYPE html>\n<html lang='en'><head><title>nas report: x</title>")


RUNS = ("--runs-dir", "{tmp}/runs")
OUTPUT_CASES = {
    "export -o a file": Case(
        ("export", NAME, "--best", "-o", "{tmp}/file", *RUNS), ("--out", "{tmp}/file", "is a file")
    ),
    "export -o under a file": Case(
        ("export", NAME, "--trial", "0", "-o", "{tmp}/file/x", *RUNS), ("--out", "{tmp}/file/x", "lies under")
    ),
    "export --pareto -o a file": Case(("export", NAME, "--pareto", "2", "-o", "{tmp}/file", *RUNS), ("--out",)),
    "export -o a name too long": Case(
        ("export", NAME, "--trial", "0", "-o", "{tmp}/" + "x" * 300, *RUNS), ("--out", "File name too long")
    ),
    "report -o a name too long": Case(("report", NAME, "-o", "{tmp}/" + "x" * 300, *RUNS), ("--out", "too long")),
    "report -o under a file": Case(
        ("report", NAME, "-o", "{tmp}/file/r.html", *RUNS), ("--out", "{tmp}/file/r.html", "lies under {tmp}/file")
    ),
    "report -o a file that is not a report": Case(
        ("report", NAME, "-o", "{tmp}/file", *RUNS), ("--out", "{tmp}/file", "is not a nas report")
    ),
    "report -o a folder": Case(("report", NAME, "-o", "{tmp}/folder", *RUNS), ("--out", "{tmp}/folder", "is a folder")),
    "report --png a file": Case(
        ("report", NAME, "-o", "{tmp}/r.html", "--png", "{tmp}/file", *RUNS), ("--png", "{tmp}/file", "is a file")
    ),
    "report --png under a file": Case(
        ("report", NAME, "-o", "{tmp}/r.html", "--png", "{tmp}/file/png", *RUNS), ("--png", "{tmp}/file/png")
    ),
    **{
        f"dashboard --port {port}": Case(("dashboard", NAME, "--port", port, *RUNS), ("--port",))
        for port in ("0", "-1", "65536", "99999999999999999999", "http")
    },
}


@pytest.mark.parametrize("name", list(OUTPUT_CASES))
def test_output_paths_and_ports(name, template, tmp_path, capsys):
    copy_of(template, tmp_path)
    _file(tmp_path)
    check(OUTPUT_CASES[name], tmp_path, capsys)
    assert (tmp_path / "file").read_text() == "keep me\n" and not (tmp_path / "r.html").exists()


def test_report_overwrites_an_earlier_report(template, tmp_path, capsys):
    copy_of(template, tmp_path)
    _file(tmp_path)
    ok(["report", NAME, "-o", str(tmp_path / "old.html"), "--runs-dir", str(tmp_path / "runs")], capsys)
    ok(["report", NAME, "-o", str(tmp_path / "old.html"), "--runs-dir", str(tmp_path / "runs")], capsys)
    assert "id='leaderboard-table'" in (tmp_path / "old.html").read_text()


STUDY_DAMAGES = {
    "objectives a number": ("nas.objectives", j(5), "nas.objectives: damaged (not a dict)"),
    "objectives a list": ("nas.objectives", j(["val_loss"]), "nas.objectives: damaged (not a dict)"),
    "protocol name a mapping": ("nas.protocol_name", j({"x": 1}), "nas.protocol_name: damaged (not a str)"),
    "version a number": ("nas.version", j(3), "nas.version: damaged (not a str)"),
    "search settings a string": ("nas.search", j("fast"), "nas.search: damaged (not a dict)"),
}


@pytest.mark.parametrize("name", STUDY_DAMAGES)
def test_damaged_study_metadata_is_noted_and_the_study_still_reads(name, template, tmp_path, capsys):
    """A study-level attribute of the wrong shape reads as absent: status names it and ranks the trials,
    the report and `export --best` still work."""
    key, raw, shown = STUDY_DAMAGES[name]
    db = copy_of(template, tmp_path)
    with sqlite3.connect(db) as con:
        (study_id,) = con.execute("SELECT study_id FROM studies").fetchone()
        con.execute("DELETE FROM study_user_attributes WHERE key = ?", (key,))
        insert = "INSERT INTO study_user_attributes (study_id, key, value_json) VALUES (?, ?, ?)"
        con.execute(insert, (study_id, key, raw))
    con.close()
    runs = ["--runs-dir", str(tmp_path / "runs")]
    out, _ = ok(["status", NAME, *runs], capsys)
    assert f"study metadata {shown}" in " ".join(out.split())
    trials = json.loads(ok(["status", NAME, *runs, "--json"], capsys)[0])["trials"]
    assert [t["number"] for t in trials if t["rank"]] == [1, 2, 0]
    ok(["report", NAME, *runs, "-o", str(tmp_path / "r.html")], capsys)
    ok(["export", NAME, *runs, "--best", "-o", str(tmp_path / "out")], capsys)


# ---- --storage journal:FILE where FILE is not an Optuna journal ----------------------------------------
def _journal_with_a_bad_line(tmp: Path) -> None:
    """``journal.log``: a real journal holding study 's', with a line of garbage between its records."""
    from optuna.storages.journal import JournalFileBackend

    path = tmp / "journal.log"
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    optuna.create_study(study_name="s", storage=storage).set_user_attr("a", 1)
    first, *rest = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(first + b"garbage\n" + b"".join(rest))


def _journal_folder(tmp: Path) -> None:
    (tmp / "journal.log").mkdir()


NOT_A_JOURNAL = "not an Optuna journal file"
# (id, bytes of the file or a setup that makes it, fragments besides "--storage" and the URL)
JOURNALS: dict[str, tuple[bytes | Callable[[Path], None], tuple[str, ...]]] = {
    "a text file": (b"some notes\n", (NOT_A_JOURNAL, "line 1 is not a journal record")),
    "a binary file": (bytes(range(256)) * 4, (NOT_A_JOURNAL, "line 1 is not a journal record")),
    "random bytes": (bytes((i * 151 + 7) % 256 for i in range(4096)), (NOT_A_JOURNAL,)),
    "gzip": (b"\x1f\x8b\x08\x00garbage\n\x00\xff more\n", (NOT_A_JOURNAL,)),
    "JSON of another shape": (b'{"op_code": 0}\n{"op_code": 0}\n', (NOT_A_JOURNAL, "KeyError: 'study_name'")),
    "a JSON list": (b"[1, 2]\n[3]\n", (NOT_A_JOURNAL, "line 1 is not a journal record")),
    "deep JSON": (b"[" * 100_000 + b"]" * 100_000 + b"\n", (NOT_A_JOURNAL, "line 1 is not a journal record")),
    "a bad line inside a journal": (_journal_with_a_bad_line, (NOT_A_JOURNAL, "JSONDecodeError")),
    "a folder": (_journal_folder, ("is a folder, not a journal file",)),
}
JOURNAL_VERBS = {
    "status": ("status", "s"),
    "report": ("report", "s", "-o", "{tmp}/r.html"),
    "export": ("export", "s", "--best", "-o", "{tmp}/out"),
    "worker": ("worker", "--study", "s", "--runs-dir", "{tmp}/runs"),
}
JOURNAL_CASES = {
    f"{verb}: {name}": Case(
        (*argv, "--storage", "journal:{tmp}/journal.log"),
        ("--storage: journal:{tmp}/journal.log: ", *fragments),
        data=content if isinstance(content, bytes) else None,
        name="journal.log",
        setup=None if isinstance(content, bytes) else content,
    )
    for name, (content, fragments) in JOURNALS.items()
    for verb, argv in JOURNAL_VERBS.items()
}


@pytest.mark.parametrize("name", list(JOURNAL_CASES))
def test_a_journal_that_is_not_one(name, tmp_path, capsys):
    """Refused naming the file (before: a UnicodeDecodeError, KeyError or IsADirectoryError, or a text file read
    as an empty journal that a worker would then append to); the file is left as it was."""
    case = JOURNAL_CASES[name]
    check(case, tmp_path, capsys)
    if case.data is not None:
        assert (tmp_path / "journal.log").read_bytes() == case.data
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "out").exists()
