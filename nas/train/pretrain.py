"""The pretraining loop: random windows of cached token ids, AdamW, warmup + decay, held-out evals.

Plain PyTorch, readable top to bottom. It knows nothing of Optuna: every ``eval_every`` steps it
calls ``reporter(point)``; a reporter that returns True stops the run (the study turns that into
pruning).
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.protocol import Pretrain
from nas.train.checkpoint import Checkpoint, cpu_copy, rng_state, set_rng_state
from nas.train.outcome import EvalPoint, PretrainOutcome, Reporter, StepCallback
from nas.train.schedule import (
    Branch,
    RungPlan,
    budget_tokens,
    cooldown_length,
    cooldown_steps,
    lr_multiplier,
    rung_lr,
    rung_plan,
)
from nas.train.windows import batch_at, eval_windows

__all__ = [
    "DataParallel",
    "EvalPoint",
    "PretrainOutcome",
    "pretrain",
    "lr_multiplier",
    "budget_tokens",
    "resolve_device",
    "compute_loss",
    "Reporter",
]


def resolve_device(config: Pretrain) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_for(device: torch.device, config: Pretrain) -> Any:
    use_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def compute_loss(model: Callable[..., Any], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: np.ndarray, config: Pretrain, device: torch.device, micro: int) -> float:
    """Mean loss over ``eval_tokens`` held-out tokens: non-overlapping windows spread evenly over the
    whole held-out split (every held-out document counts, not only the first)."""
    windows = eval_windows(val, config.seq_len, config.eval_tokens)
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), micro):
        chunk = torch.from_numpy(np.stack(windows[start : start + micro]).astype(np.int64)).to(device)
        with autocast_for(device, config):
            loss = compute_loss(model, chunk[:, :-1], chunk[:, 1:])
        total += float(loss) * chunk.shape[0]
        count += chunk.shape[0]
    model.train()
    return total / count


def make_optimizer(model: torch.nn.Module, config: Pretrain, lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (nanoGPT's split). With ``lr_width_scope: hidden`` the hidden
    matrices (every matrix but the token and position embeddings, and a tied LM head) are a group of their
    own whose ``lr_scale`` is the width factor (µP's Adam rule); every step sets a group's lr to the
    schedule's lr times its ``lr_scale``."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    wd = config.optimizer.weight_decay
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer.lr_width_scope == "hidden":
        embedded = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
        head = getattr(model, "get_output_embeddings", lambda: None)()
        if head is not None:
            embedded.add(id(head.weight))
        hidden = [p for p in decay if id(p) not in embedded]
        groups = [
            {"params": hidden, "weight_decay": wd, "lr_scale": config.optimizer.width_factor(model_width(model))},
            {"params": [p for p in decay if id(p) in embedded], "weight_decay": wd},
            {"params": no_decay, "weight_decay": 0.0},
        ]
    opt = config.optimizer
    return torch.optim.AdamW(groups, lr=lr, betas=opt.betas, eps=opt.eps, fused=device.type == "cuda" or None)


def model_width(model: torch.nn.Module) -> int | None:
    """The model's width (a transformers config's hidden_size), or None for a module without one."""
    width = getattr(getattr(model, "config", None), "hidden_size", None)
    return int(width) if isinstance(width, int) else None


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or on CPU the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run (`nas train --nproc N`): its ``rank`` among ``world``
    processes and ``model``, the trained model wrapped in DistributedDataParallel."""

    rank: int = 0
    world: int = 1
    model: torch.nn.Module | None = None


@dataclass
class _Run:
    """What the stages of one pretrain() call share."""

    model: torch.nn.Module
    step_model: Callable[..., Any]  # what a training step calls: the model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    peak_lr: float  # the schedule's peak: the protocol's lr, scaled for the model's width (Optimizer.peak_lr)
    config: Pretrain
    device: torch.device
    parallel: DataParallel
    local: int  # sequences per process and step
    micro: int  # sequences per forward pass
    accum: int  # forward passes per step
    total_steps: int | None  # None for a time budget
    outcome: PretrainOutcome
    reporter: Reporter | None
    branches: dict[int, list[Branch]] = field(default_factory=dict)  # cool-downs by the step they branch after
    plan: RungPlan | None = None  # with pretrain.rungs

    def lr(self, step: int) -> float:
        """The main run's learning rate at ``step``."""
        if self.plan is not None:
            return self.peak_lr * rung_lr(step, self.plan.total_steps, self.plan.warmup_steps, self.config.schedule)
        progress = _progress(self, step)
        assert progress is not None
        return self.peak_lr * lr_multiplier(progress, self.config.schedule)

    def branch_lr(self, step: int, branch: Branch) -> float:
        """A cool-down's learning rate at ``step``: a WSD run of ``branch.end`` steps."""
        if self.plan is not None:
            return self.peak_lr * rung_lr(step, branch.end, self.plan.warmup_steps, self.config.schedule)
        return self.peak_lr * lr_multiplier(step / branch.end, self.config.schedule)


def pretrain(
    model: torch.nn.Module,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    config: Pretrain,
    flops_per_token: float,
    reporter: Reporter | None = None,
    micro_batch_size: int | None = None,
    on_step: StepCallback | None = None,
    checkpoint: Checkpoint | None = None,
    parallel: DataParallel | None = None,
) -> PretrainOutcome:
    """Train ``model`` (already on its device) within the protocol's budget; see the module doc.

    With a ``checkpoint``, the state is saved every ``checkpoint.every`` steps and at the end, and a
    run that finds a saved state resumes from it (the reporter sees the restored evals again, so a
    pruner judges the resumed run as it would have judged the original).
    Data parallel (`nas train --nproc N`): each of the ``parallel.world`` processes passes its
    :class:`DataParallel` (its rank and the DDP-wrapped model); every step's global batch is the same
    pure function of (seed, step), each rank trains on its contiguous slice of it, and DDP averages
    the gradients, so N processes take the same steps as one with the whole batch. Rank 0 saves.
    Out-of-memory errors propagate (the caller retries with a smaller micro-batch).
    """
    run = _start(model, config, flops_per_token, reporter, micro_batch_size, parallel or DataParallel())
    outcome = run.outcome
    step = _resume(run, val_ids, checkpoint)
    if outcome.cause is not None:  # pruned on the restored evals
        return outcome
    while _progress(run, step) is not None:
        lr = run.lr(step)
        train_loss = _train_step(run, train_ids, step, lr)
        step += 1
        if not math.isfinite(train_loss):
            outcome.cause = f"nan_loss at step {step}"
            break
        outcome.steps = step
        outcome.tokens = step * config.batch_tokens
        if on_step is not None:
            on_step(step, train_loss, outcome.tokens_per_second)
        if any(_cooldown(run, train_ids, val_ids, branch) for branch in run.branches.get(step, [])):
            break  # pruned at a rung: the model keeps the rung's annealed weights
        done = _budget_spent(run, step)
        if (step % config.eval_every == 0 or done) and _eval_stops(run, val_ids, step, train_loss, lr, done):
            break
        if checkpoint is not None and run.parallel.rank == 0 and (done or checkpoint.due(step)):
            _save(checkpoint, run, step)
    if outcome.cause is None and run.total_steps is not None and config.schedule.kind != "constant":
        outcome.annealed.append([float(outcome.tokens), outcome.final_val_loss])  # the run's own decay
        if run.plan is not None:  # the top rung: reported for the record (nothing is left to prune)
            outcome.rung = len(run.plan.rung_ends) - 1
            if run.reporter is not None:
                last = outcome.curve[-1]
                run.reporter(
                    EvalPoint(step, outcome.tokens, last.val_loss, last.train_loss, last.lr, last.seconds, outcome.rung)
                )
    return outcome


def _start(
    model: torch.nn.Module,
    config: Pretrain,
    flops_per_token: float,
    reporter: Reporter | None,
    micro_batch_size: int | None,
    parallel: DataParallel,
) -> _Run:
    """Sizes (per-process batch, micro-batch, accumulation, steps), the optimizer and the model to step."""
    device = next(model.parameters()).device
    batch = config.batch_size
    if batch % parallel.world:
        raise ValueError(f"batch of {batch} sequences does not split over {parallel.world} processes")
    local = batch // parallel.world
    micro = min(micro_batch_size or config.micro_batch_size or local, local)
    plan = rung_plan(config, flops_per_token) if config.rungs else None
    total_tokens = (
        plan.total_steps * config.batch_tokens if plan is not None else budget_tokens(config, flops_per_token)
    )
    peak_lr = config.optimizer.peak_lr(model_width(model))
    optimizer = make_optimizer(model, config, peak_lr, device)
    step_model: Callable[..., Any] = parallel.model if parallel.model is not None else model
    run = _Run(
        model=model,
        step_model=torch.compile(step_model) if config.compile else step_model,
        optimizer=optimizer,
        peak_lr=peak_lr,
        config=config,
        device=device,
        parallel=parallel,
        local=local,
        micro=micro,
        accum=math.ceil(local / micro),
        total_steps=math.ceil(total_tokens / config.batch_tokens) if total_tokens is not None else None,
        outcome=PretrainOutcome(micro_batch_size=micro),
        reporter=reporter,
        plan=plan,
    )
    branches = list(plan.branches) if plan is not None else []
    if plan is None and run.total_steps is not None:
        branches = [
            Branch(s, s + cooldown_length(s, config.schedule)) for s in cooldown_steps(run.total_steps, config.schedule)
        ]
    for branch in branches:
        run.branches.setdefault(branch.step, []).append(branch)
    model.train()
    return run


def _resume(run: _Run, val_ids: np.ndarray, checkpoint: Checkpoint | None) -> int:
    """The step to start from: a saved state's (its evals are reported again, and may prune the run),
    else 0, after the first held-out eval."""
    outcome = run.outcome
    saved = checkpoint.load(run.device) if checkpoint is not None else None
    if saved is None:
        first = _timed_eval(run, val_ids)
        outcome.curve.append(EvalPoint(0, 0, first, math.nan, 0.0, 0.0))
        return 0
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    set_rng_state(saved["rng"])
    step: int = saved["step"]
    outcome.steps = outcome.resumed_from_step = step
    outcome.tokens = step * run.config.batch_tokens
    outcome.train_seconds = saved["train_seconds"]
    outcome.curve = [EvalPoint(**p) for p in saved["curve"]]
    outcome.annealed = saved.get("annealed", [])
    outcome.rung = saved.get("rung")
    outcome.cooldown_seconds = saved.get("cooldown_seconds", 0.0)
    outcome.cooldown_tokens = saved.get("cooldown_tokens", 0)
    outcome.eval_seconds = saved.get("eval_seconds", 0.0)
    finished = run.total_steps is not None and step >= run.total_steps
    for point in outcome.curve[1:]:
        if run.reporter is not None and run.reporter(point) and not finished:
            outcome.cause = f"pruned at step {point.step}"
            break
    return step


def _progress(run: _Run, step: int) -> float | None:
    """How far through its budget the run is before ``step``, in [0, 1); None once the budget is spent."""
    if run.total_steps is not None:
        return step / run.total_steps if step < run.total_steps else None
    seconds = run.config.budget.seconds
    assert seconds is not None  # a budget that fixes no step count is a time budget
    progress = run.outcome.train_seconds / seconds
    return progress if progress < 1.0 else None


def _budget_spent(run: _Run, step: int) -> bool:
    seconds = run.config.budget.seconds
    return (run.total_steps is not None and step >= run.total_steps) or (
        seconds is not None and run.outcome.train_seconds >= seconds
    )


def _train_step(run: _Run, train_ids: np.ndarray, step: int, lr: float) -> float:
    """One optimizer step on the batch of ``step`` at learning rate ``lr``; returns the training loss
    (averaged over processes). A non-finite loss makes no update. The step's time is added to
    ``train_seconds`` (the lr update excluded, as evals are)."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    started = time.perf_counter()
    train_loss = _forward_backward(run, train_ids, step)
    if not math.isfinite(train_loss):
        run.optimizer.zero_grad(set_to_none=True)
        return train_loss
    if run.config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    run.outcome.train_seconds += time.perf_counter() - started
    return train_loss


def _forward_backward(run: _Run, train_ids: np.ndarray, step: int) -> float:
    """Gradients of this process's slice of the step's batch, in micro-batches; the mean loss of all processes."""
    config, local, micro, rank = run.config, run.local, run.micro, run.parallel.rank
    x, y = batch_at(train_ids, step, config.batch_size, config.seq_len, config.seed)
    x, y = x[rank * local : (rank + 1) * local], y[rank * local : (rank + 1) * local]
    x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
    loss_sum = 0.0
    for i in range(run.accum):
        xs, ys = x[i * micro : (i + 1) * micro], y[i * micro : (i + 1) * micro]
        with autocast_for(run.device, config):
            loss = compute_loss(run.step_model, xs, ys)
        (loss * xs.shape[0] / local).backward()
        loss_sum += float(loss.detach()) * xs.shape[0]
    train_loss = loss_sum / local
    if run.parallel.world > 1:
        total = torch.tensor([train_loss], dtype=torch.float64, device=run.device)
        torch.distributed.all_reduce(total)
        train_loss = float(total) / run.parallel.world
    return train_loss


def _timed_eval(run: _Run, val_ids: np.ndarray) -> float:
    """The held-out loss (:func:`evaluate`), its wall time added to ``eval_seconds``."""
    started = time.perf_counter()
    val_loss = evaluate(run.model, val_ids, run.config, run.device, run.micro)
    run.outcome.eval_seconds += time.perf_counter() - started
    return val_loss


def _eval_stops(run: _Run, val_ids: np.ndarray, step: int, train_loss: float, lr: float, done: bool) -> bool:
    """A held-out eval at ``step``, reported; True when the run stops here (a non-finite loss, or pruned)."""
    outcome = run.outcome
    val_loss = _timed_eval(run, val_ids)
    point = EvalPoint(step, outcome.tokens, val_loss, train_loss, lr, outcome.train_seconds)
    outcome.curve.append(point)
    if not math.isfinite(val_loss):
        outcome.cause = f"nan_loss at step {step}"
        return True
    if run.reporter is not None and run.reporter(point) and not done:
        outcome.cause = f"pruned at step {step}"
        return True
    return False


def _cooldown(run: _Run, train_ids: np.ndarray, val_ids: np.ndarray, branch: Branch) -> bool:
    """Branch a cool-down off the stable phase after ``branch.step``: decay the learning rate over the next
    batches as a WSD run of ``branch.end`` steps would, record that run's held-out loss, then put the
    model and optimizer back. The main run goes on exactly as without the branch. A rung's branch is
    reported; True when the reporter stops the run there (the model then keeps the rung's weights)."""
    config, outcome, step = run.config, run.outcome, branch.step
    model_state = cpu_copy(run.model.state_dict())  # off the accelerator: the branch must not add to its peak
    optimizer_state = cpu_copy(run.optimizer.state_dict())
    rng = rng_state()  # dropout draws in the branch must not shift the main run's
    seconds = outcome.train_seconds
    total = branch.end
    lr = train_loss = math.nan
    for branch_step in range(step, total):
        lr = run.branch_lr(branch_step, branch)
        if not math.isfinite(train_loss := _train_step(run, train_ids, branch_step, lr)):
            break
    val_loss = _timed_eval(run, val_ids)
    tokens = total * config.batch_tokens
    outcome.annealed.append([float(tokens), val_loss])
    outcome.cooldown_seconds += outcome.train_seconds - seconds
    outcome.cooldown_tokens += (total - step) * config.batch_tokens
    spent, outcome.train_seconds = outcome.train_seconds, seconds
    if branch.rung is not None:
        outcome.rung = branch.rung
        point = EvalPoint(total, tokens, val_loss, train_loss, lr, spent, branch.rung)
        if not math.isfinite(val_loss):
            outcome.cause = f"nan_loss at rung {branch.rung + 1}"
            return True
        if run.reporter is not None and run.reporter(point):
            outcome.cause = f"pruned at rung {branch.rung + 1} ({tokens:,} tokens)"
            return True
    run.model.load_state_dict(model_state)
    run.optimizer.load_state_dict(optimizer_state)  # tensors go back to each parameter's device
    set_rng_state(rng)
    return False


def _save(checkpoint: Checkpoint, run: _Run, step: int) -> None:
    checkpoint.save(
        {
            "step": step,
            "train_seconds": run.outcome.train_seconds,
            "curve": [p.to_dict() for p in run.outcome.curve],
            "annealed": run.outcome.annealed,
            "rung": run.outcome.rung,
            "cooldown_seconds": run.outcome.cooldown_seconds,
            "cooldown_tokens": run.outcome.cooldown_tokens,
            "eval_seconds": run.outcome.eval_seconds,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "rng": rng_state(),
        }
    )
