"""nas.search.samplers: the CurvePruner on hand-made trials, pruners by name, and pruning in real searches."""

import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.errors import NasInputError
from nas.protocol import load_protocol
from nas.search import CurvePruner, grid_space, make_pruner, make_sampler
from nas.search.samplers import loss_at
from nas.space import load_space
from tests.conftest import cli_search, load_study, micro_sets, run


def trials_with_curves(*curves, state=TrialState.COMPLETE):
    """Frozen trials numbered 0.. whose ``curve`` user attribute is each of ``curves`` ([step, tokens, loss] rows)."""
    study = optuna.create_study()
    for curve in curves:
        value = {"value": curve[-1][2]} if state == TrialState.COMPLETE else {}
        study.add_trial(create_trial(state=state, user_attrs={"curve": curve}, **value))
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(curves))) and all(t.state == state for t in trials)
    return trials


def flat(loss, steps=(0, 10, 20, 30, 90)):
    """A curve at ``loss`` at each of ``steps``."""
    return [[s, 100 * s, loss] for s in steps]


JUDGED = 99  # the number of the trial being judged (not among the others)


def test_loss_at():
    curve = [[0, 0, 5.0], [10, 100, 4.0], [20, 200, 3.0]]
    assert loss_at(curve, 0) == 5.0 and loss_at(curve, 10) == 4.0 and loss_at(curve, 15) == 4.0
    assert loss_at(curve, 20) == 3.0
    assert loss_at(curve, 25) is None  # it did not get that far
    assert loss_at([], 0) is None


def test_median_prunes_above_the_others_median_and_not_below():
    trials = trials_with_curves(flat(1.0), flat(2.0), flat(3.0))
    pruner = CurvePruner(kind="median")
    assert pruner.should_prune(trials, JUDGED, 10, 2.5, set())
    assert not pruner.should_prune(trials, JUDGED, 10, 1.5, set())
    assert not pruner.should_prune(trials, JUDGED, 10, 2.0, set())  # at the median: kept
    assert not pruner.should_prune(trials, JUDGED, 10, math.nan, set())  # a NaN loss is the trainer's to stop
    # The judged trial's own curve is not among the others: trial 2 (3.0) against 1.0 and 2.0 (median 1.5).
    assert pruner.should_prune(trials, 2, 10, 1.6, set())
    # Running trials count too, at their last eval at or before the step, once they got that far.
    running = trials_with_curves(
        [[0, 0, 9.0], [10, 1000, 1.0], [12, 1200, 1.0]], [[0, 0, 9.0], [8, 800, 0.1]], state=TrialState.RUNNING
    )
    one = CurvePruner(kind="median", n_startup_trials=1)
    assert one.should_prune(running, JUDGED, 11, 1.5, set())  # against 1.0 (step 10); the other stopped at 8
    assert not one.should_prune(running, JUDGED, 11, 0.5, set())
    diverged = trials_with_curves(flat(1.0), flat(math.nan), state=TrialState.RUNNING)  # a NaN curve is no yardstick
    assert one.should_prune(diverged, JUDGED, 10, 2.0, set())


def test_median_respects_warmup_and_startup():
    trials = trials_with_curves(flat(1.0), flat(2.0), flat(3.0))
    assert not CurvePruner(kind="median", n_warmup_steps=20).should_prune(trials, JUDGED, 10, 9.0, set())
    assert CurvePruner(kind="median", n_warmup_steps=20).should_prune(trials, JUDGED, 20, 9.0, set())
    assert not CurvePruner(kind="median", n_startup_trials=4).should_prune(trials, JUDGED, 10, 9.0, set())
    assert CurvePruner(kind="median", n_startup_trials=3).should_prune(trials, JUDGED, 10, 9.0, set())
    # Only trials whose curve reached the step count towards n_startup_trials.
    short = trials_with_curves(flat(1.0, steps=(0, 10)), flat(2.0, steps=(0, 10)), flat(3.0))
    assert not CurvePruner(kind="median").should_prune(short, JUDGED, 20, 9.0, set())
    assert CurvePruner(kind="median", n_startup_trials=1).should_prune(short, JUDGED, 20, 9.0, set())


def test_sha_rung_arithmetic():
    pruner = CurvePruner(kind="sha", min_resource=10, reduction_factor=3)
    assert [pruner.rung_step(k) for k in range(4)] == [10, 30, 90, 270]
    assert pruner.rung_of(0) is None and pruner.rung_of(9) is None
    assert [pruner.rung_of(s) for s in (10, 29, 30, 89, 90, 269, 270)] == [0, 0, 1, 1, 2, 2, 3]
    for k in range(8):  # exact powers land on their rung despite floating-point logs
        assert pruner.rung_of(pruner.rung_step(k)) == k
    for k in range(1, 8):
        assert pruner.rung_of(pruner.rung_step(k) - 1) == k - 1
    assert CurvePruner(kind="sha", min_resource=8, reduction_factor=2).rung_of(64) == 3


def test_sha_keeps_the_best_third_at_a_rung_and_judges_each_rung_once():
    trials = trials_with_curves(*(flat(loss) for loss in (1.0, 2.0, 3.0, 4.0, 5.0)))
    pruner = CurvePruner(kind="sha", min_resource=10, reduction_factor=3)
    # Six losses at rung 0 (the five others and this one): keep the best 6 // 3 = 2.
    assert not pruner.should_prune(trials, JUDGED, 10, 1.5, set())  # second best: kept
    assert not pruner.should_prune(trials, JUDGED, 10, 0.5, set())
    checked: set[int] = set()
    assert pruner.should_prune(trials, JUDGED, 10, 2.5, checked)  # third best: pruned
    assert checked == {0}
    # Rung 0 was judged: a later eval before the next rung is not judged again, however bad.
    assert not pruner.should_prune(trials, JUDGED, 20, 9.0, checked) and checked == {0}
    # Rung 1 (step 30) is judged against the others' losses at step 30, even when evaluated later (35).
    assert pruner.should_prune(trials, JUDGED, 35, 2.5, checked) and checked == {0, 1}
    assert not pruner.should_prune(trials, JUDGED, 35, 2.5, {0, 1})
    stopped_at_30 = trials_with_curves(*(flat(loss, steps=(0, 10, 30)) for loss in (1.0, 2.0, 3.0)))
    assert pruner.should_prune(stopped_at_30, JUDGED, 35, 2.5, {0})  # the others' losses at the rung, 30
    # Before the first rung nothing is judged or marked.
    early: set[int] = set()
    assert not pruner.should_prune(trials, JUDGED, 5, 9.0, early) and early == set()
    # Too few others at a rung: kept, but the rung counts as judged.
    few = trials_with_curves(flat(1.0))
    lonely: set[int] = set()
    assert not pruner.should_prune(few, JUDGED, 10, 9.0, lonely) and lonely == {0}
    # Three losses: keep max(1, 3 // 3) = 1, the best.
    two = trials_with_curves(flat(1.0), flat(2.0))
    assert pruner.should_prune(two, JUDGED, 10, 1.5, set()) and not pruner.should_prune(two, JUDGED, 10, 0.9, set())


def test_make_pruner_native_or_curve():
    single = load_protocol("cpu-tiny", ["objectives={val_loss: minimize}"])
    every = single.pretrain.eval_every
    assert isinstance(make_pruner("median", single, False)[0], optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("sha", single, False)[0], optuna.pruners.SuccessiveHalvingPruner)
    optuna_pruner, curve = make_pruner("hyperband", single, False)
    assert isinstance(optuna_pruner, optuna.pruners.HyperbandPruner) and curve is None
    assert isinstance(make_pruner("none", single, True)[0], optuna.pruners.NopPruner)
    # Several objectives (or an objective other than val_loss): Optuna's pruners cannot decide; the curve pruner does.
    optuna_pruner, curve = make_pruner("median", single, True)
    assert isinstance(optuna_pruner, optuna.pruners.NopPruner)
    assert curve == CurvePruner(kind="median", n_warmup_steps=every, min_resource=every)
    assert make_pruner("hyperband", single, True)[1] == CurvePruner(kind="sha", n_warmup_steps=0, min_resource=every)
    scored = load_protocol("cpu-tiny", ["objectives={qa.f1: maximize}"])
    assert make_pruner("sha", scored, False)[1] == CurvePruner(kind="sha", min_resource=every)
    with pytest.raises(NasInputError, match="unknown pruner 'hyperbands' \\(did you mean 'hyperband'\\?\\)"):
        make_pruner("hyperbands", single, False)


def test_make_sampler_and_grid(write_space):
    space = load_space("tiny")
    assert isinstance(make_sampler("random", 0, space, False), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler("nsga2", 0, space, True), optuna.samplers.NSGAIISampler)
    with pytest.raises(NasInputError, match="cmaes handles single-objective studies only"):
        make_sampler("cmaes", 0, space, True)
    with pytest.raises(NasInputError, match="unknown sampler 'tpee'"):
        make_sampler("tpee", 0, space, False)
    text = (
        "parameters:\n  vocab_size: 256\n  max_seq_len: 32\n  n_layers: {type: int, low: 1, high: 3}\n"
        "  n_heads: {type: choice, values: [2, 4]}\n  head_dim: 8\nderived:\n  d_model: n_heads * head_dim\n"
    )
    grid = grid_space(load_space(write_space(text)))
    assert grid == {"n_layers": [1, 2, 3], "n_heads": [2, 4]}  # fixed values are not grid axes


def test_multi_objective_sha_prunes(in_tmp, micro_cache, capsys):
    code, out, err = cli_search(
        capsys,
        "mo",
        6,
        "--sampler",
        "random",
        *micro_sets(micro_cache),
        "--set",
        "objectives.peak_memory_mb.direction=minimize",  # measured, not a cost known before training
        pruner="sha",
    )
    assert code == 0, err
    study = load_study("mo")
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
    code, _, err = cli_search(capsys, "hb", 8, "--sampler", "random", *micro_sets(micro_cache), pruner="hyperband")
    assert code == 0, err
    pruned = [t for t in load_study("hb").trials if t.state == TrialState.PRUNED]
    assert pruned and pruned[0].user_attrs["cause"].startswith("pruned at step")


def test_with_cost_objectives_a_trial_is_judged_only_by_trials_that_cost_no_more():
    """Bigger models that learn faster do not prune a small one: it may be on the Pareto front."""
    study = optuna.create_study()
    for loss, params in ((3.0, 5000), (3.1, 4000), (3.2, 3000), (4.0, 900)):  # three big, one small
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, value=loss, user_attrs={"curve": flat(loss), "params": params})
        )
    trials = study.get_trials(deepcopy=False)
    pruner = CurvePruner(kind="median", n_startup_trials=1, cost_names=("params",))
    assert not pruner.should_prune(trials, JUDGED, 10, 3.9, set(), costs={"params": 1000})  # only 900 is a peer
    assert pruner.should_prune(trials, JUDGED, 10, 4.5, set(), costs={"params": 1000})  # worse than the cheaper one
    assert pruner.should_prune(trials, JUDGED, 10, 3.9, set(), costs={"params": 6000})  # all four cost no more
    plain = CurvePruner(kind="median", n_startup_trials=1)
    assert plain.should_prune(trials, JUDGED, 10, 3.9, set(), costs={"params": 1000})  # loss alone: pruned
    multi = load_protocol("cpu-tiny", ["objectives.params.direction=minimize"])
    assert make_pruner("sha", multi, multi=True)[1].cost_names == ("params",)


def test_with_the_prediction_as_objective_a_trial_is_judged_only_by_trials_at_least_as_large():
    """Larger models start slower on the trial-budget curve and are predicted better at the target: a
    large trial is not cut by faster-starting small ones, and a small one is cut by larger ones ahead."""
    study = optuna.create_study()
    for loss, size in ((3.0, 1000), (3.1, 2000), (3.3, 8000), (3.4, 9000)):
        attrs = {"curve": flat(loss), "non_embedding_params": size}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=loss, user_attrs=attrs))
    trials = study.get_trials(deepcopy=False)
    wsd = ["pretrain.schedule.kind=wsd", "pretrain.schedule.cooldowns=[0.25, 0.5]"]
    protocol = load_protocol("cpu-tiny", [*wsd, "objectives={predicted_val_loss: minimize}"])
    pruner = make_pruner("median", protocol, multi=False)[1]
    assert pruner is not None and pruner.size_matched and not pruner.cost_names
    pruner.n_startup_trials = 1
    big = {"non_embedding_params": 7000}  # peers 8000 and 9000 (median 3.35)
    assert not pruner.should_prune(trials, JUDGED, 10, 3.3, set(), costs=big)  # behind the small ones only
    assert pruner.should_prune(trials, JUDGED, 10, 3.5, set(), costs=big)  # behind the larger ones too
    assert pruner.should_prune(trials, JUDGED, 10, 3.25, set(), costs={"non_embedding_params": 500})  # all four
    plain = CurvePruner(kind="median", n_startup_trials=1)
    assert plain.should_prune(trials, JUDGED, 10, 3.3, set(), costs=big)  # by loss alone the big one is cut
    own = load_protocol("cpu-tiny", ["objectives={val_loss: minimize}"])
    assert not make_pruner("median", own, multi=False)[1]  # val_loss: Optuna's own
