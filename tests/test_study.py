"""`nas search` end to end on micro budgets, through the CLI as a user runs it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from tests.conftest import MICRO_OVERRIDES

REPO = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


MICRO_SPACE = """\
name: micro
parameters:
  vocab_size: 512
  max_seq_len: 64
  n_layers: {type: int, low: 1, high: 2}
  n_heads: {type: choice, values: [1, 2]}
  head_dim: 16
  ffn_mult: {type: choice, values: [1, 2, 3]}
  attention: {type: choice, values: [full, sliding]}
  window: {type: choice, values: [8, 16], when: "attention == 'sliding'"}
derived:
  d_model: n_heads * head_dim
  ffn_dim: ffn_mult * d_model
"""


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, micro_cache):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "micro.yaml").write_text(MICRO_SPACE)
    return tmp_path


def micro_sets(cache, *extra, tasks=False):
    items = [f"cache_dir={cache}", *MICRO_OVERRIDES, *([] if tasks else ["tasks=[]"]), *extra]
    return ["--space", "micro.yaml", *[arg for item in items for arg in ("--set", item)]]


def search(capsys, study, n_trials, *extra, pruner="none"):
    """`nas search --study STUDY --n-trials N --quiet --pruner PRUNER *extra`, run in-process."""
    argv = ["search", "--study", study, "--n-trials", str(n_trials), "--quiet", "--pruner", pruner, *extra]
    return run(argv, capsys)


def load(name, runs="runs"):
    from nas.study import open_storage  # retries while another process creates the tables

    return optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{runs}/{name}/study.db"))


def test_search_status_export_end_to_end(in_tmp, micro_cache, capsys):
    code, out, err = search(capsys, "e2e", 3, *micro_sets(micro_cache, tasks=True))
    assert code == 0, err
    assert "3 trials trained" in out and "nas status e2e" in out and "nas export e2e --best" in out
    study = load("e2e")
    trained = [t for t in study.trials if t.user_attrs.get("nas_status") == "trained"]
    assert len(trained) == 3 and all(t.state == TrialState.COMPLETE for t in trained)
    attrs = trained[0].user_attrs
    for key in (
        "arch",
        "arch_hash",
        "params",
        "non_embedding_params",
        "flops_per_token",
        "kv_cache_bytes_per_token",
        "tokens_per_second",
        "peak_memory_mb",
        "metrics",
        "curve",
        "artifact_curve",
    ):
        assert key in attrs, key
    assert {"qa.f1", "claims.accuracy", "answer.exact_match"} <= set(attrs["metrics"])
    assert trained[0].values[0] == pytest.approx(attrs["metrics"]["val_loss"])
    assert (in_tmp / "runs/e2e/search.log").read_text().count("complete") >= 3
    curve_files = list((in_tmp / "runs/e2e/artifacts").rglob("*"))
    assert any(f.is_file() and json.loads(f.read_text())[0]["step"] == 0 for f in curve_files)
    assert study.user_attrs["nas.space_name"] == "micro" and study.user_attrs["nas.protocol_hash"]

    code, out, _ = run(["status", "e2e"], capsys)
    assert code == 0 and "study e2e" in out and out.count("complete") >= 3

    code, out, err = run(["export", "e2e", "--best", "-o", "exported"], capsys)
    assert code == 0, err
    import transformers

    folder = in_tmp / "exported"
    assert {"config.json", "architecture.yaml", "metrics.json", "README.md", "recipe.yaml", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(folder))
    best = min(trained, key=lambda t: t.values[0])
    assert sum(p.numel() for p in model.parameters()) == best.user_attrs["params"]
    assert json.loads((folder / "metrics.json").read_text())["trial"] == best.number
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer.decode(tokenizer("Mira is a baker").input_ids) == "Mira is a baker"

    # Re-running the same command continues: nothing to do, the study already has 3.
    code, out, _ = search(capsys, "e2e", 3, *micro_sets(micro_cache, tasks=True))
    assert code == 0 and "(0 new trials trained" in out


def test_resume_with_another_protocol_is_refused(in_tmp, micro_cache, capsys):
    code, _, _ = search(capsys, "r", 1, *micro_sets(micro_cache))
    assert code == 0
    code, _, err = search(capsys, "r", 2, *micro_sets(micro_cache, "pretrain.budget.tokens=8192"))
    assert code == 2 and "study 'r' was created with another protocol" in err and "--warm-start r" in err
    assert len(load("r").trials) == 1


def test_warm_start_enqueues_the_old_architectures(in_tmp, micro_cache, capsys):
    search(capsys, "old", 2, *micro_sets(micro_cache))
    code, _, err = search(
        capsys, "new", 2, "--seed", "9", "--warm-start", "old", *micro_sets(micro_cache, "pretrain.budget.tokens=8192")
    )
    assert code == 0, err
    old_hashes = {t.user_attrs["arch_hash"] for t in load("old").trials}
    new_hashes = [t.user_attrs["arch_hash"] for t in load("new").trials[:2]]
    assert set(new_hashes) == old_hashes


def test_duplicates_reuse_values_and_exhaustion_ends_the_study(in_tmp, micro_cache, capsys):
    space = in_tmp / "two.yaml"
    space.write_text(
        "parameters:\n  vocab_size: 512\n  max_seq_len: 64\n  n_layers: {type: int, low: 1, high: 2}\n"
        "  n_heads: 2\n  d_model: 32\n"
    )
    code, out, err = search(capsys, "two", 5, "--sampler", "random", *micro_sets(micro_cache), "--space", str(space))
    assert code == 0, err
    assert "the space ran out of new architectures" in out
    study = load("two")
    trained = [t for t in study.trials if t.user_attrs.get("nas_status") == "trained"]
    dups = [t for t in study.trials if t.user_attrs.get("nas_status") == "duplicate"]
    assert len(trained) == 2 and len(dups) >= 100
    first = {t.user_attrs["arch_hash"]: t for t in trained}
    for dup in dups[:5]:
        original = study.trials[dup.user_attrs["duplicate_of"]]
        assert original.user_attrs["arch_hash"] == dup.user_attrs["arch_hash"] and dup.values == original.values
        assert first[dup.user_attrs["arch_hash"]].number == original.number


def test_multi_objective_sha_prunes(in_tmp, micro_cache, capsys):
    code, out, err = search(
        capsys,
        "mo",
        6,
        "--sampler",
        "random",
        "--set",
        "objectives.params.direction=minimize",
        *micro_sets(micro_cache),
        pruner="sha",
    )
    assert code == 0, err
    study = load("mo")
    assert len(study.directions) == 2
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.user_attrs["cause"].startswith("pruned at step") for t in pruned)
    assert "Pareto" in out
    code, _, err = run(["export", "mo", "--best", "-o", "b"], capsys)
    assert code == 2 and "several objectives: use --pareto K or --trial N" in err
    code, _, err = run(["export", "mo", "--pareto", "2", "-o", "front"], capsys)
    assert code == 0, err
    front = {t.number for t in study.best_trials}
    exported = {int(p.name.split("-")[1]) for p in (in_tmp / "front").iterdir()}
    assert exported and exported <= front and len(exported) == min(2, len(front))


def test_single_objective_hyperband_prunes(in_tmp, micro_cache, capsys):
    code, _, err = search(capsys, "hb", 8, "--sampler", "random", *micro_sets(micro_cache), pruner="hyperband")
    assert code == 0, err
    pruned = [t for t in load("hb").trials if t.state == TrialState.PRUNED]
    assert pruned and pruned[0].user_attrs["cause"].startswith("pruned at step")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "nope"], "no study 'nope' in runs/"),
        (["export", "nope", "--best"], "no study 'nope' in runs/"),
        (
            ["search", "--storage", "postgresql://nobody@127.0.0.1:9/none", "--n-trials", "1"],
            "cannot open postgresql://",
        ),
        (["search", "--storage", "redis://localhost"], "unknown storage scheme 'redis'"),
        (["search", "--sampler", "tpee"], "unknown 'tpee' (did you mean 'tpe'?)"),
        (["search", "--pruner", "hyperbands"], "unknown 'hyperbands' (did you mean 'hyperband'?)"),
        (["search", "--set", "pretrain.budjet.tokens=1"], "pretrain.budjet: unknown key 'budjet'"),
        (["search", "--space", "nope.yaml"], "nope.yaml: no such file"),
    ],
)
def test_bad_input_exit_2_and_nothing_written(argv, message, in_tmp, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (in_tmp / "runs").exists()


def test_dry_run_estimates_and_writes_nothing(in_tmp, capsys):
    code, out, _ = run(["search", "--dry-run", "--n-trials", "4"], capsys)
    assert code == 0 and "estimated compute" in out and "FLOPs" in out and "min" in out
    assert not (in_tmp / "runs").exists()


def _nas(*args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "nas", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_sigint_during_a_trial_then_resume(in_tmp, micro_cache):
    args = [
        "search",
        "--study",
        "int",
        "--n-trials",
        "3",
        "--quiet",
        "--pruner",
        "none",
        *micro_sets(micro_cache, "pretrain.budget.tokens=32768"),
    ]
    proc = _nas(*args, cwd=in_tmp)
    db = in_tmp / "runs/int/study.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if db.exists():
            try:
                study = load("int")
            except KeyError:  # the study is being created
                continue
            running = [t for t in study.trials if t.state == TrialState.RUNNING and t.user_attrs.get("curve")]
            if running:
                break
    else:
        proc.kill()
        pytest.fail("no trial started training")
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    study = load("int")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in study.trials if t.user_attrs.get("nas_status") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL

    again = _nas(*args, cwd=in_tmp)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    study = load("int")
    assert sum(t.user_attrs.get("nas_status") == "trained" for t in study.trials) == 3
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_dashboard_api_lists_study_trials_notes_and_artifacts(in_tmp, micro_cache, capsys):
    import socket
    import urllib.request

    code, _, _ = search(capsys, "dash", 2, *micro_sets(micro_cache))
    assert code == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _nas("dashboard", "dash", "--port", str(port), cwd=in_tmp)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=2).read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        (entry,) = [s for s in studies["study_summaries"] if s["study_name"] == "dash"]
        detail = json.loads(urllib.request.urlopen(f"{base}/api/studies/{entry['study_id']}", timeout=5).read())
        assert len(detail["trials"]) == 2
        trial = detail["trials"][0]
        assert trial["note"]["body"].startswith("### ") and "hash" in trial["note"]["body"]
        assert trial["artifacts"] and trial["artifacts"][0]["mimetype"] == "application/json"
        assert any(a["key"] == "arch_hash" for a in trial["user_attrs"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_keep_weights_are_exported_and_load(in_tmp, micro_cache, capsys):
    import transformers

    code, _, err = search(capsys, "kw", 1, "--keep-weights", *micro_sets(micro_cache))
    assert code == 0, err
    trial = load("kw").trials[0]
    assert trial.user_attrs["artifact_weights"]
    code, _, err = run(["export", "kw", "--trial", "0", "-o", "w"], capsys)
    assert code == 0, err
    assert (in_tmp / "w/model.safetensors").is_file()
    model = transformers.AutoModelForCausalLM.from_pretrained(in_tmp / "w")
    assert sum(p.numel() for p in model.parameters()) == trial.user_attrs["params"]
    assert "from_pretrained(folder)" in (in_tmp / "w/README.md").read_text()


POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _postgres_reachable() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.postgres
@pytest.mark.skipif(not _postgres_reachable(), reason="no PostgreSQL at 127.0.0.1:5432")
def test_search_on_postgresql_storage(in_tmp, micro_cache, capsys):
    name = f"pg-{os.getpid()}-{int(time.time())}"
    code, _, err = search(capsys, name, 2, "--storage", POSTGRES, *micro_sets(micro_cache))
    assert code == 0, err
    study = optuna.load_study(study_name=name, storage=POSTGRES)
    assert sum(t.user_attrs.get("nas_status") == "trained" for t in study.trials) == 2
    code, out, _ = run(["status", name, "--storage", POSTGRES], capsys)
    assert code == 0 and f"study {name}" in out
    optuna.delete_study(study_name=name, storage=POSTGRES)
