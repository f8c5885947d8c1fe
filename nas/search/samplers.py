"""Samplers and pruners: Optuna's, chosen by name, and a curve pruner for studies Optuna's cannot prune.

Optuna's ``trial.report``/``should_prune`` raise ``NotImplementedError`` in multi-objective studies,
and in a single-objective study whose objective is not the held-out loss (a task score, say) the
reported loss would be compared in the wrong direction. Costs (params, FLOPs, KV cache) are known
before training; the held-out loss is the only objective seen during training. So :class:`CurvePruner`
decides on the loss curve alone, against the other trials' curves at the same step, stored in each
trial's ``curve`` user attribute as ``[step, tokens, val_loss]`` rows.

- ``median``: prune when the loss is worse than the median of the other trials' losses at that step.
- ``sha`` (successive halving): at rungs ``min_resource * reduction_factor**k`` steps, keep a trial
  only if its loss is among the best ``1 / reduction_factor`` of the losses recorded at that rung.

When other objectives are costs known before training (params, FLOPs/token, KV bytes, minimised), a
trial is judged only against trials that cost no more on every one of them (the ones that could
dominate it): a small model that learns slower than a big one may still be on the Pareto front, and
pruning it on the loss alone would empty the cheap end of the front.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Literal, get_args

import optuna

from nas.arch import COUNT_NAMES
from nas.errors import NasInputError, did_you_mean
from nas.params import FloatParam, IntParam
from nas.protocol import TrialProtocol
from nas.search.records import arch_hash_of, counts_of, curve_of, read_trials
from nas.space import SearchSpace

__all__ = [
    "queue_unseen",
    "CurvePruner",
    "loss_at",
    "SamplerName",
    "PrunerName",
    "SAMPLERS",
    "PRUNERS",
    "make_sampler",
    "make_pruner",
    "grid_space",
]

SamplerName = Literal["tpe", "random", "nsga2", "gp", "cmaes", "grid"]
PrunerName = Literal["median", "sha", "hyperband", "none"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
PRUNERS: tuple[str, ...] = get_args(PrunerName)


SIZE = "non_embedding_params"


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
    cost_names: tuple[str, ...] = ()  # minimised count objectives: compare only with trials costing no more
    # the objective is the prediction at the target budget: compare only with trials at least as large
    # (non-embedding params), which start no faster, so a larger model is not cut for its slow start
    size_matched: bool = False

    def rung_of(self, step: int) -> int | None:
        """The highest rung reached at ``step`` (sha), or None before the first rung."""
        if step < self.min_resource:
            return None
        return int(math.floor(math.log(step / self.min_resource, self.reduction_factor) + 1e-9))

    def rung_step(self, rung: int) -> int:
        return self.min_resource * self.reduction_factor**rung

    def should_prune(
        self,
        trials: list[Any],
        number: int,
        step: int,
        loss: float,
        checked: set[int],
        costs: dict[str, float] | None = None,
    ) -> bool:
        """Decide for trial ``number`` at ``step`` with ``loss``; ``trials`` are the study's frozen trials.

        ``checked`` holds the sha rungs already passed by this trial (each rung is judged once);
        ``costs`` are this trial's values of ``cost_names`` (see the module doc).
        """
        peers = [t for t in trials if self._costs_no_more(t, costs)] if self.cost_names and costs else trials
        size = (costs or {}).get(SIZE)
        if self.size_matched and size is not None:
            peers = [t for t in peers if counts_of(t).get(SIZE, -math.inf) >= size]
        if step < self.n_warmup_steps or not math.isfinite(loss):
            return False
        if self.kind == "median":
            others = self._others_at(peers, number, step)
            if len(others) < self.n_startup_trials:
                return False
            return loss > statistics.median(others)
        rung = self.rung_of(step)
        if rung is None or rung in checked:
            return False
        checked.add(rung)
        at = self.rung_step(rung)
        others = self._others_at(peers, number, at)
        if len(others) < self.n_startup_trials:
            return False
        values = sorted([*others, loss])
        keep = max(1, len(values) // self.reduction_factor)
        return loss > values[keep - 1]

    def _costs_no_more(self, trial: Any, costs: dict[str, float] | None) -> bool:
        theirs = counts_of(trial)
        return all(name in theirs and theirs[name] <= (costs or {})[name] for name in self.cost_names)

    @staticmethod
    def _others_at(trials: list[Any], number: int, step: int) -> list[float]:
        values = []
        for trial in trials:
            if trial.number == number:
                continue
            value = loss_at(curve_of(trial), step)
            if value is not None and math.isfinite(value):
                values.append(value)
        return values


# ---- Optuna's samplers and pruners, by name ------------------------------------------------------
def make_sampler(name: str, seed: int | None, space: SearchSpace, multi: bool) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=5, constant_liar=True
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)
    if name == "cmaes":
        if multi:
            raise NasInputError("--sampler", "cmaes handles single-objective studies only; use tpe or nsga2")
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=5, warn_independent_sampling=False)
    if name == "grid":
        return optuna.samplers.GridSampler(grid_space(space), seed=seed)
    raise NasInputError(
        "--sampler", f"unknown sampler '{name}'{did_you_mean(name, SAMPLERS)}; one of {', '.join(SAMPLERS)}"
    )


def grid_space(space: SearchSpace) -> dict[str, list[Any]]:
    """Every parameter's finite values, for the grid sampler (float ranges need a step)."""
    grid: dict[str, list[Any]] = {}
    for param in space.params:
        values = param.possible_values()
        spec = param.spec
        if values is None:
            if isinstance(spec, IntParam):
                values = list(range(spec.low, spec.high + 1, spec.step))
            elif isinstance(spec, FloatParam) and spec.step is not None:
                n = int(round((spec.high - spec.low) / spec.step))
                values = [round(spec.low + i * spec.step, 12) for i in range(n + 1)]
            else:
                raise NasInputError(
                    "--sampler", f"grid needs a finite space; parameter '{param.name}' is a float range without step"
                )
        if len(values) > 1:
            grid[param.name] = values
    return grid


def make_pruner(
    name: str, protocol: TrialProtocol, multi: bool
) -> tuple[optuna.pruners.BasePruner, CurvePruner | None]:
    """(Optuna's pruner, our curve pruner). Optuna's is used when the study has one objective that is the
    held-out loss (minimised); otherwise the curve pruner decides on the loss curve (see above)."""
    if name not in PRUNERS:
        raise NasInputError(
            "--pruner", f"unknown pruner '{name}'{did_you_mean(name, PRUNERS)}; one of {', '.join(PRUNERS)}"
        )
    if name == "none":
        return optuna.pruners.NopPruner(), None
    if protocol.pretrain.rungs:
        return rung_pruner(name, len(protocol.pretrain.rungs), multi), None
    every = protocol.pretrain.eval_every
    objectives = protocol.objectives
    native = not multi and list(objectives) == ["val_loss"] and objectives["val_loss"].direction == "minimize"
    if native:
        if name == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=every), None
        if name == "sha":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=every, reduction_factor=3), None
        return optuna.pruners.HyperbandPruner(min_resource=every, reduction_factor=3), None
    kind = "median" if name == "median" else "sha"  # hyperband's first bracket is successive halving
    costs = tuple(k for k, o in objectives.items() if k in COUNT_NAMES and o.direction == "minimize")
    return optuna.pruners.NopPruner(), CurvePruner(
        kind=kind,
        n_warmup_steps=every if kind == "median" else 0,
        min_resource=every,
        cost_names=costs,
        size_matched="predicted_val_loss" in objectives,
    )


RUNG_REDUCTION = 3  # rungs: a trial goes on past a rung when among the best third there (Optuna's reduction_factor)


def rung_step(rung: int) -> int:
    """The step a rung's value is reported at: RUNG_REDUCTION ** rung, so that Optuna's successive-halving rung
    k (at min_resource 1 x reduction_factor ** k steps) is the protocol's rung k, and Hyperband's brackets
    start at the rungs (bench/RESULTS.md, gt_iso_search)."""
    return RUNG_REDUCTION**rung


def rung_pruner(name: str, n_rungs: int, multi: bool) -> optuna.pruners.BasePruner:
    """Optuna's pruner deciding at a protocol's rungs: each rung's value is reported at :func:`rung_step`.
    Successive halving promotes a trial past a rung when its value is among the best 1 / RUNG_REDUCTION of
    the values reported at that rung so far (the first trials there: when best so far; Optuna's rule, as it
    cannot pause a trial); Hyperband runs brackets that start deciding at later rungs; median compares with
    the median at the rung."""
    if multi:
        raise NasInputError("pretrain.rungs", "rungs decide on one objective: give the study a single objective")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=RUNG_REDUCTION)
    top = rung_step(n_rungs - 1)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=top, reduction_factor=RUNG_REDUCTION)


def queue_unseen(study: optuna.Study, space: SearchSpace, seed: int | None, user_attrs: dict[str, Any]) -> str | None:
    """Queue a random architecture that no trial has claimed: a sampler that keeps proposing trained ones
    (NSGA-II in a small space, say) moves on instead of stalling. Returns its summary; None when 256
    draws find none, or for the grid sampler (it queues its own grid points and never repeats)."""
    import itertools

    from nas.space import iter_random_samples

    if isinstance(study.sampler, optuna.samplers.GridSampler):
        return None
    trials = read_trials(study)[0]
    seen = {arch_hash_of(t) for t in trials}
    sampled = [p.name for p in space.params if len(p.possible_values() or [None, None]) > 1]
    draws = itertools.islice(iter_random_samples(space, ((seed or 0) + len(trials)) % 2**32), 256)
    for sample in draws:  # drawn one at a time: the first unseen ends it (a space's sampling can be slow)
        if sample.arch is not None and sample.arch.arch_hash() not in seen:
            params = {name: sample.values[name] for name in sampled if name in sample.values}
            study.enqueue_trial(params, user_attrs=user_attrs)
            return str(sample.arch.summary())
    return None
