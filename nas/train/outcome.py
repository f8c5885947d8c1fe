"""What a pretraining run reports and returns: a held-out eval point (:class:`EvalPoint`, also each
rung's annealed point) and the run's :class:`PretrainOutcome`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EvalPoint:
    step: int
    tokens: int
    val_loss: float
    train_loss: float
    lr: float
    seconds: float  # training seconds so far (evals excluded)
    rung: int | None = None  # the rung's index, for the annealed loss a rung's cool-down (or the run's end) measured

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.rung is None:
            del out["rung"]
        return out


Reporter = Callable[[EvalPoint], bool | None]
StepCallback = Callable[[int, float, float], None]  # (step, loss, tokens/s)


@dataclass
class PretrainOutcome:
    curve: list[EvalPoint] = field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    cause: str | None = None  # why it ended early: "pruned at step k", "pruned at rung k", "nan_loss at step k"
    micro_batch_size: int = 0
    resumed_from_step: int | None = None  # the checkpoint's step, when the run resumed from one
    # [tokens, held-out loss] of each cool-down (the WSD run it stands for), then of the finished run
    annealed: list[list[float]] = field(default_factory=list)
    cooldown_seconds: float = 0.0  # training time spent in cool-down branches (not in train_seconds)
    cooldown_tokens: int = 0  # tokens trained in cool-down branches (not in tokens)
    eval_seconds: float = 0.0  # wall time of the held-out evals: the first, every eval_every, each cool-down's
    rung: int | None = None  # with pretrain.rungs: the index of the highest rung reached

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def final_val_loss(self) -> float:
        return self.curve[-1].val_loss if self.curve else math.nan
