"""Rungs through a real (micro) search: trials report each rung's value at its step, successive halving
stops some at a rung and lets others train on, and `nas status`, the report and `nas export --best`
rank by the rung reached, then the prediction."""

import json
import math

import pytest
from optuna.trial import TrialState

from nas.protocol import load_protocol
from nas.search import SearchConfig, leaderboard, run_search, study_records
from nas.search.samplers import rung_step
from nas.space import load_space
from tests.conftest import MICRO_OVERRIDES, run

RUNGS = [
    "pretrain.schedule.kind=wsd",
    "pretrain.schedule.cooldowns=[0.25, 0.5]",
    "pretrain.rungs=[1, 2, 4]",
    "target.flops=2e11",
    "target.rung_weights=[0, 0.5, 1]",
    "objectives={predicted_val_loss: minimize}",
]


@pytest.fixture(scope="module")
def rung_study(tmp_path_factory, micro_cache):
    folder = tmp_path_factory.mktemp("rungs")
    from tests.conftest import MICRO_SPACE

    (folder / "micro.yaml").write_text(MICRO_SPACE)
    protocol = load_protocol("cpu-tiny", [f"cache_dir={micro_cache}", *MICRO_OVERRIDES, "tasks=[]", *RUNGS])
    config = SearchConfig(
        load_space(str(folder / "micro.yaml")),
        protocol,
        "rungs",
        runs_dir=folder / "runs",
        n_trials=9,
        sampler="random",
        pruner="sha",
        seed=0,
    )
    return run_search(config).study, folder


def test_rungs_are_reported_as_steps_and_some_trials_stop_at_a_rung(rung_study):
    study, _ = rung_study
    rows = {r.number: r for r in study_records(study)}
    trained = [t for t in study.trials if rows[t.number].trained]
    assert len(trained) == 9
    budget = 16384
    for trial in trained:
        row = rows[trial.number]
        assert row.rungs and [p[0] for p in row.rungs] == [budget * m for m in (1, 2, 4)][: len(row.rungs)]
        assert row.metrics["rung"] == len(row.rungs) - 1 == row.rung
        assert row.annealed[-1] == row.rungs[-1]  # the highest rung's point is the trial's last
        assert set(trial.intermediate_values) <= {rung_step(k) for k in range(3)}
        if trial.state == TrialState.PRUNED:
            assert row.cause.startswith(f"pruned at rung {len(row.rungs)} (") and len(row.rungs) < 3
            assert row.metrics["val_loss"] == row.rungs[-1][1]
        else:
            assert trial.state == TrialState.COMPLETE and len(row.rungs) == 3 and row.cause is None
    stopped = [t for t in trained if t.state == TrialState.PRUNED]
    assert stopped and len(stopped) < len(trained)  # some stopped at a rung, some trained on to the top
    # a stopped trial trained less: its main run ends at its rung's branch point
    top = max(rows[t.number].metrics["tokens_trained"] for t in trained)
    assert all(rows[t.number].metrics["tokens_trained"] < top for t in stopped)


def test_the_leaderboard_ranks_by_rung_reached_then_prediction(rung_study, capsys):
    study, folder = rung_study
    ranked = [r for r in leaderboard(study) if r.rank is not None]
    assert len(ranked) == 9  # stopped trials are ranked too
    keys = [(-r.rung, r.metric("predicted_val_loss")) for r in ranked]
    assert keys == sorted(keys) and all(math.isfinite(k[1]) for k in keys)
    assert [r.rank for r in ranked] == list(range(1, 10))

    storage = f"sqlite:///{folder / 'runs/rungs/study.db'}"
    code, out, _ = run(["status", "rungs", "--storage", storage], capsys)
    assert code == 0 and "rung" in out and "pruned at rung" in out
    code, out, _ = run(["status", "rungs", "--storage", storage, "--json"], capsys)
    first = json.loads(out)["trials"][0]
    assert first["number"] == ranked[0].number and first["rungs"] == ranked[0].rungs
    code, _, err = run(["export", "rungs", "--storage", storage, "--best", "-o", str(folder / "best")], capsys)
    assert code == 0, err
    exported = json.loads((folder / "best" / "metrics.json").read_text())
    assert exported["trial"] == ranked[0].number
    code, _, err = run(["report", "rungs", "--storage", storage, "-o", str(folder / "r.html")], capsys)
    html = (folder / "r.html").read_text()
    assert code == 0 and "by the rung reached, then the prediction" in html and ">rung<" in html
