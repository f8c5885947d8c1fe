"""The pretraining section of a trial protocol (``pretrain``: budget, optimizer, schedule, rungs) and the
full-training budget a trial predicts its loss at (``target``); nas.protocol reads them in."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from nas.protocol_data import Count, Real, Seed, Strict


class Budget(Strict):
    ALTERNATIVES: ClassVar[tuple[str, ...]] = ("tokens", "flops", "seconds")  # a --set of one replaces the others

    tokens: Count | None = Field(default=None, ge=1)
    flops: Real | None = Field(default=None, gt=0, le=1e30)
    seconds: Real | None = Field(default=None, gt=0, le=1e8)

    @model_validator(mode="after")
    def _exactly_one(self) -> Budget:
        given = [k for k in ("tokens", "flops", "seconds") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of tokens, flops, seconds (got {', '.join(given) or 'none'})")
        return self


class Target(Strict):
    """The full-training budget a trial predicts its held-out loss at (``predicted_val_loss``).
    Neither given: what `nas train` uses by default, ``tokens_per_param`` tokens per parameter.
    ``batch_tokens``: full training's tokens per optimizer step when it differs from the trial's
    (a trial may take more, smaller steps from its few tokens: bench/trial_design.py).
    ``prediction``: ``size-trend`` (the study's fit over parameters and tokens, plus ``own_weight`` times
    the trial's own deviation from it; the trial's own curve until 5 trials of 3 sizes are trained) or
    ``own-curve`` (the trial's points alone, with the study's data exponent); see nas.scaling."""

    ALTERNATIVES: ClassVar[tuple[str, ...]] = ("tokens", "flops")  # a --set of one replaces the other

    tokens: Count | None = Field(default=None, ge=1)
    flops: Real | None = Field(default=None, gt=0, le=1e30)
    tokens_per_param: Real = Field(default=20.0, gt=0, le=1e6)
    batch_tokens: Count | None = Field(default=None, ge=8)
    prediction: Literal["size-trend", "own-curve"] = "size-trend"
    own_weight: Real = Field(default=0.0, ge=0, le=1)
    # with pretrain.rungs: the own_weight of a trial whose highest rung is the k-th (one per rung); a trial that
    # trained on further carries more of its own deviation from the trend (null: own_weight at every rung)
    rung_weights: list[Real] | None = None
    # a prediction at the target reaching past a trial's last point by a factor x is raised by
    # reach_penalty x ln(x) of itself (nas.scaling.StudyFit): the size trend turns optimistic far out
    reach_penalty: Real = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _at_most_one(self) -> Target:
        if self.tokens is not None and self.flops is not None:
            raise ValueError("give tokens or flops, not both")
        if self.rung_weights is not None and not all(0 <= w <= 1 for w in self.rung_weights):
            raise ValueError(f"rung_weights: each weight must lie in [0, 1], got {list(self.rung_weights)}")
        return self

    def weight_at(self, rung: int | None, at_target: bool = False) -> float:
        """The own weight of a prediction made at rung index ``rung`` (None: no rungs); 1 for a trial trained
        to the target itself (its last point is the loss to predict)."""
        if at_target:
            return 1.0
        if rung is None or self.rung_weights is None:
            return float(self.own_weight)
        return float(self.rung_weights[min(rung, len(self.rung_weights) - 1)])


class Optimizer(Strict):
    """AdamW's settings. ``lr`` is the peak learning rate of a model of width (d_model) at most
    ``lr_width_base``; a wider model peaks at ``lr * lr_width_base / d_model`` (Adam's 1/width rule from
    µP, applied to the whole model), so that one recipe is fair to narrow and wide shapes alike
    (bench/lr_sweep.py measured the need). ``null``: the same ``lr`` for every width."""

    lr: Real = Field(default=3e-3, gt=0, le=10)
    betas: tuple[Real, Real] = (0.9, 0.95)
    weight_decay: Real = Field(default=0.1, ge=0, le=10)
    eps: Real = Field(default=1e-8, gt=0, le=1)
    lr_width_base: Count | None = Field(default=None, ge=1)
    # what the width rule scales: the whole model's lr (model), or only the hidden matrices' (hidden: µP's Adam
    # rule; the embeddings, norms and biases keep ``lr``)
    lr_width_scope: Literal["model", "hidden"] = "model"

    def width_factor(self, width: int | None) -> float:
        """``lr_width_base / width`` above the base, else 1."""
        if self.lr_width_base is None or width is None or width <= self.lr_width_base:
            return 1.0
        return self.lr_width_base / width

    def peak_lr(self, width: int | None) -> float:
        """The schedule's peak learning rate for a model of this width (d_model; None: unknown, ``lr``): the
        whole model's with scope ``model``; with ``hidden``, ``lr`` (the hidden matrices take
        :meth:`width_factor` of it)."""
        return self.lr * (self.width_factor(width) if self.lr_width_scope == "model" else 1.0)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"each beta must lie in [0, 1), got {list(betas)}")
        return betas


class Schedule(Strict):
    kind: Literal["cosine", "linear", "wsd", "constant"] = "cosine"
    warmup_fraction: Real = Field(default=0.05, ge=0, lt=1)
    min_lr_ratio: Real = Field(default=0.1, ge=0, le=1)
    decay_fraction: Real = Field(default=0.2, gt=0, le=1)  # wsd: the final decay phase
    # wsd: fractions of the budget where a cool-down branches off the stable phase (see nas.train.schedule)
    cooldowns: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cooldowns_need_wsd(self) -> Schedule:
        if self.cooldowns and self.kind != "wsd":
            raise ValueError(f"cooldowns need kind: wsd (a stable phase to branch from), not {self.kind}")
        stable = 1.0 - self.decay_fraction
        bad = [f for f in self.cooldowns if not self.warmup_fraction < f < stable]
        if bad:
            raise ValueError(
                f"cooldowns must lie in the stable phase, after the warmup and before the final decay "
                f"({self.warmup_fraction:g} < f < {stable:g}; the run's own decay measures {stable:g}); got {bad}"
            )
        return self


class Pretrain(Strict):
    seq_len: Count = Field(default=256, ge=8)
    batch_tokens: Count = Field(default=4096, ge=8)
    micro_batch_size: Count | None = Field(default=None, ge=1)  # sequences per forward pass
    budget: Budget = Budget(tokens=200_000)
    optimizer: Optimizer = Optimizer()
    schedule: Schedule = Schedule()
    grad_clip: Real | None = Field(default=1.0, gt=0)
    seed: Seed = 0
    eval_every: Count = Field(default=25, ge=1)
    eval_tokens: Count = Field(default=16384, ge=8)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False
    # Train on through these multiples of the budget (the first is 1: the budget itself), with a cool-down
    # branch landing on each: the study's pruner decides at each rung whether the trial goes on (nas.train.schedule)
    rungs: list[Real] | None = None

    @model_validator(mode="after")
    def _batch(self) -> Pretrain:
        if self.batch_tokens % self.seq_len:
            raise ValueError(f"batch_tokens={self.batch_tokens} must be a multiple of seq_len={self.seq_len}")
        return self

    @model_validator(mode="after")
    def _rungs(self) -> Pretrain:
        rungs = self.rungs
        if rungs is None:
            return self
        if len(rungs) < 2 or rungs[0] != 1 or any(b <= a for a, b in zip(rungs, rungs[1:], strict=False)):
            raise ValueError(
                f"rungs: give increasing multiples of the budget starting at 1, e.g. [1, 2.5, 5]; got {rungs}"
            )
        if rungs[-1] > 1000:
            raise ValueError(f"rungs: the top rung may be at most 1000 x the budget, got {rungs[-1]:g}")
        if self.schedule.kind != "wsd":
            raise ValueError(f"rungs need schedule.kind: wsd (a stable phase to branch from), not {self.schedule.kind}")
        if self.budget.seconds is not None:
            raise ValueError("rungs need a token or FLOP budget, not a time budget")
        return self

    @property
    def batch_size(self) -> int:
        """Sequences per optimizer step."""
        return self.batch_tokens // self.seq_len

    @property
    def anneals(self) -> bool:
        """Whether a trial measures annealed losses at several budgets (cool-downs or rungs)."""
        return bool(self.schedule.cooldowns or self.rungs)
