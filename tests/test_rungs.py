"""Rungs: a run planned to its top rung, a cool-down landing on each lower rung, stopped at a rung by its
reporter, and continued from a rung without a restart (bit-identical to a straight run to that rung)."""

import pytest
import torch

from nas.arch import ArchConfig
from nas.errors import NasInputError
from nas.protocol import load_protocol
from nas.train.pretrain import pretrain
from nas.train.schedule import rung_lr, rung_plan
from tests.test_pretrain import pattern_config, pattern_setup


def _setup():
    return pattern_setup()


def _config(rungs, **kw):
    schedule = {"kind": "wsd", "warmup_fraction": 0.2, "decay_fraction": 0.2}
    return pattern_config(
        **{"budget": {"tokens": 256 * 10}, "eval_every": 7, "schedule": schedule, "rungs": rungs, **kw}
    )


def test_plan_lands_a_cooldown_on_each_lower_rung():
    plan = rung_plan(_config([1, 2.5, 5]), 1.0)
    assert plan.total_steps == 50 and plan.rung_ends == (10, 25, 50) and plan.warmup_steps == 2
    assert [(b.step, b.end, b.rung) for b in plan.branches] == [(8, 10, 0), (20, 25, 1)]
    schedule = {"kind": "wsd", "warmup_fraction": 0.1, "cooldowns": [0.5]}
    with_cooldowns = rung_plan(_config([1, 2], schedule=schedule), 1.0)
    assert [(b.step, b.end, b.rung) for b in with_cooldowns.branches] == [(5, 6, None), (8, 10, 0)]
    schedule = _config([1, 2]).schedule
    assert [rung_lr(s, 10, 2, schedule) for s in (0, 1, 2, 8)] == [0.5, 1.0, 1.0, 1.0]
    assert rung_lr(9, 10, 2, schedule) == pytest.approx(1 - 0.9 * 0.5)


def test_rungs_report_each_annealed_point_and_the_trial_goes_on():
    arch, model, train, val = _setup()
    points = []
    outcome = pretrain(model, train, val, _config([1, 2, 4]), arch.flops_per_token(32), reporter=points.append)
    rungs = [p for p in points if p.rung is not None]
    assert [(p.rung, p.tokens) for p in rungs] == [(0, 2560), (1, 5120), (2, 10240)]
    assert outcome.cause is None and outcome.steps == 40 and outcome.rung == 2
    assert [a[0] for a in outcome.annealed] == [2560, 5120, 10240]
    assert [p.val_loss for p in rungs] == [a[1] for a in outcome.annealed]
    assert rungs[0].val_loss > rungs[1].val_loss > rungs[2].val_loss


def test_stopped_at_a_rung_is_bit_identical_to_a_straight_run_to_that_rung():
    arch, model, train, val = _setup()
    stop = pretrain(model, train, val, _config([1, 2, 4]), arch.flops_per_token(32), reporter=lambda p: p.rung == 1)
    assert stop.cause == "pruned at rung 2 (5,120 tokens)" and stop.rung == 1
    _, straight_model, _, _ = _setup()
    straight = pretrain(straight_model, train, val, _config([1, 2]), arch.flops_per_token(32))
    assert straight.cause is None and straight.rung == 1
    assert stop.annealed == straight.annealed  # both rungs' losses, to the last bit
    for (name, a), (_, b) in zip(model.state_dict().items(), straight_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # the stopped trial keeps the rung's annealed weights


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.rungs=[2, 4]", "starting at 1"),
        ("pretrain.rungs=[1, 1]", "increasing"),
        ("pretrain.rungs=[1]", "increasing"),
        ("pretrain.rungs=[1, 5000]", "at most 1000"),
        (["pretrain.schedule={kind: cosine}", "pretrain.rungs=[1, 2]"], "schedule.kind: wsd"),
        ("target.rung_weights=[0, 1]", "one weight per rung"),
    ],
)
def test_bad_rungs_name_their_key(override, message):
    with pytest.raises(NasInputError) as info:
        load_protocol("cpu-tiny", overrides=override if isinstance(override, list) else [override])
    assert message in str(info.value) and ("rung" in str(info.value))


def test_rung_weights_need_one_per_rung_and_lie_in_0_1():
    wsd = ["pretrain.schedule.kind=wsd", "pretrain.rungs=[1, 2.5, 5]"]
    protocol = load_protocol("cpu-tiny", overrides=[*wsd, "target.rung_weights=[0, 0.5, 1]"])
    assert [protocol.target.weight_at(k) for k in (None, 0, 1, 2)] == [0.0, 0.0, 0.5, 1.0]
    with pytest.raises(NasInputError, match="rung_weights"):
        load_protocol("cpu-tiny", overrides=[*wsd, "target.rung_weights=[0, 0.5, 2]"])
    with pytest.raises(NasInputError, match="time budget"):
        load_protocol("cpu-tiny", overrides=[*wsd, "pretrain.budget={seconds: 5}"])
    plain = load_protocol("cpu-tiny")
    assert load_protocol("cpu-tiny", overrides=[*wsd]).content_hash != plain.content_hash
    assert "rungs" not in plain.model_dump_json() or plain.pretrain.rungs is None


def test_rungs_stop_at_the_target_budget():
    from nas.train.schedule import rungs_within_target

    config = _config([1, 2.5, 5])  # budget 2,560 tokens: rungs at 2,560, 6,400, 12,800
    assert rungs_within_target(config, 1.0, 20000) == (config, False)
    capped, at_target = rungs_within_target(config, 1.0, 8000)
    assert at_target and capped.rungs == [1, 2.5, 8000 / 2560]
    assert rung_plan(capped, 1.0).rung_ends == (10, 25, 31)  # the target is the last rung: a full training
    inside, at_target = rungs_within_target(config, 1.0, 2000)
    assert at_target and inside.rungs is None and inside.budget.tokens == 2000


def test_a_trial_trained_to_its_target_reports_the_top_rung(micro_protocol):
    from nas.trial import run_trial

    arch = ArchConfig(vocab_size=512, max_seq_len=64, n_layers=1, d_model=32, n_heads=2)
    sets = ["pretrain.schedule.kind=wsd", "pretrain.rungs=[1, 2, 4]", "target.tokens=40000", "tasks=[]"]
    protocol = micro_protocol(*sets)
    rungs = []
    result = run_trial(
        arch, protocol, reporter=lambda p: rungs.append((p.rung, p.tokens)) if p.rung is not None else None
    )
    assert [r for r, _ in rungs] == [0, 1, 2]  # 16k, 32k, then the target (40k, in whole steps) as the top rung
    assert rungs[-1][1] == 39936 and result.metrics["rung"] == 2 and result.metrics["at_target"] == 1.0
    assert result.status == "complete" and result.metrics["tokens_trained"] == 39936
