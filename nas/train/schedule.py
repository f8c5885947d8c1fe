"""The learning-rate schedule and the budget: how many tokens, the LR factor at each point, and where a
warmup-stable-decay run branches off its cool-downs.

A WSD run holds its peak learning rate through a stable phase and decays over its last
``decay_fraction``. A run of S steps is, up to step S·(1 - decay_fraction), the same as every longer
WSD run with the same peak: so a cool-down branched off the stable phase at step s, decaying over
s·d/(1 - d) further steps, gives the loss a full WSD run of s/(1 - d) steps would have ended with
(warmup aside: the branch keeps the main run's). ``schedule.cooldowns`` lists such branch points as
fractions of the budget; one trial then measures its loss at several budgets.

With ``pretrain.rungs`` (multiples of the budget, the first 1) the run is planned to the top rung and a
cool-down lands exactly on each lower rung: rung k ends at step R_k, its branch leaves the main run at
R_k·(1 - d) and decays as a WSD run of R_k steps would. The warmup is the first rung's
(``warmup_fraction`` of the budget, in whole steps), shared by every rung, so the state a branch reaches
at a rung is the state of a straight run of that rung's length under the same warmup and peak
(:func:`rung_plan`, :func:`rung_lr`): a trial trains on from a rung without a restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nas.protocol import Pretrain, Schedule

__all__ = [
    "budget_tokens",
    "lr_multiplier",
    "cooldown_steps",
    "cooldown_length",
    "Branch",
    "RungPlan",
    "rung_plan",
    "rung_lr",
    "rungs_within_target",
]


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


@dataclass(frozen=True)
class Branch:
    """A cool-down: it leaves the main run after ``step`` and stands for a WSD run of ``end`` steps;
    ``rung``: the index of the rung it measures (None: a plain cool-down of ``schedule.cooldowns``)."""

    step: int
    end: int
    rung: int | None = None


@dataclass(frozen=True)
class RungPlan:
    """A run through ``pretrain.rungs``: its steps (the top rung's), warmup steps, each rung's last step,
    and its cool-down branches in step order."""

    total_steps: int
    warmup_steps: int
    rung_ends: tuple[int, ...]
    branches: tuple[Branch, ...]


def rung_plan(config: Pretrain, flops_per_token: float) -> RungPlan:
    """The plan of a run with ``config.rungs`` (see the module doc); ValueError when the budget is too
    short to tell the rungs or the warmup apart."""
    rungs, schedule = config.rungs, config.schedule
    tokens = budget_tokens(config, flops_per_token)
    if not rungs or tokens is None:
        raise ValueError("a rung plan needs pretrain.rungs and a token or FLOP budget")
    budget_steps = math.ceil(tokens / config.batch_tokens)
    ends = tuple(max(1, round(budget_steps * m)) for m in rungs)
    if any(b <= a for a, b in zip(ends, ends[1:], strict=False)):
        raise ValueError(f"pretrain.rungs {list(rungs)} give rungs of equal length at a budget of {budget_steps} steps")
    warmup = math.ceil(budget_steps * schedule.warmup_fraction)
    d = schedule.decay_fraction
    branches = [Branch(round(end * (1 - d)), end, k) for k, end in enumerate(ends[:-1])]
    if branches and branches[0].step <= warmup:
        raise ValueError(
            f"pretrain.rungs: the first rung's cool-down would start at step {branches[0].step}, inside the "
            f"{warmup}-step warmup: raise the budget or lower schedule.warmup_fraction"
        )
    first_decay = branches[0].step if branches else round(ends[-1] * (1 - d))
    plain = sorted({round(f * budget_steps) for f in schedule.cooldowns})
    branches += [Branch(s, s + cooldown_length(s, schedule)) for s in plain if warmup < s < first_decay]
    return RungPlan(ends[-1], warmup, ends, tuple(sorted(branches, key=lambda b: (b.step, b.end))))


def rungs_within_target(config: Pretrain, flops_per_token: float, target_tokens: float | None) -> tuple[Pretrain, bool]:
    """``config`` with its rungs cut at the full-training budget: a rung at or past ``target_tokens`` would
    train longer than full training, so the rungs below the target are kept and the target itself becomes
    the last rung (a trial that reaches it is fully trained: its loss there is measured, not predicted).
    Returns (config, whether the target is now the last rung)."""
    tokens = budget_tokens(config, flops_per_token)
    rungs = config.rungs
    if not rungs or tokens is None or target_tokens is None or target_tokens >= rungs[-1] * tokens:
        return config, False
    below = [m for m in rungs if m * tokens < target_tokens - config.batch_tokens]
    final = target_tokens / tokens
    if not below:  # the target is within the first rung: the trial is a full training at the target
        budget = config.budget.model_copy(update={"tokens": int(target_tokens), "flops": None})
        return config.model_copy(update={"rungs": None, "budget": budget}), True
    return config.model_copy(update={"rungs": [*below, final]}), True


def rung_lr(step: int, total_steps: int, warmup_steps: int, schedule: Schedule) -> float:
    """The LR factor at ``step`` of a WSD run of ``total_steps`` with a warmup of ``warmup_steps`` whole
    steps: the main run of a rung plan (its top rung) and every rung's branch (a run of that rung's length)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = step / total_steps
    decay_start = 1.0 - schedule.decay_fraction
    if progress <= decay_start:
        return 1.0
    floor = schedule.min_lr_ratio
    return 1.0 - (1.0 - floor) * (progress - decay_start) / schedule.decay_fraction
