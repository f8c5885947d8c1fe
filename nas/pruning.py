"""Pruning on the held-out loss curve, for studies where Optuna's pruners cannot be used.

Optuna's ``trial.report``/``should_prune`` raise ``NotImplementedError`` in multi-objective studies,
and in a single-objective study whose objective is not the held-out loss (a task score, say) the
reported loss would be compared in the wrong direction. Costs (params, FLOPs, KV cache) are known
before training; the held-out loss is the only objective seen during training. So these pruners
decide on the loss curve alone, against the other trials' curves at the same step, stored in each
trial's ``curve`` user attribute as ``[step, tokens, val_loss]`` rows.

- ``median``: prune when the loss is worse than the median of the other trials' losses at that step.
- ``sha`` (successive halving): at rungs ``min_resource * reduction_factor**k`` steps, keep a trial
  only if its loss is among the best ``1 / reduction_factor`` of the losses recorded at that rung.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

__all__ = ["CurvePruner", "loss_at"]


def loss_at(curve: list[list[float]], step: int) -> float | None:
    """The loss of a curve at ``step``: its last eval at or before ``step``, if it got that far."""
    if not curve or curve[-1][0] < step:
        return None
    best = None
    for row in curve:
        if row[0] <= step:
            best = row[2]
    return best


@dataclass
class CurvePruner:
    kind: str = "median"  # "median" or "sha"
    n_startup_trials: int = 2  # trials that must have reached a step before anything is pruned there
    n_warmup_steps: int = 0  # no pruning before this step
    min_resource: int = 10  # sha: the first rung, in steps
    reduction_factor: int = 3

    def rung_of(self, step: int) -> int | None:
        """The highest rung reached at ``step`` (sha), or None before the first rung."""
        if step < self.min_resource:
            return None
        return int(math.floor(math.log(step / self.min_resource, self.reduction_factor) + 1e-9))

    def rung_step(self, rung: int) -> int:
        return self.min_resource * self.reduction_factor**rung

    def should_prune(self, trials: list[Any], number: int, step: int, loss: float, checked: set[int]) -> bool:
        """Decide for trial ``number`` at ``step`` with ``loss``; ``trials`` are the study's frozen trials.

        ``checked`` holds the sha rungs already passed by this trial (each rung is judged once).
        """
        if step < self.n_warmup_steps or not math.isfinite(loss):
            return False
        if self.kind == "median":
            others = self._others_at(trials, number, step)
            if len(others) < self.n_startup_trials:
                return False
            return loss > statistics.median(others)
        rung = self.rung_of(step)
        if rung is None or rung in checked:
            return False
        checked.add(rung)
        at = self.rung_step(rung)
        others = self._others_at(trials, number, at)
        if len(others) < self.n_startup_trials:
            return False
        values = sorted([*others, loss])
        keep = max(1, len(values) // self.reduction_factor)
        return loss > values[keep - 1]

    @staticmethod
    def _others_at(trials: list[Any], number: int, step: int) -> list[float]:
        values = []
        for trial in trials:
            if trial.number == number:
                continue
            value = loss_at(trial.user_attrs.get("curve") or [], step)
            if value is not None and math.isfinite(value):
                values.append(value)
        return values
