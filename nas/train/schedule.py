"""The learning-rate schedule and the budget: how many tokens, the LR factor at each point, and where a
warmup-stable-decay run branches off its cool-downs.

A WSD run holds its peak learning rate through a stable phase and decays over its last
``decay_fraction``. A run of S steps is, up to step S·(1 - decay_fraction), the same as every longer
WSD run with the same peak: so a cool-down branched off the stable phase at step s, decaying over
s·d/(1 - d) further steps, gives the loss a full WSD run of s/(1 - d) steps would have ended with
(warmup aside: the branch keeps the main run's). ``schedule.cooldowns`` lists such branch points as
fractions of the budget; one trial then measures its loss at several budgets.
"""

from __future__ import annotations

import math

from nas.protocol import Pretrain, Schedule

__all__ = ["budget_tokens", "lr_multiplier", "cooldown_steps", "cooldown_length"]


def budget_tokens(config: Pretrain, flops_per_token: float) -> int | None:
    """Tokens to train: the token budget, or the FLOP budget divided by the architecture's FLOPs/token
    (compute-matched: a bigger model gets fewer tokens); None for a time budget."""
    budget = config.budget
    if budget.tokens is not None:
        return budget.tokens
    if budget.flops is not None:
        return max(config.batch_tokens, int(budget.flops / flops_per_token))
    return None


def lr_multiplier(progress: float, schedule: Schedule) -> float:
    """LR factor at ``progress`` in [0, 1]: linear warmup, then cosine / linear / WSD / constant."""
    progress = min(max(progress, 0.0), 1.0)
    warmup = schedule.warmup_fraction
    if warmup > 0 and progress < warmup:
        return progress / warmup
    floor = schedule.min_lr_ratio
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "wsd":
        decay_start = 1.0 - schedule.decay_fraction
        if progress <= decay_start:
            return 1.0
        return 1.0 - (1.0 - floor) * (progress - decay_start) / schedule.decay_fraction
    rest = (progress - warmup) / (1.0 - warmup) if warmup < 1 else 1.0
    if schedule.kind == "linear":
        return 1.0 - (1.0 - floor) * rest
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * rest))


def cooldown_steps(total_steps: int, schedule: Schedule) -> list[int]:
    """The steps of a ``total_steps`` run after which a cool-down branches off (WSD only): each listed
    fraction of the budget, rounded, kept when it lies after the warmup and within the stable phase."""
    if schedule.kind != "wsd" or not schedule.cooldowns:
        return []
    stable_end = math.floor(total_steps * (1.0 - schedule.decay_fraction))
    warmup_end = math.ceil(total_steps * schedule.warmup_fraction)
    steps = {round(f * total_steps) for f in schedule.cooldowns}
    return sorted(s for s in steps if warmup_end < s <= stable_end)


def cooldown_length(branch_step: int, schedule: Schedule) -> int:
    """Decay steps of the cool-down branched at ``branch_step``: the WSD run it stands for has
    ``branch_step + cooldown_length`` steps, the last ``decay_fraction`` of them decaying."""
    d = schedule.decay_fraction
    return max(1, round(branch_step * d / (1.0 - d))) if d < 1 else branch_step
