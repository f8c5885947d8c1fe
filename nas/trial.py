"""run_trial: architecture + protocol → evidence (pretrain, measure, fine-tune, score). No Optuna here.

result = run_trial(arch, load_protocol("cpu-tiny"), reporter=lambda point: False)
result.metrics["val_loss"], result.metrics["qa.f1"], result.cause
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from nas.arch import ArchConfig
from nas.model import build_model, fit_vocab
from nas.protocol import Pretrain, TrialProtocol
from nas.proxy import zero_cost_scores
from nas.scaling import Points, StudyFit, target_tokens
from nas.train.checkpoint import Checkpoint
from nas.train.pretrain import (
    EvalPoint,
    PretrainOutcome,
    Reporter,
    StepCallback,
    peak_memory_mb,
    pretrain,
    resolve_device,
)
from nas.train.schedule import rungs_within_target
from nas.train.windows import batch_at

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from nas.data.tokens import TokenData

__all__ = ["TrialResult", "PHASES", "run_trial", "measure_latency", "add_prediction"]

# Where a trial's wall time goes (TrialResult.phase_seconds), in this order, then one "task <name>" per
# fine-tuning task (from its start to the next's), then "other": the wall time none of these covers.
# "pretrain" is pretraining's wall time less its held-out evals ("eval") and cool-down branches ("cooldowns").
PHASES = ("data", "build", "proxies", "pretrain", "cooldowns", "eval", "latency")


@dataclass
class TrialResult:
    arch: ArchConfig
    status: str  # "complete", "pruned" or "failed"
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[EvalPoint] = field(default_factory=list)
    cause: str | None = None
    wall_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)  # see PHASES; they sum to wall_seconds
    latency_ms: dict[str, float] = field(default_factory=dict)  # median, p25, p75, min, max
    micro_batch_size: int = 0
    notes: list[str] = field(default_factory=list)
    resumed_from_step: int | None = None  # pretraining resumed from a checkpoint at this step
    annealed: list[list[float]] = field(default_factory=list)  # [tokens, held-out loss] after each cool-down
    # What a trivial predictor scores with no model ("task.metric", and "task.chance" for classification), and
    # what that predictor is (see nas.train.baselines); filled when the tasks run.
    task_baselines: dict[str, float] = field(default_factory=dict)
    baseline_predictors: dict[str, str] = field(default_factory=dict)
    model: torch.nn.Module | None = None  # the pretrained LM, when keep_model=True

    @property
    def arch_hash(self) -> str:
        return self.arch.arch_hash()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self) | {"arch": self.arch.to_dict(), "arch_hash": self.arch_hash}
        out["curve"] = [p.to_dict() for p in self.curve]
        out.pop("model")
        return out


def run_trial(
    arch: ArchConfig,
    protocol: TrialProtocol,
    reporter: Reporter | None = None,
    on_step: StepCallback | None = None,
    on_stage: Callable[[str], None] | None = None,
    keep_model: bool = False,
    checkpoint: Checkpoint | None = None,
    task_gate: Callable[[float], bool] | None = None,
) -> TrialResult:
    """Pretrain ``arch`` under ``protocol``, measure it, fine-tune it on every task, and report.

    ``task_gate(val_loss)`` (the protocol's ``task_gate``, judged on the study by the search loop) says
    whether the pretrained model is fine-tuned on the tasks; a skipped trial reports no task metric and
    notes why.

    ``reporter(point)`` is called at each held-out eval; returning True stops the trial (pruned).
    A NaN/inf loss stops it with cause ``nan_loss at step k``; CUDA out-of-memory is retried once
    with half the micro-batch (same effective batch), then fails with cause ``oom``.
    With a ``checkpoint`` (see nas.train.checkpoint), pretraining saves its state as it goes and resumes
    from a state saved by an earlier, killed run of the same architecture and protocol.
    """
    from nas.data.tokens import prepare_tokens

    phases = _Phases()
    stage = on_stage or (lambda name: None)
    device = _trial_device(protocol.pretrain)

    stage("data")
    with phases.timing("data"):
        tokens = prepare_tokens(protocol)
        arch, notes = fit_vocab(arch, tokens.vocab_size, protocol.pretrain.seq_len)
    result = TrialResult(arch=arch, status="complete", notes=notes)

    stage("pretrain")
    capped, top, reporter = _rungs_within_target(protocol, arch, reporter)
    trained = _pretrain_with_retry(result, capped, tokens, device, reporter, on_step, checkpoint, phases)
    if trained is None:
        result.status, result.cause = "failed", "oom"
        phases.close(result)
        return result
    model, outcome = trained
    if top is not None and outcome.cause is None:
        _reached_target(result, outcome, top, reporter if capped.pretrain.rungs is None else None)
    _record_pretraining(result, outcome, protocol.pretrain.seq_len)
    add_prediction(result, protocol)
    if outcome.cause is None:
        tasks = task_gate is None or not protocol.tasks or task_gate(result.metrics["val_loss"])
        if not tasks:
            result.notes.append("tasks skipped: held-out loss above the study's task_gate quantile")
        _measure(result, model, protocol, tokens, stage, phases, tasks)
    result.metrics["peak_memory_mb"] = peak_memory_mb(device)
    result.metrics.setdefault("latency_ms_per_token", math.nan)
    phases.close(result)
    if keep_model:
        result.model = model
    return result


def _reached_target(result: TrialResult, outcome: PretrainOutcome, top: int, reporter: Reporter | None) -> None:
    """A rung trial fully trained to its target: the target is its top rung (``top``). ``reporter``: given
    when no rung was left below the target, so the target's point is reported as the top rung's."""
    if reporter is not None:
        last = outcome.curve[-1]
        reporter(EvalPoint(last.step, last.tokens, last.val_loss, last.train_loss, last.lr, last.seconds, top))
    outcome.rung = top
    result.metrics["at_target"] = 1.0


def _rungs_within_target(
    protocol: TrialProtocol, arch: ArchConfig, reporter: Reporter | None
) -> tuple[TrialProtocol, int | None, Reporter | None]:
    """The protocol with its rungs cut at the target budget (nas.train.schedule.rungs_within_target), the top
    rung's index when the target became the last rung (else None), and the reporter, which then sees the
    target's rung as the top rung: a trial trained to its target is as far on as a trial can be."""
    config = protocol.pretrain
    if not config.rungs:
        return protocol, None, reporter
    flops = arch.flops_per_token(config.seq_len)
    target = protocol.target
    tokens = target_tokens(arch.param_count(), flops, target.tokens, target.flops, target.tokens_per_param)
    capped, at_target = rungs_within_target(config, flops, tokens)
    if not at_target:
        return protocol, None, reporter
    top, last = len(config.rungs) - 1, len(capped.rungs or [None]) - 1

    def report(point: EvalPoint) -> bool | None:
        if point.rung == last:
            point = EvalPoint(point.step, point.tokens, point.val_loss, point.train_loss, point.lr, point.seconds, top)
        return reporter(point) if reporter is not None else None

    return protocol.model_copy(update={"pretrain": capped}), top, report


class _Phases:
    """The seconds of a trial's phases (:data:`PHASES`, the tasks, "other"), timed one at a time."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._open: tuple[str, float] | None = None  # the phase being timed, since when

    def start(self, name: str) -> None:
        """Time ``name`` from now on (ending the phase timed until now)."""
        self.stop()
        self._open = (name, time.perf_counter())

    def stop(self) -> None:
        if self._open is not None:
            name, since = self._open
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - since
            self._open = None

    @contextmanager
    def timing(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop()

    def split_pretraining(self, outcome: PretrainOutcome) -> None:
        """Move pretraining's held-out evals and cool-down branches out of "pretrain" into their phases
        (at most what "pretrain" holds: a resumed run's counts include the time of the run killed before)."""
        for name, seconds in (("eval", outcome.eval_seconds), ("cooldowns", outcome.cooldown_seconds)):
            moved = min(seconds, self.seconds["pretrain"])
            self.seconds["pretrain"] -= moved
            self.seconds[name] += moved

    def close(self, result: TrialResult) -> None:
        """``result.wall_seconds`` and ``result.phase_seconds``, "other" being the time no phase covers."""
        self.stop()
        result.wall_seconds = time.perf_counter() - self.started
        other = max(0.0, result.wall_seconds - sum(self.seconds.values()))
        result.phase_seconds = {**self.seconds, "other": other}


def _trial_device(config: Pretrain) -> torch.device:
    """The protocol's device; on CUDA with TF32 matmuls allowed and the peak-memory counter reset."""
    device = resolve_device(config)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    return device


def _pretrain_with_retry(
    result: TrialResult,
    protocol: TrialProtocol,
    tokens: TokenData,
    device: torch.device,
    reporter: Reporter | None,
    on_step: StepCallback | None,
    checkpoint: Checkpoint | None,
    phases: _Phases,
) -> tuple[PreTrainedModel, PretrainOutcome] | None:
    """Build ``result.arch`` and pretrain it; on out-of-memory, build it again and retry once with half the
    micro-batch (noted). None when that fails too. The first build is scored by the zero-cost proxies.
    Each build, the proxies and pretraining (less its evals and cool-downs) are timed in ``phases``."""
    config = protocol.pretrain
    arch = result.arch
    flops = arch.flops_per_token(config.seq_len)
    micro = config.micro_batch_size or config.batch_size
    for attempt in range(2):
        with phases.timing("build"):
            model = build_model(arch, tokens.tokenizer, device, config.seed)
        try:
            if attempt == 0:  # zero-cost proxies at initialisation, on the first rows of the first batch
                with phases.timing("proxies"):
                    x, y = batch_at(tokens.train, 0, min(8, micro), config.seq_len, config.seed)
                    result.metrics.update(zero_cost_scores(model, x.to(device), y.to(device)))
            with phases.timing("pretrain"):
                outcome = pretrain(
                    model, tokens.train, tokens.val, config, flops, reporter, micro, on_step, checkpoint=checkpoint
                )
            phases.split_pretraining(outcome)
            return model, outcome
        except torch.OutOfMemoryError:
            del model
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if attempt == 1 or micro == 1:
                return None
            micro = max(1, micro // 2)
            result.notes.append(f"out of memory: retried with micro-batch {micro} (accumulation x2)")
    return None


def _measure(
    result: TrialResult,
    model: PreTrainedModel,
    protocol: TrialProtocol,
    tokens: TokenData,
    stage: Callable[[str], None],
    phases: _Phases,
    tasks: bool = True,
) -> None:
    """Latency, then (with ``tasks``) every task fine-tuned from the pretrained model, each timed from its
    start to the next's, then the tasks' baselines (timed as "data")."""
    from nas.train.baselines import protocol_baselines
    from nas.train.finetune import evaluate_tasks

    def task_started(name: str) -> None:
        stage(f"finetune {name}")
        phases.start(f"task {name}")

    stage("latency")
    with phases.timing("latency"):
        result.latency_ms = measure_latency(model, protocol, tokens.val)
    result.metrics["latency_ms_per_token"] = result.latency_ms["median"]
    if not tasks:
        return
    result.metrics.update(evaluate_tasks(protocol, model, result.arch, tokens.tokenizer, on_task=task_started))
    if protocol.tasks:
        with phases.timing("data"):  # the tasks' no-model baselines (computed once per process)
            baselines = protocol_baselines(protocol, tokens.tokenizer)
        result.task_baselines = {name: b.value for name, b in baselines.items()}
        result.baseline_predictors = {name: b.predictor for name, b in baselines.items()}
    phases.stop()


def _record_pretraining(result: TrialResult, outcome: PretrainOutcome, seq_len: int) -> None:
    """The curve, the counts and the pretraining metrics; the cause when pretraining ended early."""
    from nas.train.metrics import perplexity

    arch = result.arch
    result.curve = outcome.curve
    result.micro_batch_size = outcome.micro_batch_size
    result.resumed_from_step = outcome.resumed_from_step
    result.annealed = outcome.annealed
    if outcome.resumed_from_step is not None:
        result.notes.append(f"resumed from the checkpoint at step {outcome.resumed_from_step}")
    val_loss = outcome.final_val_loss
    if outcome.rung is not None:  # the highest rung's annealed loss (a trial stopped at a rung ends mid-stable)
        val_loss = outcome.annealed[-1][1]
        result.metrics["rung"] = outcome.rung
    result.metrics.update(arch.counts())
    result.metrics["flops_per_token"] = arch.flops_per_token(seq_len)
    result.metrics.update(
        val_loss=val_loss,
        val_ppl=perplexity(val_loss) if math.isfinite(val_loss) else math.inf,
        tokens_per_second=outcome.tokens_per_second,
        train_seconds=outcome.train_seconds,
        tokens_trained=outcome.tokens,
    )
    if outcome.cooldown_tokens > 0:  # compute a trial spends beyond tokens_trained
        result.metrics["cooldown_seconds"] = outcome.cooldown_seconds
        result.metrics["cooldown_tokens"] = outcome.cooldown_tokens
    if outcome.cause is not None:
        result.cause = outcome.cause
        result.status = "pruned" if outcome.cause.startswith("pruned") else "failed"


def add_prediction(result: TrialResult, protocol: TrialProtocol, others: Sequence[tuple[float, Points]] = ()) -> None:
    """``predicted_val_loss`` (with ``predicted_val_loss_std``, ``target_tokens`` and
    ``prediction_trend_trials``) at the protocol's target budget, from the trial's annealed points (its
    cool-downs and its end) and ``others``, other trials' (non-embedding params, annealed points): the
    study's size trend when ``target.prediction`` is ``size-trend`` and it can be fitted, else the
    trial's own curve with the data exponent fitted on every curve (see nas.scaling). A trial with
    cool-downs in its schedule always reports them (NaN when it has fewer than two points)."""
    if not protocol.pretrain.anneals:
        return
    target = protocol.target
    metrics = result.metrics
    tokens = target_tokens(
        metrics.get("params", result.arch.param_count()),
        metrics.get("flops_per_token", result.arch.flops_per_token()),
        target.tokens,
        target.flops,
        target.tokens_per_param,
    )
    size = float(result.arch.non_embedding_params())
    curves = [(size, result.annealed), *others]
    rung = metrics.get("rung")
    weight = target.weight_at(None if rung is None else int(rung), bool(metrics.get("at_target")))
    fit = StudyFit.for_target(curves, target, weight)
    prediction = fit.predict(result.annealed, size, tokens)
    metrics["target_tokens"] = tokens
    metrics["predicted_val_loss"] = prediction.value if prediction else math.nan
    metrics["predicted_val_loss_std"] = prediction.std if prediction else math.nan
    metrics["prediction_trend_trials"] = prediction.trend_curves if prediction else 0


@torch.no_grad()
def measure_latency(model: PreTrainedModel, protocol: TrialProtocol, val_ids: Any) -> dict[str, float]:
    """Milliseconds per generated token (greedy, KV cache, batch 1) over ``repeats`` runs, after a warmup."""
    from transformers import GenerationMixin

    assert isinstance(model, GenerationMixin), "a causal LM generates"  # every *ForCausalLM is one
    spec = protocol.latency
    device = next(model.parameters()).device
    prompt = torch.as_tensor(val_ids[: spec.prompt_tokens].astype("int64"), device=device)[None]
    model.eval()
    kwargs: dict[str, Any] = dict(
        max_new_tokens=spec.new_tokens,
        min_new_tokens=spec.new_tokens,
        do_sample=False,
        pad_token_id=model.config.pad_token_id,
    )
    model.generate(prompt, **kwargs)
    samples = []
    for _ in range(spec.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.generate(prompt, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append((time.perf_counter() - start) * 1000 / spec.new_tokens)
    model.train()
    q = statistics.quantiles(samples, n=4)
    return {"median": statistics.median(samples), "p25": q[0], "p75": q[2], "min": min(samples), "max": max(samples)}
