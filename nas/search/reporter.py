"""A search trial's reporter (nas.trial.run_trial calls it at each held-out eval and each rung): it stores the
curve and the rungs so far, and asks the pruner whether the trial goes on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.search import feedback, records
from nas.search.samplers import SIZE, CurvePruner, rung_step
from nas.search.workers import sigint

__all__ = ["make_reporter"]


def make_reporter(
    study: optuna.Study,
    protocol: Any,
    pruner: CurvePruner | None,
    trial: optuna.Trial,
    arch: Any,
    prune: bool = True,
) -> Callable[[Any], bool]:
    """Each held-out eval: store the curve so far, then (``prune``) ask the pruner (``pruner``: nas's curve
    pruner, else the study's own); with ``pretrain.rungs`` only a rung decides."""
    wanted = set(pruner.cost_names) | ({SIZE} if pruner.size_matched else set()) if pruner else set()
    costs = {k: v for k, v in arch.counts().items() if k in wanted}
    curve: list[list[float]] = []
    rungs: list[list[float]] = []
    checked: set[int] = set()

    def reporter(point: Any) -> bool:
        with sigint.held():
            if getattr(point, "rung", None) is not None:  # a rung's annealed loss (nas.train.pretrain.EvalPoint)
                return _rung_reached(study, protocol, trial, arch, point, rungs, prune)
            curve.append([point.step, point.tokens, point.val_loss])
            records.write_curve(trial, curve)
            if protocol.pretrain.rungs or not prune:
                return False
            if pruner is not None:
                trials = study.get_trials(
                    deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
                )
                return pruner.should_prune(trials, trial.number, point.step, point.val_loss, checked, costs)
            if isinstance(study.pruner, optuna.pruners.NopPruner):
                return False
            trial.report(point.val_loss, point.step)
            return trial.should_prune()

    return reporter


def _rung_reached(
    study: optuna.Study,
    protocol: Any,
    trial: optuna.Trial,
    arch: Any,
    point: Any,
    rungs: list[list[float]],
    prune: bool,
) -> bool:
    """A rung's annealed loss: its value (nas.search.feedback.rung_value) reported at the rung's step, and
    the pruner's word on going on (never at the top rung, nor while the value cannot be had yet, nor without
    ``prune``)."""
    rungs.append([float(point.tokens), float(point.val_loss)])
    records.write_rungs(trial, rungs)
    if not prune:
        return False
    top = point.rung == len(protocol.pretrain.rungs or []) - 1
    value = feedback.rung_value(study, protocol, trial.number, arch, rungs, point.rung)
    if not math.isfinite(value) or isinstance(study.pruner, optuna.pruners.NopPruner):
        return False
    trial.report(value, rung_step(point.rung))
    return not top and trial.should_prune()
