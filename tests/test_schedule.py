"""The schedule: WSD cool-downs branched off the stable phase measure the loss at several budgets."""

from __future__ import annotations

import math

import pytest

from nas.errors import NasInputError
from nas.protocol import Pretrain, Schedule, load_protocol
from nas.train.pretrain import pretrain
from nas.train.schedule import cooldown_length, cooldown_steps, lr_multiplier
from tests.test_pretrain import pattern_config as _config
from tests.test_pretrain import pattern_setup as _setup


def test_cooldown_steps_lie_after_warmup_and_inside_the_stable_phase():
    schedule = Schedule(kind="wsd", warmup_fraction=0.1, decay_fraction=0.2, cooldowns=[0.11, 0.25, 0.5, 0.79])
    assert cooldown_steps(20, schedule) == [5, 10, 16]  # 0.11 rounds into the warmup (step 2)
    assert cooldown_steps(100, schedule) == [11, 25, 50, 79]
    assert cooldown_steps(100, Schedule(kind="wsd")) == []
    assert cooldown_length(40, schedule) == 10  # a WSD run of 50 steps decays over its last 10
    # The branch's learning rate is the one a WSD run of step + length steps would use at each step.
    total = 40 + cooldown_length(40, schedule)
    assert lr_multiplier(40 / total, schedule) == 1.0 and lr_multiplier(49 / total, schedule) < 0.3


def test_cooldowns_need_wsd_and_the_stable_phase():
    with pytest.raises(NasInputError, match="cooldowns need kind: wsd"):
        load_protocol("cpu-tiny", ["pretrain.schedule.kind=cosine", "pretrain.schedule.cooldowns=[0.5]"])
    for bad in ("0.9", "0.8", "0.04"):  # in the decay; the run's own decay; inside the 0.05 warmup
        with pytest.raises(NasInputError, match="cooldowns must lie in the stable phase"):
            load_protocol("cpu-tiny", ["pretrain.schedule.kind=wsd", f"pretrain.schedule.cooldowns=[{bad}]"])


def test_a_cooldown_equals_the_shorter_wsd_run_and_leaves_the_main_run_untouched():
    schedule = {"kind": "wsd", "warmup_fraction": 0.0, "decay_fraction": 0.25}
    arch, model, train, val = _setup()
    with_branches = pretrain(
        model, train, val, _config(budget={"tokens": 256 * 40}, schedule={**schedule, "cooldowns": [0.3]}), 1.0
    )
    _, plain_model, _, _ = _setup()
    plain = pretrain(plain_model, train, val, _config(budget={"tokens": 256 * 40}, schedule=schedule), 1.0)
    # Branch at step 12, decaying over 4 more: the loss a 16-step WSD run ends with.
    _, short_model, _, _ = _setup()
    short = pretrain(short_model, train, val, _config(budget={"tokens": 256 * 16}, schedule=schedule), 1.0)

    assert [p.val_loss for p in with_branches.curve] == [p.val_loss for p in plain.curve]  # main run unchanged
    assert with_branches.annealed[0] == [256.0 * 16, short.final_val_loss]
    assert with_branches.annealed[1] == [256.0 * 40, plain.final_val_loss]
    assert with_branches.cooldown_seconds > 0 and plain.cooldown_seconds == 0
    assert with_branches.cooldown_tokens == 4 * 256 and plain.cooldown_tokens == 0
    assert plain.annealed == [[256.0 * 40, plain.final_val_loss]]  # a decayed run's end is annealed too


def test_no_annealed_point_for_a_pruned_or_constant_run():
    arch, model, train, val = _setup()
    pruned = pretrain(model, train, val, _config(), 1.0, reporter=lambda p: p.step >= 20)
    assert pruned.annealed == []
    _, model, _, _ = _setup()
    constant_config = Pretrain(**{**_config().model_dump(), "schedule": {"kind": "constant"}})
    constant = pretrain(model, train, val, constant_config, 1.0)
    assert constant.annealed == [] and math.isfinite(constant.final_val_loss)


def test_with_dropout_the_main_run_is_still_untouched_by_its_cooldowns():
    import numpy as np
    import torch
    import transformers

    from nas.arch import ArchConfig

    arch = ArchConfig(vocab_size=50, max_seq_len=32, n_layers=2, d_model=32, n_heads=2, dropout=0.2)
    ids = (np.tile(np.arange(20), 500) % 50).astype(np.uint16)

    def run(cooldowns):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(arch.to_hf_config())
        schedule = {"kind": "wsd", "warmup_fraction": 0.0, "decay_fraction": 0.25, "cooldowns": cooldowns}
        return pretrain(model, ids[:9000], ids[9000:], _config(budget={"tokens": 256 * 24}, schedule=schedule), 1.0)

    with_branch, plain = run([0.5]), run([])
    assert len(with_branch.annealed) == 2 and [p.val_loss for p in with_branch.curve] == [
        p.val_loss for p in plain.curve
    ]
