"""Trial checkpoints: a run killed mid-way resumes from its last checkpoint and ends where an
uninterrupted run ends."""

from __future__ import annotations

import pytest

from nas.train.checkpoint import Checkpoint
from nas.trial import run_trial


class Killed(Exception):
    pass


def die_at_20(step, loss, tps):
    """An on_step callback that kills the run at step 20 (after the checkpoint at 16)."""
    if step == 20:
        raise Killed


def test_resumed_run_matches_an_uninterrupted_one(micro_protocol, micro_arch, tmp_path):
    protocol = micro_protocol("tasks=[]")  # 32 steps, evals every 8
    plain = run_trial(micro_arch, protocol)

    checkpoint = Checkpoint(tmp_path / "ck", every=8, key="micro")

    with pytest.raises(Killed):
        run_trial(micro_arch, protocol, on_step=die_at_20, checkpoint=checkpoint)
    saved = checkpoint.load()
    assert saved is not None and saved["step"] == 16 and len(saved["curve"]) == 3  # steps 0, 8, 16

    seen = []
    resumed = run_trial(micro_arch, protocol, reporter=lambda p: seen.append(p.step), checkpoint=checkpoint)
    assert resumed.resumed_from_step == 16 and "resumed from the checkpoint at step 16" in resumed.notes
    assert seen == [8, 16, 24, 32]  # the restored evals are reported again, then the new ones
    assert [p.step for p in resumed.curve] == [p.step for p in plain.curve]
    assert [p.val_loss for p in resumed.curve] == pytest.approx([p.val_loss for p in plain.curve], abs=1e-5)
    assert resumed.metrics["tokens_trained"] == plain.metrics["tokens_trained"]
    assert checkpoint.load()["step"] == 32


def test_a_checkpoint_of_another_key_is_ignored(micro_protocol, micro_arch, tmp_path):
    protocol = micro_protocol("tasks=[]", "pretrain.budget.tokens=4096")
    run_trial(micro_arch, protocol, checkpoint=Checkpoint(tmp_path, every=4, key="a"))
    assert Checkpoint(tmp_path, every=4, key="b").load() is None
    result = run_trial(micro_arch, protocol, checkpoint=Checkpoint(tmp_path, every=4, key="b"))
    assert result.resumed_from_step is None


def test_a_resumed_run_that_the_pruner_stops_ends_at_a_restored_eval(micro_protocol, micro_arch, tmp_path):
    protocol = micro_protocol("tasks=[]")
    checkpoint = Checkpoint(tmp_path, every=8)

    with pytest.raises(Killed):
        run_trial(micro_arch, protocol, on_step=die_at_20, checkpoint=checkpoint)
    result = run_trial(micro_arch, protocol, reporter=lambda p: p.step == 8, checkpoint=checkpoint)
    assert result.status == "pruned" and result.cause == "pruned at step 8"


def test_a_resumed_run_keeps_the_cooldowns_measured_before_the_kill(micro_protocol, micro_arch, tmp_path):
    protocol = micro_protocol("tasks=[]", "pretrain.schedule.kind=wsd", "pretrain.schedule.cooldowns=[0.25]")
    plain = run_trial(micro_arch, protocol)  # 32 steps: a cool-down branches off at step 8
    assert len(plain.annealed) == 2 and plain.metrics["cooldown_seconds"] > 0

    checkpoint = Checkpoint(tmp_path / "ck", every=8, key="micro")

    with pytest.raises(Killed):
        run_trial(micro_arch, protocol, on_step=die_at_20, checkpoint=checkpoint)
    saved = checkpoint.load()
    assert saved["annealed"] == [plain.annealed[0]]  # saved at step 16, after the cool-down
    assert saved["eval_seconds"] > 0  # the evals of steps 0, 8, 16 and the cool-down's
    resumed = run_trial(micro_arch, protocol, checkpoint=checkpoint)
    assert resumed.resumed_from_step == 16
    assert sum(resumed.phase_seconds.values()) == pytest.approx(resumed.wall_seconds, abs=1e-6)
    assert resumed.annealed[0] == plain.annealed[0]  # not measured again
    assert resumed.annealed[1] == pytest.approx(plain.annealed[1], abs=1e-5)
    assert resumed.metrics["predicted_val_loss"] == pytest.approx(plain.metrics["predicted_val_loss"], abs=1e-4)
