"""What the study tells a trial as it finishes: whether to fine-tune on the tasks (the protocol's
``task_gate``), and its prediction at the target budget refitted with every trained trial's size and
annealed points (nas.scaling). Both read the study through nas.search.records."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna

from nas.protocol import TrialProtocol
from nas.search import records

__all__ = ["add_study_prediction", "rung_value", "task_gate"]


def task_gate(study: optuna.Study, protocol: TrialProtocol, number: int) -> Callable[[float], bool] | None:
    """The protocol's ``task_gate`` for trial ``number``, judged on the study when the trial has
    pretrained: fine-tune when fewer than ``min_trials`` trials have completed, or when the held-out
    loss is at most the ``quantile`` of theirs (nas.protocol.TaskGate). None without a gate."""
    gate = protocol.task_gate
    if gate is None:
        return None

    def judge(val_loss: float) -> bool:
        done = [r for r in records.study_records(study) if r.state == "complete" and r.trained and r.number != number]
        losses = [loss for r in done if math.isfinite(loss := r.metric("val_loss"))]
        if len(losses) < gate.min_trials:
            return True
        import numpy as np

        return val_loss <= float(np.quantile(losses, gate.quantile))

    return judge


def rung_value(
    study: optuna.Study, protocol: TrialProtocol, number: int, arch: Any, points: list[list[float]], rung: int
) -> float:
    """What trial ``number`` reports at rung index ``rung`` (``points``: its rungs' annealed [tokens, loss] so
    far, this rung's last): with ``predicted_val_loss`` as the objective, the prediction at the target from the
    study's size trend plus the rung's weight times the trial's deviation from it at this rung (NaN while the
    trend cannot be fitted: the trial then goes on); otherwise the rung's annealed loss, the same budget for
    every trial at that rung."""
    if list(protocol.objectives) != ["predicted_val_loss"]:
        return float(points[-1][1])
    from nas.scaling import StudyFit, target_tokens

    target = protocol.target
    others = [
        (r.metric("non_embedding_params"), r.annealed)
        for r in records.study_records(study)
        if r.trained and r.annealed and r.number != number
    ]
    size = float(arch.non_embedding_params())
    fit = StudyFit.for_target([(size, points), *others], target)
    if fit.trend is None:
        return math.nan
    counts = arch.counts()
    tokens = target_tokens(
        counts["params"],
        arch.flops_per_token(protocol.pretrain.seq_len),
        target.tokens,
        target.flops,
        target.tokens_per_param,
    )
    prediction = fit.predict(points, size, tokens, target.weight_at(rung), min_points=1)
    return prediction.value if prediction is not None else math.nan


def add_study_prediction(study: optuna.Study, protocol: TrialProtocol, number: int, result: Any) -> None:
    """Trial ``number``'s prediction at the target budget (nas.trial.add_prediction) with every other
    trained trial's size and annealed points: the size trend and the shared data exponent sharpen as
    the study grows. A protocol with no cool-downs predicts nothing: the study is not read."""
    if not protocol.pretrain.anneals:
        return
    from nas.trial import add_prediction

    others = [
        (r.metric("non_embedding_params"), r.annealed)
        for r in records.study_records(study)
        if r.trained and r.annealed and r.number != number
    ]
    add_prediction(result, protocol, others)
