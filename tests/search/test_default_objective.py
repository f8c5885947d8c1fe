"""The shipped default's objective: cpu-tiny predicts each trial's held-out loss at its target (8x the trial
budget) from WSD cool-downs and the study's size trend, and the study ranks by that prediction."""

from __future__ import annotations

import math

from nas.protocol import load_protocol
from nas.search import SearchConfig, run_search
from nas.search.ranking import leaderboard
from nas.space import load_space
from tests.conftest import MICRO_OVERRIDES

PINS = ("pretrain.schedule=", "target=", "objectives=")  # what the micro protocol pins to the trial's own loss


def test_cpu_tiny_optimises_the_prediction_at_8x_its_budget_from_cool_downs():
    shipped = load_protocol("cpu-tiny")
    assert list(shipped.objectives) == ["predicted_val_loss"] and shipped.pretrain.anneals
    assert shipped.pretrain.schedule.kind == "wsd" and shipped.pretrain.schedule.cooldowns == [0.25, 0.5]
    assert shipped.target.tokens == 8 * shipped.pretrain.budget.tokens


def test_a_search_with_the_shipped_schedule_and_objective_ranks_by_the_prediction(in_tmp, micro_cache):
    """A micro search on cpu-tiny's own schedule, target ratio and objective: every trial has its three annealed
    points and a finite prediction at the target (its objective value); once 5 trials of 3 sizes are in, the
    size trend predicts; the leaderboard ranks by the prediction refitted on every trial."""
    kept = [o for o in MICRO_OVERRIDES if not o.startswith(PINS)]
    budget = 16384
    protocol = load_protocol("cpu-tiny", [f"cache_dir={micro_cache}", *kept, "tasks=[]", f"target.tokens={8 * budget}"])
    assert protocol.pretrain.budget.tokens == budget and list(protocol.objectives) == ["predicted_val_loss"]
    space = load_space(str(in_tmp / "micro.yaml"))
    config = SearchConfig(
        space, protocol, "default", runs_dir=in_tmp / "runs", n_trials=6, sampler="random", pruner="none", seed=0
    )
    study = run_search(config).study
    rows = leaderboard(study)
    assert len(rows) == 6 and all(r.trained for r in rows)
    for row in rows:
        assert len(row.annealed) == 3 and row.metric("target_tokens") == 8 * budget
        assert len(row.values) == 1 and math.isfinite(row.values[0])  # the prediction with the trials before it
    assert max(r.metric("prediction_trend_trials") for r in rows) >= 5  # the size trend, once it can be fitted
    refitted = [r.metric("predicted_val_loss") for r in rows]  # leaderboard: refitted on all six
    assert all(math.isfinite(v) for v in refitted) and refitted == sorted(refitted)
    assert refitted != [r.values[0] for r in rows]
