"""nas.search.records: TrialRecord read from hand-made trials, and the leaderboard's ranking."""

import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.search import TrialRecord, leaderboard, study_records, trained_count
from nas.search.records import baselines_line, requeue_attrs, set_status, write_result
from nas.search.usage import time_by_phase, time_shares

ARCH = {"vocab_size": 512, "max_seq_len": 64, "n_layers": 2, "d_model": 32, "n_heads": 2}


def add(study, state=TrialState.COMPLETE, values=None, status="trained", system_attrs=None, **attrs):
    """Add a trial as the search would have left it (a trained one with its architecture); returns its number."""
    user_attrs = ({"nas_status": status} if status else {}) | ({"arch": ARCH} if status == "trained" else {}) | attrs
    study.add_trial(create_trial(state=state, values=values, user_attrs=user_attrs, system_attrs=system_attrs or {}))
    return len(study.trials) - 1


FULL = {
    "arch": ARCH,
    "arch_hash": "a" * 16,
    "summary": "llama L2 d32",
    "params": 12345,
    "non_embedding_params": 2345,
    "flops_per_token": 6.0e4,
    "kv_cache_bytes_per_token": 256,
    "tokens_per_second": 999.0,  # a top-level copy of a metric, not a count
    "metrics": {"val_loss": 3.5, "qa.f1": 0.25, "weird": "nan"},
    "curve": [[0, 0, 6.0], [8, 4096, 3.5]],
    "wall_seconds": 12,
    "artifact_weights": "w-id",
}


def test_trial_record_from_trial():
    study = optuna.create_study()
    add(study, values=[3.5], **FULL)
    record = TrialRecord.from_trial(study.trials[0])
    assert record.number == 0 and record.state == "complete" and record.status == "trained" and record.trained
    assert record.values == [3.5] and record.arch == FULL["arch"] and record.arch_hash == "a" * 16
    assert record.summary == "llama L2 d32" and record.curve == FULL["curve"] and record.metrics == FULL["metrics"]
    assert record.counts == {
        "params": 12345,
        "non_embedding_params": 2345,
        "flops_per_token": 6.0e4,
        "kv_cache_bytes_per_token": 256,
    }
    assert record.params == 12345 and isinstance(record.params, int)
    assert record.wall_seconds == 12.0 and isinstance(record.wall_seconds, float)
    assert record.artifact_weights == "w-id" and record.cause is None and record.shown_cause() is None
    assert record.metric("params") == 12345.0 and record.metric("qa.f1") == 0.25
    assert math.isnan(record.metric("weird")) and math.isnan(record.metric("missing"))
    assert record.rank is None and not record.pareto  # only leaderboard ranks


def test_trial_record_defaults_and_states():
    study = optuna.create_study()
    add(study, state=TrialState.RUNNING, status=None)
    add(study, state=TrialState.FAIL, status=None)
    add(study, state=TrialState.PRUNED, status="trained")
    add(study, state=TrialState.FAIL, status="failed", cause="exception: ValueError: x", traceback="line\nraise X")
    running, unknown, pruned, failed = study_records(study)
    assert (running.state, running.status, running.values, running.arch, running.params) == (
        "running",
        "running",
        None,
        {},
        None,
    )
    assert (unknown.state, unknown.status, unknown.trained) == ("fail", "?", False)
    assert pruned.state == "pruned" and pruned.trained and pruned.curve == [] and pruned.metrics == {}
    assert failed.cause == "exception: ValueError: x" and failed.traceback == "line\nraise X" and not failed.trained
    assert trained_count(study) == 1


def test_shown_cause_of_a_resumed_trial():
    study = optuna.create_study()
    add(study, values=[1.0], resumed_from_step=16, retry_of=3)
    add(study, values=[1.0], resumed_from_step=8)
    add(study, state=TrialState.PRUNED, resumed_from_step=8, cause="pruned at step 16")
    resumed, again, pruned = study_records(study)
    assert resumed.shown_cause() == "resumed from step 16 (re-run of trial 3)"
    assert again.shown_cause() == "resumed from step 8" and pruned.shown_cause() == "pruned at step 16"


def test_leaderboard_single_objective_ranks_by_value():
    study = optuna.create_study(direction="minimize")
    add(study, values=[3.0], arch_hash="c")
    add(study, values=[1.0], arch_hash="a")
    add(study, values=[2.0], arch_hash="b")
    add(study, state=TrialState.PRUNED, cause="pruned at step 8")
    add(study, values=[1.0], status="duplicate", duplicate_of=1)  # reuses trial 1's values: not ranked again
    add(study, state=TrialState.FAIL, status="infeasible", cause="infeasible: too big")
    rows = leaderboard(study)
    assert [r.number for r in rows] == [1, 2, 0, 3, 4, 5]
    assert [r.rank for r in rows] == [1, 2, 3, None, None, None]
    assert [r.pareto for r in rows] == [True, False, False, False, False, False]  # the best of one objective
    assert rows[3].cause == "pruned at step 8" and rows[4].duplicate_of == 1 and rows[5].status == "infeasible"

    best_is_highest = optuna.create_study(direction="maximize")
    for value in (3.0, 1.0, 2.0):
        add(best_is_highest, values=[value])
    assert [r.number for r in leaderboard(best_is_highest)] == [0, 2, 1]
    assert leaderboard(optuna.create_study()) == []


def test_leaderboard_multi_objective_pareto_first():
    study = optuna.create_study(directions=["minimize", "minimize"])
    for values in ([1.0, 5.0], [2.0, 2.0], [5.0, 1.0], [3.0, 3.0], [1.5, 6.0]):
        add(study, values=values)
    add(study, state=TrialState.PRUNED)
    rows = leaderboard(study)
    # The Pareto set (0, 1, 2) by the first objective, then the dominated (4 dominated by 0, 3 by 1), then the rest.
    assert [r.number for r in rows] == [0, 1, 2, 4, 3, 5]
    assert [r.pareto for r in rows] == [True, True, True, False, False, False]
    assert [r.rank for r in rows] == [1, 2, 3, 4, 5, None]


def test_leaderboard_causes_of_retried_resumed_and_running_trials():
    study = optuna.create_study()
    killed = "killed: worker h:1 stopped beating (no heartbeat for 60s); retried from its checkpoint"
    add(study, state=TrialState.FAIL, status="running", cause=killed)
    add(study, values=[2.0], system_attrs={"failed_trial": 0, "retry_history": [0]}, retry_of=0, resumed_from_step=16)
    add(study, state=TrialState.FAIL, status="interrupted")  # no cause written
    add(study, values=[3.0], system_attrs={"failed_trial": 2, "retry_history": [2]}, retry_of=2)
    add(study, state=TrialState.RUNNING, status="running", cause=killed)  # the placeholder until it ends
    rows = {r.number: r for r in leaderboard(study)}
    assert rows[0].cause == f"{killed}; retried as trial 1"
    assert rows[1].cause == "resumed from step 16 (re-run of trial 0)" and rows[1].rank == 1
    assert rows[2].cause == "failed; retried as trial 3"
    assert rows[3].cause is None and rows[3].retry_of == 2 and rows[3].rank == 2
    assert rows[4].cause is None and rows[4].state == "running"


def test_requeue_attrs_drop_one_run_and_extend_the_retry_history():
    study = optuna.create_study()
    attrs = {"arch_hash": "a", "cause": "interrupted", "curve": [[0, 0, 1.0]], "warm_start_from": "old#3"}
    attrs["placement"] = {"device": "0", "sharing": 4}  # the worker that ran it; the retry's may be another
    add(study, state=TrialState.FAIL, status="interrupted", system_attrs={"retry_history": [1]}, **attrs)
    frozen = study.trials[0]
    user, system = requeue_attrs(frozen, retry=True)
    assert user == {"arch_hash": "a", "warm_start_from": "old#3"}  # status, cause, curve, placement: this run's
    assert system == {"retry_history": [1, 0], "failed_trial": 0}
    user, system = requeue_attrs(frozen, retry=False)
    assert system == {"retry_history": [1]} and "cause" not in user


@pytest.mark.parametrize("state", [TrialState.COMPLETE, TrialState.PRUNED])
def test_trained_count_counts_trained_only(state):
    study = optuna.create_study()
    add(study, state=state, values=[1.0] if state == TrialState.COMPLETE else None)
    add(study, state=state, values=[1.0] if state == TrialState.COMPLETE else None, status="duplicate")
    add(study, state=TrialState.FAIL, status="trained")
    assert trained_count(study) == 1


def test_phase_seconds_round_trip_and_add_up_over_the_trained_trials():
    from nas.arch import ArchConfig
    from nas.trial import TrialResult

    arch = ArchConfig(vocab_size=512, max_seq_len=64, n_layers=2, d_model=32, n_heads=2)
    study = optuna.create_study()
    add(study, state=TrialState.PRUNED, phase_seconds={"data": 1.0, "pretrain": 2.0, "other": 0.5})
    add(study, state=TrialState.FAIL, status="failed", phase_seconds={"data": 100.0, "other": 100.0})  # not trained
    add(study, values=[3.0])  # trained before nas recorded phases
    phases = {"data": 2.0, "build": 0.25, "pretrain": 6.0, "eval": 1.5, "task qa": 3.0, "other": 0.25}
    trial = study.ask()
    write_result(trial, TrialResult(arch, "complete", {"val_loss": 3.0}, wall_seconds=13.0, phase_seconds=phases))
    set_status(trial, "trained")
    study.tell(trial, 3.0)

    pruned, failed, older, written = study_records(study)
    assert written.phase_seconds == phases and list(written.phase_seconds) == list(phases)
    assert written.wall_seconds == 13.0 and older.phase_seconds == {}
    total = time_by_phase([pruned, failed, older, written])
    assert total == {"data": 3.0, "pretrain": 8.0, "build": 0.25, "eval": 1.5, "task qa": 3.0, "other": 0.75}
    assert list(total)[-1] == "other"  # last, though the first trial recorded it before any task
    assert time_shares(total) == "pretrain 48 % · data 18 % · task qa 18 % · eval 9 % · other 5 % · build 2 %"
    assert time_shares({"pretrain": 999.0, "eval": 1.0}) == "pretrain 100 %" and time_shares({}) == ""


def test_task_baselines_round_trip_and_are_shown_beside_their_metric():
    from nas.arch import ArchConfig
    from nas.trial import TrialResult

    arch = ArchConfig(vocab_size=512, max_seq_len=64, n_layers=2, d_model=32, n_heads=2)
    baselines = {"claims.accuracy": 0.4, "claims.chance": 1 / 3, "qa.f1": 0.07, "answer.perplexity": 85.25}
    predictors = {
        "claims.accuracy": "majority class",
        "claims.chance": "uniform guess",
        "qa.f1": "first 2 words",
        "answer.perplexity": "unigram",
    }
    metrics = {"val_loss": 3.0, "claims.accuracy": 0.5, "qa.f1": 0.25, "answer.perplexity": 40.0}
    study = optuna.create_study()
    add(study, values=[3.0])  # trained before nas recorded baselines
    trial = study.ask()
    write_result(
        trial, TrialResult(arch, "complete", metrics, task_baselines=baselines, baseline_predictors=predictors)
    )
    set_status(trial, "trained")
    study.tell(trial, 3.0)

    older, written = study_records(study)
    assert written.task_baselines == baselines and written.baseline_predictors == predictors
    assert written.metrics == metrics  # the baselines are not metrics: no objective can name them
    assert older.task_baselines == {} and older.baseline("qa.f1") == ""
    assert written.baseline("claims.accuracy") == "majority class 0.4, chance 0.3333"
    assert written.baseline("answer.perplexity") == "unigram 85.25" and written.baseline("val_loss") == ""
    line = baselines_line([older, written], ["val_loss", "claims.accuracy", "qa.f1"])
    assert line == "claims.accuracy: majority class 0.4, chance 0.3333 · qa.f1: first 2 words 0.07"
    assert baselines_line([older], ["qa.f1"]) == ""


def test_a_trial_the_storage_cache_missed_is_read_all_the_same(tmp_path):
    """Optuna's cache skips a trial whose creation committed after a later trial finished (it reads only ids
    above the last finished one): read_trials finds it by the gap in the numbers, so dedupe still sees it."""
    import optuna

    from nas.search.records import read_trials

    url = f"sqlite:///{tmp_path / 'study.db'}"
    writer = optuna.create_study(study_name="s", storage=url)
    claimed = writer.ask()  # stays RUNNING: another worker's claim
    writer.tell(writer.ask(), 1.0)
    reader = optuna.load_study(study_name="s", storage=url)
    reader.get_trials()
    info = reader._storage._studies[reader._study_id]  # the cache as it is after the race: trial 0 never seen
    del info.trials[claimed.number]
    info.unfinished_trial_ids.discard(claimed._trial_id)
    del reader._storage._trial_id_to_study_id_and_number[claimed._trial_id]
    del reader._storage._study_id_and_number_to_trial_id[(reader._study_id, claimed.number)]
    assert [t.number for t in reader.get_trials()] == [1]
    trials, damaged = read_trials(reader)
    assert [t.number for t in trials] == [0, 1] and not damaged
    assert trials[0].state == optuna.trial.TrialState.RUNNING


def test_a_trial_failed_as_stale_while_its_result_was_told_reads_as_failed():
    """Its status said trained just before another worker failed it as stale (an outage held its tell past the
    grace period): it reads as failed, never trained."""
    from optuna.trial import TrialState, create_trial

    from nas.search.records import TrialRecord

    frozen = create_trial(state=TrialState.FAIL, user_attrs={"nas_status": "trained", "cause": "pruned at step 24"})
    record = TrialRecord.from_trial(frozen)
    assert record.status == "failed" and not record.trained
    assert record.cause == "failed as stale while its result was told (pruned at step 24); retried"
