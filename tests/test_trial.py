import math

import pytest
import torch

from nas.arch import ArchConfig
from nas.trial import PHASES, run_trial


def test_micro_trial_end_to_end(micro_protocol, micro_arch):
    protocol = micro_protocol()
    stages, steps = [], []
    result = run_trial(micro_arch, protocol, on_stage=stages.append, on_step=lambda s, loss, tps: steps.append(s))
    assert result.status == "complete" and result.cause is None
    assert stages == ["data", "pretrain", "latency", "finetune claims", "finetune qa", "finetune answer"]
    assert steps == list(range(1, 33))  # 16384 tokens / 512 per step
    assert set(protocol.metric_names()) <= set(result.metrics)
    m = result.metrics
    assert result.curve[-1].val_loss < 0.75 * result.curve[0].val_loss  # held-out loss falls well below its start
    assert m["val_loss"] == result.curve[-1].val_loss and m["val_ppl"] == pytest.approx(math.exp(m["val_loss"]))
    assert m["params"] == micro_arch.param_count() and m["tokens_trained"] == 16384
    assert m["tokens_per_second"] > 0 and m["peak_memory_mb"] > 0
    for name in (
        "claims.accuracy",
        "claims.precision",
        "claims.recall",
        "claims.macro_f1",
        "qa.exact_match",
        "qa.f1",
        "answer.exact_match",
        "answer.choice_accuracy",
    ):
        assert 0 <= m[name] <= 1, name
    assert m["answer.perplexity"] > 1
    latency = result.latency_ms
    assert latency["min"] <= latency["p25"] <= latency["median"] <= latency["p75"] <= latency["max"]
    assert m["latency_ms_per_token"] == latency["median"] > 0
    # Every task metric has its no-model baseline (and the classification task its chance level), recorded.
    tasks = {f"{t.name}.{k}" for t in protocol.tasks for k in t.metrics()}
    tasks |= {f"{t.name}.{g}.{k}" for t in protocol.tasks for g in t.grades() for k in t.metrics()}
    chance = {f"claims{g}.chance" for g in ("", ".near", ".mid", ".far")}
    assert set(result.task_baselines) == set(result.baseline_predictors) == tasks | chance
    assert tasks <= set(m)  # every task metric, and every grade's, was scored
    assert result.baseline_predictors["claims.accuracy"] == "majority class"
    assert result.baseline_predictors["answer.perplexity"] == "unigram"
    assert result.task_baselines["claims.chance"] == pytest.approx(1 / 3)
    assert 1 < result.task_baselines["answer.perplexity"] < 512
    assert all(0 <= result.task_baselines[name] <= 1 for name in tasks if not name.endswith("perplexity"))
    record = result.to_dict()
    assert record["arch_hash"] == micro_arch.arch_hash() and record["curve"][0]["step"] == 0
    assert record["task_baselines"] == result.task_baselines
    assert record["baseline_predictors"] == result.baseline_predictors


def test_a_trial_accounts_for_its_wall_time_by_phase(micro_protocol, micro_arch):
    """With a cool-down and one task, every phase takes time, and the phases add up to the wall time."""
    protocol = micro_protocol("pretrain.schedule.kind=wsd", "pretrain.schedule.cooldowns=[0.25]")
    result = run_trial(micro_arch, protocol.model_copy(update={"tasks": protocol.tasks[1:2]}))  # qa
    phases = result.phase_seconds
    assert list(phases) == [*PHASES, "task qa", "other"]
    assert all(phases[name] > 0 for name in [*PHASES, "task qa"]) and phases["other"] >= 0, phases
    assert sum(phases.values()) == pytest.approx(result.wall_seconds, abs=1e-6)  # no phase counted twice
    assert phases["other"] < 0.1 * result.wall_seconds, phases  # and the named phases cover nearly all
    assert phases["cooldowns"] == result.metrics["cooldown_seconds"]
    assert result.to_dict()["phase_seconds"] == phases


def test_reporter_prunes_and_skips_fine_tuning(micro_protocol, micro_arch):
    result = run_trial(micro_arch, micro_protocol(), reporter=lambda point: point.step >= 8)
    assert result.status == "pruned" and result.cause == "pruned at step 8"
    assert "qa.f1" not in result.metrics and result.metrics["tokens_trained"] == 8 * 512


def test_out_of_memory_retries_with_half_the_micro_batch(monkeypatch, micro_protocol, micro_arch):
    from nas import trial as trial_module

    real = trial_module.pretrain
    seen = []

    def flaky(model, train, val, config, flops, reporter, micro, on_step, checkpoint=None):
        seen.append(micro)
        if micro > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, train, val, config, flops, reporter, micro, on_step, checkpoint=checkpoint)

    monkeypatch.setattr(trial_module, "pretrain", flaky)
    protocol = micro_protocol()
    protocol = protocol.model_copy(update={"tasks": []})
    result = run_trial(micro_arch, protocol)
    assert seen == [8, 4] and result.status == "complete" and result.micro_batch_size == 4
    assert any("retried with micro-batch 4" in note for note in result.notes)

    seen.clear()

    def always_oom(*args, **kwargs):
        seen.append(args[6])
        raise torch.OutOfMemoryError()

    monkeypatch.setattr(trial_module, "pretrain", always_oom)
    failed = run_trial(micro_arch, protocol)
    assert failed.status == "failed" and failed.cause == "oom" and seen == [8, 4]
    phases = failed.phase_seconds  # both builds timed; no latency, no task
    assert phases["build"] > 0 and phases["latency"] == 0 and list(phases)[-1] == "other"
    assert sum(phases.values()) == pytest.approx(failed.wall_seconds, abs=1e-6)


def test_protocol_longer_than_the_architecture_is_refused(micro_protocol):
    short = ArchConfig(vocab_size=512, max_seq_len=32, n_layers=1, d_model=32, n_heads=2)
    with pytest.raises(ValueError, match="seq_len=64 exceeds the architecture's max_seq_len=32"):
        run_trial(short, micro_protocol())


def test_vocab_raised_to_the_tokenizer(micro_protocol):
    small_vocab = ArchConfig(vocab_size=100, max_seq_len=64, n_layers=1, d_model=32, n_heads=2)
    protocol = micro_protocol("pretrain.budget.tokens=512")
    result = run_trial(small_vocab, protocol.model_copy(update={"tasks": []}))
    assert result.arch.vocab_size == 512 and "vocab_size raised from 100" in result.notes[0]


def test_nan_loss_fails_the_trial_with_its_cause(monkeypatch, micro_protocol, micro_arch):
    from nas.train import pretrain as pretrain_module

    real = pretrain_module.compute_loss
    calls = {"n": 0}

    def poisoned(model, x, y):
        loss = real(model, x, y)
        calls["n"] += model.training
        return loss * float("nan") if model.training and calls["n"] >= 6 else loss  # call 1: the proxy

    monkeypatch.setattr(pretrain_module, "compute_loss", poisoned)
    result = run_trial(micro_arch, micro_protocol())
    assert result.status == "failed" and result.cause == "nan_loss at step 5"
    assert "qa.f1" not in result.metrics and result.metrics["tokens_trained"] == 4 * 512


def test_add_prediction_uses_the_studys_size_trend_once_it_can_be_fitted(micro_protocol, micro_arch):
    """No trial is trained: the annealed points of six "trials" follow a size trend; the prediction of a
    trial with 0.1 more loss than the trend is the trend's (own_weight 0), half the deviation more with
    own_weight 0.5, and its own curve's with too few others or with prediction: own-curve."""
    from nas.scaling import StudyFit
    from nas.trial import TrialResult, add_prediction

    base = ["pretrain.schedule.kind=wsd", "pretrain.schedule.cooldowns=[0.25, 0.5]", "target.tokens=1600000"]
    truth = lambda n, d: 2.5 + 40 * n**-0.3 + 300 * d**-0.4  # noqa: E731
    budgets = (5e4, 1e5, 2e5)
    size = micro_arch.non_embedding_params()
    others = [(size * k, [[d, truth(size * k, d)] for d in budgets]) for k in (0.1, 0.3, 3, 10, 30, 100)]
    points = [[d, truth(size, d) + 0.1] for d in budgets]

    def predict(*extra: str, with_others=others) -> dict[str, float]:
        result = TrialResult(arch=micro_arch, status="complete", annealed=points)
        add_prediction(result, micro_protocol(*base, *extra), with_others)
        return result.metrics

    trend = predict()
    assert trend["target_tokens"] == 1.6e6 and trend["prediction_trend_trials"] == 7
    fit = StudyFit.of([(size, points), *others])
    expected = fit.predict(points, size, 1.6e6)
    assert fit.trend is not None and expected is not None
    assert trend["predicted_val_loss"] == pytest.approx(expected.value)
    assert abs(trend["predicted_val_loss"] - truth(size, 1.6e6)) < 0.05  # the deviation (0.1) is not carried
    deviation = points[-1][1] - fit.trend.at(size, points[-1][0])
    half = predict("target.own_weight=0.5")
    assert deviation > 0.03 and half["predicted_val_loss"] - trend["predicted_val_loss"] == pytest.approx(deviation / 2)
    for own in (predict("target.prediction=own-curve"), predict(with_others=others[:3])):
        assert own["prediction_trend_trials"] == 0 and own["predicted_val_loss"] > trend["predicted_val_loss"] + 0.05


def test_a_gated_trial_pretrains_and_skips_its_tasks(micro_protocol, micro_arch):
    """task_gate gets the held-out loss; False: latency is measured, no task runs or reports, and it is noted."""
    seen = []
    protocol = micro_protocol()
    result = run_trial(micro_arch, protocol, task_gate=lambda loss: seen.append(loss) or False)
    assert result.status == "complete" and seen == [result.metrics["val_loss"]]
    assert not any(k.split(".")[0] in {t.name for t in protocol.tasks} for k in result.metrics)
    assert not any(name.startswith("task ") for name in result.phase_seconds) and result.phase_seconds["latency"] > 0
    assert "tasks skipped: held-out loss above the study's task_gate quantile" in result.notes
    assert math.isfinite(result.metrics["latency_ms_per_token"]) and not result.task_baselines
