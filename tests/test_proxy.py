"""nas.proxy: rank correlations and the zero-cost scores the trial records at initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from nas.proxy import fidelity, kendall, spearman, zero_cost_scores


def test_rank_correlations_hand_checked():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped pair of 4: rho = 1 - 6*2/(4*15) = 0.8; tau = (5 - 1) / 6
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(kendall([1, 1, 1], [1, 2, 3]))
    rows = fidelity({"good": [1, 2, 3, 4], "bad": [4, 3, 2, float("nan")]}, [1, 2, 3, 4])
    assert [(r.name, r.n, r.weak) for r in rows] == [("good", 4, False), ("bad", 3, True)]


def test_zero_cost_scores_leave_the_model_untouched(micro_arch):
    import transformers

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(micro_arch.to_hf_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, micro_arch.vocab_size, (4, 32))
    scores = zero_cost_scores(model, x, torch.roll(x, -1, dims=1))
    assert scores["proxy.snip"] > 0 and scores["proxy.grad_norm"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # by hand: SNIP is sum |w * g| over every weight
    model(input_ids=x, labels=None)
    from nas.train.pretrain import compute_loss

    compute_loss(model, x, torch.roll(x, -1, dims=1)).backward()
    snip = sum(float((p * p.grad).abs().sum().detach()) for p in model.parameters() if p.grad is not None)
    assert scores["proxy.snip"] == pytest.approx(snip, rel=1e-5)


def test_every_trial_records_its_zero_cost_scores(micro_pretrained):
    result, _ = micro_pretrained
    assert result.metrics["proxy.snip"] > 0 and result.metrics["proxy.grad_norm"] > 0


def test_spearman_carries_a_bootstrap_interval_that_narrows_with_trials():
    import random

    from nas.proxy import fidelity

    rng = random.Random(0)
    few = [rng.random() for _ in range(6)]
    many = [rng.random() for _ in range(200)]
    small = fidelity({"p": few}, [v + rng.gauss(0, 0.3) for v in few])[0]
    large = fidelity({"p": many}, [v + rng.gauss(0, 0.3) for v in many])[0]
    assert small.low <= small.rho <= small.high and large.low <= large.rho <= large.high
    assert large.high - large.low < small.high - small.low
    tiny = fidelity({"p": few[:4]}, few[:4])[0]
    assert tiny.low != tiny.low  # nan: four trials give no interval
