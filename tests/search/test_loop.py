"""nas.search.loop: the worker loop, called directly (run_search) and through `nas search` as a user runs it."""

import dataclasses
import json
import re
import signal
import time

import pytest
from optuna.trial import TrialState

from nas.protocol import load_protocol
from nas.search import Callbacks, SearchConfig, leaderboard, run_search, study_records, trained_count
from nas.space import load_space
from tests.conftest import MICRO_OVERRIDES, MICRO_SPACE, cli_search, load_study, micro_sets, nas_process, run


def micro_config(in_tmp, micro_cache, name, **kwargs):
    protocol = load_protocol("cpu-tiny", [f"cache_dir={micro_cache}", *MICRO_OVERRIDES, "tasks=[]"])
    settings = {"n_trials": 2, "sampler": "random", "pruner": "none", "seed": 0, **kwargs}
    return SearchConfig(load_space(str(in_tmp / "micro.yaml")), protocol, name, runs_dir=in_tmp / "runs", **settings)


def test_run_search_directly(in_tmp, micro_cache):
    config = micro_config(in_tmp, micro_cache, "direct")
    started, finished, lines = [], [], []
    callbacks = Callbacks(
        trial_started=lambda number, summary: started.append(number),
        trial_finished=lambda trial, study: finished.append(trial.number),
        log=lines.append,
    )
    summary = run_search(config, callbacks)
    assert summary.trained == summary.new_trained == 2
    assert summary.stopped_because == "2 trials trained (--n-trials 2)"
    assert summary.run_dir == in_tmp / "runs/direct" and (summary.run_dir / "study.db").is_file()
    study = summary.study
    assert trained_count(study) == 2 and len(study.trials) == 2
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert started == finished == [0, 1] and sum("complete" in line for line in lines) == 2

    rows = leaderboard(study)
    assert [r.rank for r in rows] == [1, 2] and all(r.trained and r.status == "trained" for r in rows)
    assert rows[0].values[0] <= rows[1].values[0]
    for row in rows:
        assert row.values == [pytest.approx(row.metrics["val_loss"])] and row.metric("val_loss") == row.values[0]
        assert row.curve and row.curve[0][0] == 0 and row.params > 0 and row.cause is None
    assert len({r.arch_hash for r in rows}) == 2
    assert {r.number for r in study_records(study)} == {0, 1}
    assert study.user_attrs["nas.space_name"] == "micro" and study.user_attrs["nas.search"]["n_trials"] == 2

    again = run_search(config)  # resumes: the study already has its 2
    assert again.trained == 2 and again.new_trained == 0 and len(again.study.trials) == 2


def test_predicted_val_loss_as_the_objective_refits_on_the_study(in_tmp, micro_cache, capsys, monkeypatch):
    """With cool-downs, every trial predicts its loss at the target budget; the search ranks by it, and
    each prediction's data exponent is fitted on the trials trained before it as well."""
    from nas.scaling import fit_beta, predict_loss

    wsd = [
        "pretrain.budget.tokens=24576",
        "pretrain.schedule.kind=wsd",
        "pretrain.schedule.cooldowns=[0.25, 0.5]",
        "target.tokens=200000",
        "objectives={predicted_val_loss: minimize}",
    ]
    protocol = load_protocol("cpu-tiny", [f"cache_dir={micro_cache}", *MICRO_OVERRIDES, "tasks=[]", *wsd])
    space = load_space(str(in_tmp / "micro.yaml"))
    config = SearchConfig(
        space, protocol, "predicted", runs_dir=in_tmp / "runs", n_trials=3, sampler="random", pruner="none", seed=0
    )
    study = run_search(config).study
    rows = sorted(study_records(study), key=lambda r: r.number)
    assert len(rows) == 3 and all(r.trained and len(r.annealed) == 3 for r in rows)
    for row in rows:
        assert row.values == [pytest.approx(row.metrics["predicted_val_loss"])]
        assert row.metrics["target_tokens"] == 200000 and row.metrics["predicted_val_loss_std"] >= 0
        assert [p[0] for p in row.annealed][-1] == row.metrics["tokens_trained"]  # the run's own end
        assert row.annealed[-1][1] == pytest.approx(row.metrics["val_loss"])
    last = rows[-1]  # fitted on its own points and the two trials before it
    fit = fit_beta([last.annealed, *(r.annealed for r in rows[:-1])])
    expected = predict_loss(last.annealed, 200000, fit)
    assert expected is not None and last.metrics["predicted_val_loss"] == pytest.approx(expected.value)
    alone = predict_loss(last.annealed, 200000, fit_beta([last.annealed]))
    assert alone is not None and (alone.value, alone.std) != (expected.value, expected.std)  # the study's fit counts
    board = [r for r in leaderboard(study) if r.rank is not None]  # ranked by the prediction refitted on all 3
    refit = [r.metrics["predicted_val_loss"] for r in board]
    assert (
        len(board) == 3
        and refit == sorted(refit)
        and refit[[r.number for r in board].index(last.number)]
        == (
            pytest.approx(last.metrics["predicted_val_loss"])  # the last trial's own prediction was fitted on all 3
        )
    )

    from nas import cli

    monkeypatch.setattr(cli.console, "width", 250)
    code, out, _ = run(["status", "predicted", "--runs-dir", str(in_tmp / "runs")], capsys)
    best = leaderboard(study)[0]
    shown = f"{best.metrics['predicted_val_loss']:.4g} ± {best.metrics['predicted_val_loss_std']:.2g} @ 200,000 tok"
    assert code == 0 and "predicted at target" in out and shown in out and "predicted_val_loss" in out

    from nas.report import build_report

    report = build_report(study, in_tmp / "report.html")
    page = (in_tmp / "report.html").read_text()
    assert "Prediction at the target budget" in [title for title, _ in report.figures]
    assert "data exponent beta = " in page and "3 spare points" not in page
    assert "2 spare points" in page  # 3 trials x 1 spare point each, one spent on the shared beta

    from nas.search import export_from_study

    readme = (export_from_study(study, best.number, in_tmp / "export", in_tmp / "runs") / "README.md").read_text()
    value, std = best.metrics["predicted_val_loss"], best.metrics["predicted_val_loss_std"]
    assert f"predicted a held-out loss of {value:.4f} ± {std:.4f} at the target budget of 200,000 tokens" in readme


def test_non_finite_objective_fails_the_trial(in_tmp, micro_cache, monkeypatch):
    """A result whose objective is NaN is told FAIL with its cause; failures in a row stop the search."""
    import nas.trial

    def nan_trial(arch, protocol, **kwargs):
        return nas.trial.TrialResult(arch, "complete", metrics={"val_loss": float("nan")})

    monkeypatch.setattr(nas.trial, "run_trial", nan_trial)
    summary = run_search(micro_config(in_tmp, micro_cache, "nan", n_trials=1, timeout=60))  # a broken loop ends
    assert summary.trained == 0 and summary.stopped_because.startswith("5 trials failed in a row")
    records = study_records(summary.study)
    assert len(records) == 5 and all(r.state == "fail" and r.status == "failed" for r in records)
    assert records[0].cause == "non-finite objective values [nan]"


def test_search_status_export_end_to_end(in_tmp, micro_cache, capsys):
    code, out, err = cli_search(capsys, "e2e", 3, *micro_sets(micro_cache, tasks=True))
    assert code == 0, err
    assert "3 trials trained" in out and "nas status e2e" in out and "nas export e2e --best" in out
    study = load_study("e2e")
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
    exported = json.loads((folder / "metrics.json").read_text())
    assert exported["trial"] == best.number
    # every task metric travels with its no-model baseline, in metrics.json and beside it in the README
    assert exported["task_baselines"]["claims.chance"] == pytest.approx(1 / 3)
    assert exported["baseline_predictors"]["claims.accuracy"] == "majority class"
    assert "| claims.accuracy |" in (readme := (folder / "README.md").read_text()) and "chance 0.3333 |" in readme
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer.decode(tokenizer("Mira is a baker").input_ids) == "Mira is a baker"

    # Re-running the same command continues: nothing to do, the study already has 3.
    code, out, _ = cli_search(capsys, "e2e", 3, *micro_sets(micro_cache, tasks=True))
    assert code == 0 and "(0 new trials trained" in out


def test_status_shows_where_the_time_went(in_tmp, micro_cache, capsys, monkeypatch):
    """`nas status --json`: each trial's seconds by phase, and their sum over the trained trials; the
    table's line under it says the shares."""
    from nas.trial import PHASES

    code, _, err = cli_search(capsys, "timed", 2, *micro_sets(micro_cache))
    assert code == 0, err
    code, out, err = run(["status", "timed", "--json"], capsys)
    assert code == 0, err
    status = json.loads(out)
    assert status["study"] == "timed" and status["objectives"] == {"val_loss": "min"}
    trials = status["trials"]
    assert [t["rank"] for t in trials] == [1, 2] and all(t["status"] == "trained" for t in trials)
    for trial in trials:
        phases = trial["phase_seconds"]
        assert list(phases) == [*PHASES, "other"] and all(s >= 0 for s in phases.values())  # no task
        assert sum(phases.values()) == pytest.approx(trial["wall_seconds"], abs=1e-6)
    total = status["time_by_phase"]
    assert list(total) == [*PHASES, "other"]
    assert total == pytest.approx({k: sum(t["phase_seconds"][k] for t in trials) for k in total})

    code, out, _ = run(["status", "timed"], capsys)
    shares = [line for line in out.splitlines() if line.startswith("time: ")]
    assert code == 0 and len(shares) == 1 and "pretrain " in shares[0] and " %" in shares[0]

    from nas.cli import common

    monkeypatch.setattr(common.console, "width", 80)  # a terminal of 80 columns: the table fits, numbers whole
    code, out, _ = run(["status", "timed"], capsys)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    assert all(f"{int(t['metrics']['params']):,}" in out for t in trials)


def test_the_dashboard_note_says_where_the_time_went():
    from nas.arch import ArchConfig
    from nas.search.storage import trial_note as _note
    from nas.trial import TrialResult

    arch = ArchConfig(vocab_size=512, max_seq_len=64, n_layers=2, d_model=32, n_heads=2)
    phases = {"data": 1.0, "pretrain": 6.0, "task qa": 2.5, "other": 0.5}
    note = _note(TrialResult(arch, "complete", {"val_loss": 3.0}, wall_seconds=10.0, phase_seconds=phases))
    assert "Time: 10.0 s" in note and "| pretrain | 6.0 | 60 % |" in note and "| task qa | 2.5 | 25 % |" in note
    assert "Time:" not in _note(TrialResult(arch, "complete", {"val_loss": 3.0}))  # a result that timed nothing
    tasks = TrialResult(arch, "complete", {"val_loss": 3.0, "qa.f1": 0.25}, task_baselines={"qa.f1": 0.07})
    tasks.baseline_predictors = {"qa.f1": "first 2 words"}
    assert "| qa.f1 | 0.25 | first 2 words 0.07 |" in _note(tasks) and "| val_loss | 3 |  |" in _note(tasks)


def test_failure_causes_reach_the_attributes_and_status(in_tmp, micro_cache, capsys, monkeypatch):
    extra = ["--sampler", "random", *micro_sets(micro_cache)]
    # A protocol that cannot fit the space is refused before any trial (nas.preflight): exit 2, no study.
    code, _, err = cli_search(capsys, "early", 2, *extra, "--set", "pretrain.seq_len=128")  # > max_seq_len 64
    assert code == 2 and "pretrain.seq_len: 128 exceeds max_seq_len 64" in err
    assert not (in_tmp / "runs" / "early" / "study.db").exists()

    def fail_in_the_trial(arch, vocab_size, seq_len):
        raise ValueError(f"fit failed for seq_len={seq_len}")

    monkeypatch.setattr("nas.trial.fit_vocab", fail_in_the_trial)  # a failure only a trial meets
    code, out, _ = cli_search(capsys, "boom", 2, *extra)
    assert code == 0 and "5 trials failed in a row" in out
    study = load_study("boom")
    failed = study.trials[0]
    assert failed.state == TrialState.FAIL and failed.user_attrs["nas_status"] == "failed"
    cause = failed.user_attrs["cause"]
    # The cause names where the error was raised
    assert cause.startswith("exception: ValueError: fit failed for seq_len=64") and "test_loop.py" in cause
    assert "raise ValueError" in failed.user_attrs["traceback"]
    _, out, _ = run(["status", "boom", "--all"], capsys)
    assert "exception:" in out and "traceback (last lines)" in out and "raise ValueError" in out


@pytest.mark.slow
def test_sigint_during_a_trial_then_resume(in_tmp, micro_cache):
    args = [
        "search",
        "--study",
        "int",
        "--n-trials",
        "2",
        "--quiet",
        "--pruner",
        "none",
        *micro_sets(micro_cache, "pretrain.budget.tokens=98304"),  # seconds per trial: the poller sees one run
    ]
    proc = nas_process(*args, cwd=in_tmp)
    db = in_tmp / "runs/int/study.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"the search ended before the poller saw a trial training:\n{proc.communicate()[0]}")
        if db.exists():
            try:
                study = load_study("int")
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
    study = load_study("int")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in study.trials if t.user_attrs.get("nas_status") == "interrupted"]
    seen = study.trials[running[0].number]  # the trial training when the poller looked
    if seen.user_attrs.get("nas_status") == "interrupted":  # Ctrl-C landed in its training or tasks
        assert seen.state == TrialState.FAIL and interrupted == [seen]
    else:  # it landed while the result was being written (1 run in 3-14 here): held until the write ended
        assert seen.state == TrialState.COMPLETE and seen.user_attrs.get("nas_status") == "trained", seen
        assert not interrupted

    again = nas_process(*args, cwd=in_tmp)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output
    study = load_study("int")
    assert sum(t.user_attrs.get("nas_status") == "trained" for t in study.trials) == 2
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_dashboard_api_lists_study_trials_notes_and_artifacts(in_tmp, micro_cache, capsys):
    """The note and the curve artifact the loop stores with each trial, as optuna-dashboard serves them."""
    import socket
    import urllib.request

    code, _, _ = cli_search(capsys, "dash", 2, *micro_sets(micro_cache))
    assert code == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = nas_process("dashboard", "dash", "--port", str(port), cwd=in_tmp)
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


def test_the_task_gate_fine_tunes_only_trials_at_or_below_the_studys_quantile(in_tmp, micro_cache, monkeypatch):
    """The loop hands run_trial a gate judged on the study's completed trials: the first min_trials always
    fine-tune, later ones only at or below the quantile of the losses before them."""
    import numpy as np

    import nas.trial

    judged = []

    def fake_trial(arch, protocol, task_gate=None, **kwargs):  # instant: the loss is a function of the architecture
        loss = 5.0 - 0.3 * arch.n_layers - 0.05 * arch.n_heads - 0.01 * arch.ffn_dim / arch.d_model
        ran = task_gate(loss)
        judged.append((loss, ran))
        metrics = {"val_loss": loss} | ({"qa.f1": 0.5} if ran else {})
        return nas.trial.TrialResult(arch, "complete", metrics=metrics, notes=[] if ran else ["tasks skipped"])

    monkeypatch.setattr(nas.trial, "run_trial", fake_trial)
    config = micro_config(in_tmp, micro_cache, "gated", n_trials=8)
    gated = load_protocol(
        "cpu-tiny", [f"cache_dir={micro_cache}", *MICRO_OVERRIDES, "task_gate={quantile: 0.5, min_trials: 2}"]
    )
    config = dataclasses.replace(config, protocol=gated)
    study = run_search(config).study
    assert len(judged) >= 6
    for i, (loss, ran) in enumerate(judged):
        before = [x for x, _ in judged[:i]]
        assert ran == (i < 2 or loss <= np.quantile(before, 0.5)), (i, loss, before)
    assert {ran for _, ran in judged} == {True, False}  # both happen on this space
    trained = [r for r in study_records(study) if r.trained]  # the skip is noted where status shows it
    assert sorted("qa.f1" not in r.metrics for r in trained) == sorted(r.notes == ["tasks skipped"] for r in trained)
    assert all(("qa.f1" in r.metrics) == (not r.notes) for r in trained)


def test_infeasible_samples_are_pruned_with_a_violated_constraint_so_tpe_learns_from_them(in_tmp, micro_cache):
    """An infeasible sample is told PRUNED with Optuna's constraint attribute (TPE ranks it below every feasible
    trial), keeps its status, and never counts as trained: the study still trains exactly n_trials."""
    from nas.search.loop import INFEASIBLE_CONSTRAINT

    (in_tmp / "micro.yaml").write_text(MICRO_SPACE_WITH_A_HOLE)
    summary = run_search(micro_config(in_tmp, micro_cache, "hole", n_trials=2, sampler="tpe"))
    trials = summary.study.get_trials()
    infeasible = [t for t in trials if t.user_attrs.get("nas_status") == "infeasible"]
    assert summary.trained == 2 and trained_count(summary.study) == 2
    assert infeasible, "the sampler never drew from the hole: widen it"
    assert all(t.state == TrialState.PRUNED and t.system_attrs[INFEASIBLE_CONSTRAINT] == 1.0 for t in infeasible)
    assert all(t.constraints == {"space": 1.0} for t in infeasible)  # what TPE reads as infeasible


MICRO_SPACE_WITH_A_HOLE = MICRO_SPACE + 'constraints:\n  - "ffn_mult < 3"\n'  # a third of the grid infeasible


def test_the_search_log_names_each_objective_with_a_short_number(in_tmp, micro_cache):
    lines: list[str] = []
    run_search(micro_config(in_tmp, micro_cache, "logged", n_trials=1), Callbacks(log=lines.append))
    done = [line for line in lines if ": complete" in line]
    assert len(done) == 1 and "{" not in done[0]
    assert re.search(r"trial 0: complete: val_loss \d+\.\d{1,3} \(", done[0]), done[0]
