"""Confirmations (a protocol's ``confirm``): the best architectures re-trained with new seeds, ranked by their
mean, and the study's seed noise that marks ties (nas.search.confirm, nas.search.ranking)."""

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.search import leaderboard
from nas.search.confirm import GIVE_UP_AFTER, SEED_STRIDE, advance, protocol_for, standing_down_for
from nas.search.ranking import noise, ties_line
from tests.conftest import cli_search, load_study, micro_sets, run

ARCH = {"vocab_size": 512, "max_seq_len": 64, "n_layers": 2, "d_model": 32, "n_heads": 2}


def add(study, value, confirms=None, repeat=1, state=TrialState.COMPLETE, status=None):
    attrs = {"nas_status": status or ("confirmation" if confirms is not None else "trained"), "arch": ARCH}
    if confirms is not None:
        attrs["confirm"] = {"of": confirms, "repeat": repeat, "seed": SEED_STRIDE * repeat}
    values = [value] if state == TrialState.COMPLETE else None
    dist = {"x": optuna.distributions.FloatDistribution(0, 10)}
    study.add_trial(create_trial(state=state, values=values, params={"x": value}, distributions=dist, user_attrs=attrs))


def test_confirmed_trials_rank_by_their_mean_and_ties_follow_the_pooled_noise():
    study = optuna.create_study()
    for value in (1.0, 1.02, 1.5, 1.01):  # trials 0-3; trial 3 ranks second on its one run
        add(study, value)
    add(study, 1.02, confirms=0)  # trial 0: 1.00, 1.02 (mean 1.01)
    add(study, 1.04, confirms=1)  # trial 1: 1.02, 1.04 (mean 1.03)
    rows = leaderboard(study)
    ranked = [r for r in rows if r.rank]
    assert [r.number for r in ranked] == [0, 3, 1, 2]  # 3 (1.01, one run) is not behind 0's mean: both 1.01
    assert ranked[0].values == pytest.approx([1.01]) and ranked[0].runs == [[1.0], [1.02]]
    measured = noise(ranked)
    assert measured.df == 2 and measured.architectures == 2 and measured.sd == pytest.approx(0.02**0.5 / 10)
    # t(97.5 %, 2 df) = 4.30 sd of the difference: 0.061 for two means of two, 0.075 for a mean of two and one run
    assert measured.t95 == pytest.approx(4.303, abs=1e-3)
    assert [r.tie for r in ranked] == [False, True, True, False]
    confirmations = [r for r in rows if r.confirmation]
    assert [r.rank for r in confirmations] == [None, None]
    assert confirmations[0].cause == "confirms trial 0"


def test_without_repeats_no_tie_is_claimed(capsys):
    study = optuna.create_study()
    for value in (1.0, 1.0001):
        add(study, value)
    rows = leaderboard(study)
    assert noise(rows) is None and not any(r.tie for r in rows)
    assert ties_line(rows, "val_loss").startswith("not known: no architecture was trained more than once")


def test_repeats_that_come_out_the_same_claim_no_tie_and_say_why():
    """The prediction from the size trend alone is a function of the size: a repeat gives the same value, and a
    spread of 0 between seeds would make every difference look real."""
    study = optuna.create_study()
    for value in (1.0, 1.0001):
        add(study, value)
    add(study, 1.0, confirms=0)
    rows = leaderboard(study)
    assert noise(rows).sd == 0 and not any(r.tie for r in rows)
    line = ties_line(rows, "predicted_val_loss")
    assert line.startswith("not known: predicted_val_loss came out the same in every repeat of an architecture")


def test_the_phase_enqueues_what_nobody_holds_and_gives_up_on_a_failing_one(micro_protocol):
    protocol = micro_protocol("confirm={top: 2, seeds: 2}")
    study = optuna.create_study()
    for value in (3.0, 1.0, 2.0):
        add(study, value)
    add(study, 1.1, confirms=1, repeat=1)  # trained
    add(study, 0, confirms=1, repeat=2, state=TrialState.RUNNING, status="running")
    for _ in range(GIVE_UP_AFTER):
        add(study, 0, confirms=2, repeat=1, state=TrialState.FAIL, status="failed")
    phase = advance(study, protocol, study.get_trials())
    assert (phase.trained, phase.running, phase.queued) == (1, 1, 1) and phase.given_up == ["trial 2 repeat 1"]
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["confirm"] for t in queued] == [{"of": 2, "repeat": 2, "seed": 2 * SEED_STRIDE}]
    assert queued[0].system_attrs["fixed_params"] == {"x": 2.0}  # the original's parameters
    assert advance(study, protocol, study.get_trials()).queued == 1  # queued once: nothing more enqueued
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    assert protocol_for(protocol, 2).pretrain.seed == protocol.pretrain.seed + 2 * SEED_STRIDE
    assert protocol_for(protocol, 2).content_hash != protocol.content_hash  # its own checkpoint


def test_of_two_trials_running_one_confirmation_the_later_stands_down():
    study = optuna.create_study()
    add(study, 1.0)
    for _ in range(2):
        add(study, 0, confirms=0, state=TrialState.RUNNING, status="running")
    first, second = study.get_trials()[1:]
    assert standing_down_for(study, first) is None and standing_down_for(study, second) == 1
    add(study, 0, confirms=0, repeat=2, state=TrialState.RUNNING, status="running")
    assert standing_down_for(study, study.get_trials()[-1]) is None  # another repeat


def test_confirm_is_a_protocol_key_outside_the_hash(micro_protocol):
    from nas.errors import NasInputError

    assert micro_protocol("confirm=3").confirm.top == 3 and micro_protocol("confirm=3").confirm.seeds == 1
    assert micro_protocol("confirm=3").content_hash == micro_protocol().content_hash
    with pytest.raises(NasInputError, match="confirm.top: Input should be greater than or equal to 1"):
        micro_protocol("confirm=0")


def test_a_search_confirms_its_best_then_status_shows_runs_and_ties(in_tmp, micro_cache, capsys):
    sets = micro_sets(micro_cache, "confirm={top: 2, seeds: 1}")
    code, out, err = cli_search(capsys, "cf", 3, *sets)
    assert code == 0, err
    assert "3 trials trained (--n-trials 3); 2 confirmations trained" in out
    study = load_study("cf")
    trials = study.get_trials()
    confirmations = [t for t in trials if t.user_attrs.get("nas_status") == "confirmation"]
    trained = sorted((t for t in trials if t.user_attrs.get("nas_status") == "trained"), key=lambda t: t.values[0])
    assert len(trained) == 3 and len(confirmations) == 2
    assert sorted(t.user_attrs["confirm"]["of"] for t in confirmations) == sorted(t.number for t in trained[:2])
    for t in confirmations:  # the original's architecture, with another seed: another loss
        original = next(o for o in trained if o.number == t.user_attrs["confirm"]["of"])
        assert t.user_attrs["arch_hash"] == original.user_attrs["arch_hash"] and t.values != original.values

    code, out, _ = run(["status", "cf"], capsys)
    assert code == 0 and out.count(" n=2") == 2 and "ties: " in out
    assert "val_loss sd" in out and "2 architectures run more than once, 2 degrees of freedom" in " ".join(out.split())
    code, out, _ = cli_search(capsys, "cf", 3, *sets)  # done: nothing more runs
    assert code == 0 and "(0 new trials trained" in out and "2 confirmations trained" in out
    assert len(load_study("cf").get_trials()) == len(trials)


def test_the_report_marks_ties_and_counts_runs():
    from nas.report.tables import leaderboard as report_table

    study = optuna.create_study()
    for value in (1.0, 1.01, 1.5):
        add(study, value)
    add(study, 1.02, confirms=0)
    add(study, 1.03, confirms=1)
    ranked = [r for r in leaderboard(study) if r.rank]
    html = report_table(ranked, ["val_loss"])
    assert "<th onclick='sortTable(this)'>runs</th>" in html and "<td>2=</td>" in html
    assert "ties (=): trial 1 lies within the 95 % noise interval of the best (trial 0): val_loss sd" in html


@pytest.mark.parametrize("df", [1, 2, 5, 30, 31, 60, 1000])
def test_the_tie_quantile_is_students_t(df):
    from scipy.stats import t

    from nas.search.ranking import Noise

    assert Noise(1.0, df, 1).t95 == pytest.approx(t.ppf(0.975, df), abs=2e-3)


def test_confirm_added_to_a_finished_study_runs_when_the_command_is_run_again(in_tmp, micro_cache, capsys):
    code, out, err = cli_search(capsys, "later", 2, *micro_sets(micro_cache))
    assert code == 0 and "confirmation" not in out, err
    code, out, err = cli_search(capsys, "later", 2, *micro_sets(micro_cache, "confirm=1"))
    assert code == 0, err
    assert "(0 new trials trained" in out and "2 trials trained (--n-trials 2); 1 confirmation trained" in out
