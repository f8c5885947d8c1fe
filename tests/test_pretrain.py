import math
import time

import numpy as np
import pytest
import torch
import transformers

from nas.arch import ArchConfig
from nas.protocol import Pretrain, Schedule
from nas.train import pretrain as pretrain_module
from nas.train.pretrain import DataParallel, budget_tokens, lr_multiplier, pretrain


def test_schedules():
    cosine = Schedule(kind="cosine", warmup_fraction=0.1, min_lr_ratio=0.1)
    assert lr_multiplier(0.0, cosine) == 0.0 and lr_multiplier(0.05, cosine) == pytest.approx(0.5)
    assert lr_multiplier(0.1, cosine) == pytest.approx(1.0) and lr_multiplier(1.0, cosine) == pytest.approx(0.1)
    assert lr_multiplier(0.55, cosine) == pytest.approx(0.55)  # halfway through the decay: (1 + 0.1) / 2
    linear = Schedule(kind="linear", warmup_fraction=0.0, min_lr_ratio=0.0)
    assert [lr_multiplier(p, linear) for p in (0, 0.25, 1)] == pytest.approx([1, 0.75, 0])
    wsd = Schedule(kind="wsd", warmup_fraction=0.1, decay_fraction=0.2, min_lr_ratio=0.0)
    assert lr_multiplier(0.5, wsd) == 1.0 and lr_multiplier(0.8, wsd) == 1.0
    assert lr_multiplier(0.9, wsd) == pytest.approx(0.5) and lr_multiplier(1.0, wsd) == pytest.approx(0.0)
    assert lr_multiplier(0.7, Schedule(kind="constant", warmup_fraction=0.0)) == 1.0


def test_flops_budget_gives_a_bigger_model_fewer_tokens():
    config = Pretrain(seq_len=32, batch_tokens=64, budget={"flops": 1e12})
    small = ArchConfig(vocab_size=100, max_seq_len=32, n_layers=2, d_model=32, n_heads=2)
    big = ArchConfig(vocab_size=100, max_seq_len=32, n_layers=4, d_model=64, n_heads=2)
    small_tokens = budget_tokens(config, small.flops_per_token(32))
    big_tokens = budget_tokens(config, big.flops_per_token(32))
    assert big_tokens < small_tokens
    assert small_tokens * small.flops_per_token(32) == pytest.approx(1e12, rel=1e-6)
    assert budget_tokens(Pretrain(budget={"tokens": 7}), 1.0) == 7
    assert budget_tokens(Pretrain(budget={"seconds": 3}), 1.0) is None


def pattern_setup(seed=0):
    rng = np.random.default_rng(0)
    # A learnable stream: a repeating pattern with a little noise.
    ids = (np.tile(np.arange(20), 500) + (rng.random(10000) < 0.05) * 7) % 50
    arch = ArchConfig(vocab_size=50, max_seq_len=32, n_layers=2, d_model=32, n_heads=2)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(arch.to_hf_config())
    return arch, model, ids[:9000].astype(np.uint16), ids[9000:].astype(np.uint16)


def pattern_config(**kw):
    base = dict(
        seq_len=32,
        batch_tokens=256,
        budget={"tokens": 256 * 30},
        eval_every=10,
        eval_tokens=512,
        optimizer={"lr": 1e-2},
    )
    return Pretrain(**{**base, **kw})


def test_loss_falls_and_curve_is_recorded():
    arch, model, train, val = pattern_setup()
    reports = []
    outcome = pretrain(model, train, val, pattern_config(), arch.flops_per_token(32), reporter=reports.append)
    assert outcome.cause is None and outcome.steps == 30 and outcome.tokens == 30 * 256
    assert [p.step for p in outcome.curve] == [0, 10, 20, 30]
    assert [p.step for p in reports] == [10, 20, 30]  # step 0 is recorded, not reported
    assert outcome.curve[-1].val_loss < 0.7 * outcome.curve[0].val_loss
    assert outcome.tokens_per_second > 0 and outcome.curve[-1].lr > 0
    assert outcome.eval_seconds > 0


def test_reporter_can_stop_the_run():
    arch, model, train, val = pattern_setup()
    outcome = pretrain(model, train, val, pattern_config(), arch.flops_per_token(32), reporter=lambda p: p.step >= 20)
    assert outcome.cause == "pruned at step 20" and outcome.steps == 20 and outcome.curve[-1].step == 20


def test_nan_loss_stops_with_cause(monkeypatch):
    arch, model, train, val = pattern_setup()
    calls = {"n": 0}
    real = pretrain_module.compute_loss

    def poisoned(model, x, y):
        loss = real(model, x, y)
        if model.training:
            calls["n"] += 1
            if calls["n"] == 4:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(pretrain_module, "compute_loss", poisoned)
    outcome = pretrain(model, train, val, pattern_config(), arch.flops_per_token(32))
    assert outcome.cause == "nan_loss at step 4" and outcome.steps == 3  # three optimizer steps completed
    assert all(math.isfinite(p.val_loss) for p in outcome.curve)


def test_eval_seconds_time_every_held_out_eval_and_nothing_else(monkeypatch):
    """The first eval, every eval_every's and each cool-down's are timed into eval_seconds, which are
    apart from the training steps' and the cool-down branches' seconds."""
    real, calls = pretrain_module.evaluate, []

    def slow(*args):
        calls.append(args)
        time.sleep(0.05)
        return real(*args)

    monkeypatch.setattr(pretrain_module, "evaluate", slow)
    arch, model, train, val = pattern_setup()
    schedule = {"kind": "wsd", "warmup_fraction": 0.0, "decay_fraction": 0.25, "cooldowns": [0.3]}
    started = time.perf_counter()
    outcome = pretrain(model, train, val, pattern_config(budget={"tokens": 256 * 40}, schedule=schedule), 1.0)
    wall = time.perf_counter() - started
    assert len(calls) == len(outcome.curve) + 1 == 6  # steps 0, 10, 20, 30, 40 and the cool-down's (at 12)
    assert outcome.eval_seconds >= 0.05 * len(calls)
    assert outcome.train_seconds + outcome.cooldown_seconds + outcome.eval_seconds <= wall  # disjoint


def test_gradient_accumulation_matches_the_full_batch():
    arch, model_a, train, val = pattern_setup()
    _, model_b, _, _ = pattern_setup()
    a = pretrain(model_a, train, val, pattern_config(budget={"tokens": 256 * 5}), 1.0)
    b = pretrain(model_b, train, val, pattern_config(budget={"tokens": 256 * 5}), 1.0, micro_batch_size=2)
    assert b.micro_batch_size == 2 and a.micro_batch_size == 8
    assert a.curve[-1].val_loss == pytest.approx(b.curve[-1].val_loss, rel=1e-3)


def test_seconds_budget_stops_on_time():
    arch, model, train, val = pattern_setup()
    outcome = pretrain(model, train, val, pattern_config(budget={"seconds": 0.5}), 1.0)
    assert outcome.cause is None and 0.5 <= outcome.train_seconds < 2.0 and outcome.steps > 0


def test_data_parallel_batch_must_split_over_the_processes():
    arch, model, train, val = pattern_setup()
    with pytest.raises(ValueError, match="batch of 8 sequences does not split over 3 processes"):
        pretrain(model, train, val, pattern_config(), 1.0, parallel=DataParallel(rank=0, world=3))
    single = pretrain(model, train, val, pattern_config(budget={"tokens": 256 * 2}), 1.0, parallel=DataParallel())
    assert single.steps == 2 and single.micro_batch_size == 8  # one process: the whole batch


@pytest.mark.parametrize(("width_base", "peak"), [(None, 1e-2), (64, 1e-2), (16, 1e-2 * 16 / 32)])
def test_a_model_wider_than_lr_width_base_peaks_at_a_proportionally_smaller_lr(width_base, peak, monkeypatch):
    arch, model, train, val = pattern_setup()  # d_model 32
    config = pattern_config(
        optimizer={"lr": 1e-2, "lr_width_base": width_base},
        schedule=Schedule(kind="wsd", warmup_fraction=0.1, decay_fraction=0.2, cooldowns=[0.5]),
    )
    stepped = []  # every step's lr, the cool-down branch's included
    step = pretrain_module._train_step
    monkeypatch.setattr(
        pretrain_module, "_train_step", lambda run, ids, k, lr: stepped.append(lr) or step(run, ids, k, lr)
    )
    outcome = pretrain(model, train, val, config, arch.flops_per_token(32))
    assert len(stepped) > outcome.steps and max(stepped) == pytest.approx(peak)  # the branch decays from it too
    stable = [p.lr for p in outcome.curve if 0 < p.step <= 20]  # evals at steps 10 and 20: the stable phase
    assert stable == pytest.approx([peak, peak])
    assert max(p.lr for p in outcome.curve) == pytest.approx(peak)
    assert len(outcome.annealed) == 2  # the cool-down branch ran too (it decays from the same peak)


def test_hidden_width_scope_scales_only_the_hidden_matrices():
    arch = ArchConfig(vocab_size=50, max_seq_len=32, n_layers=2, d_model=128, n_heads=4)
    model = transformers.AutoModelForCausalLM.from_config(arch.to_hf_config())
    optimizer = {"lr": 1e-2, "lr_width_base": 64}
    whole = Pretrain(optimizer=optimizer)
    assert whole.optimizer.peak_lr(128) == pytest.approx(5e-3)
    assert len(pretrain_module.make_optimizer(model, whole, 5e-3, torch.device("cpu")).param_groups) == 2
    hidden = Pretrain(optimizer={**optimizer, "lr_width_scope": "hidden"})
    assert hidden.optimizer.peak_lr(128) == 1e-2  # the schedule's peak: embeddings, norms, biases keep lr
    groups = pretrain_module.make_optimizer(model, hidden, 1e-2, torch.device("cpu")).param_groups
    embedding = model.get_input_embeddings().weight
    assert [g.get("lr_scale", 1.0) for g in groups] == [0.5, 1.0, 1.0]
    assert any(p is embedding for p in groups[1]["params"]) and not any(p is embedding for p in groups[0]["params"])
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and len(groups[0]["params"]) >= 2 * 7
    assert Pretrain(optimizer=optimizer).model_dump() != hidden.model_dump()
