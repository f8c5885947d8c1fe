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
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.protocol import Pretrain, Schedule
from nas.train.checkpoint import Checkpoint, rng_state, set_rng_state

__all__ = [
    "EvalPoint",
    "PretrainOutcome",
    "pretrain",
    "lr_multiplier",
    "budget_tokens",
    "resolve_device",
    "compute_loss",
    "batch_at",
    "Reporter",
]


@dataclass
class EvalPoint:
    step: int
    tokens: int
    val_loss: float
    train_loss: float
    lr: float
    seconds: float  # training seconds so far (evals excluded)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Reporter = Callable[[EvalPoint], bool | None]
StepCallback = Callable[[int, float, float], None]  # (step, loss, tokens/s)


@dataclass
class PretrainOutcome:
    curve: list[EvalPoint] = field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    cause: str | None = None  # why it ended early: "pruned at step k", "nan_loss at step k"
    micro_batch_size: int = 0
    resumed_from_step: int | None = None  # the checkpoint's step, when the run resumed from one

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def final_val_loss(self) -> float:
        return self.curve[-1].val_loss if self.curve else math.nan


def resolve_device(config: Pretrain) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_for(device: torch.device, config: Pretrain) -> Any:
    use_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


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


def batch_at(ids: np.ndarray, step: int, batch_size: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch of ``step``: random windows, a pure function of (seed, step), so a run can
    resume at any step and two architectures see the same data."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(ids) - seq_len - 1, size=batch_size)
    windows = np.stack([ids[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    chunk = torch.from_numpy(windows)
    return chunk[:, :-1], chunk[:, 1:]


def compute_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: np.ndarray, config: Pretrain, device: torch.device, micro: int) -> float:
    """Mean loss over the first ``eval_tokens`` held-out tokens, in non-overlapping windows."""
    seq = config.seq_len
    n_windows = max(1, min(config.eval_tokens, len(val) - 1) // seq)
    windows = [val[i * seq : i * seq + seq + 1] for i in range(n_windows)]
    windows = [w for w in windows if len(w) == seq + 1]
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
    """AdamW with weight decay on matrices only (nanoGPT's split)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.optimizer.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    opt = config.optimizer
    return torch.optim.AdamW(groups, lr=lr, betas=opt.betas, eps=opt.eps, fused=device.type == "cuda" or None)


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated, or on CPU the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    rank: int = 0,
    world: int = 1,
    ddp_model: torch.nn.Module | None = None,
) -> PretrainOutcome:
    """Train ``model`` (already on its device) within the protocol's budget; see the module doc.

    With a ``checkpoint``, the state is saved every ``checkpoint.every`` steps and at the end, and a
    run that finds a saved state resumes from it (the reporter sees the restored evals again, so a
    pruner judges the resumed run as it would have judged the original).
    Data parallel (`nas train --nproc N`): each of ``world`` processes passes its ``rank`` and the
    model wrapped in DistributedDataParallel as ``ddp_model``; every step's global batch is the same
    pure function of (seed, step), each rank trains on its contiguous slice of it, and DDP averages
    the gradients, so N processes take the same steps as one with the whole batch. Rank 0 saves.
    Out-of-memory errors propagate (the caller retries with a smaller micro-batch).
    """
    device = next(model.parameters()).device
    batch = config.batch_size
    if batch % world:
        raise ValueError(f"batch of {batch} sequences does not split over {world} processes")
    local = batch // world
    micro = min(micro_batch_size or config.micro_batch_size or local, local)
    accum = math.ceil(local / micro)
    total_tokens = budget_tokens(config, flops_per_token)
    total_steps = math.ceil(total_tokens / config.batch_tokens) if total_tokens is not None else None
    seconds = config.budget.seconds
    optimizer = make_optimizer(model, config, config.optimizer.lr, device)
    outcome = PretrainOutcome(micro_batch_size=micro)
    step_model = ddp_model if ddp_model is not None else model
    step_model = torch.compile(step_model) if config.compile else step_model
    model.train()

    train_loss = math.nan
    step = 0
    saved = checkpoint.load(device) if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"])
        step = outcome.steps = outcome.resumed_from_step = saved["step"]
        outcome.tokens = step * config.batch_tokens
        outcome.train_seconds = saved["train_seconds"]
        outcome.curve = [EvalPoint(**p) for p in saved["curve"]]
        train_loss = outcome.curve[-1].train_loss
        finished = total_steps is not None and step >= total_steps
        for point in outcome.curve[1:]:
            if reporter is not None and reporter(point) and not finished:
                outcome.cause = f"pruned at step {point.step}"
                return outcome
    else:
        first = evaluate(model, val_ids, config, device, micro)
        outcome.curve.append(EvalPoint(0, 0, first, math.nan, 0.0, 0.0))
    while True:
        if total_steps is not None:
            progress = step / total_steps
            if step >= total_steps:
                break
        else:
            assert seconds is not None
            progress = outcome.train_seconds / seconds
            if progress >= 1.0:
                break
        lr = config.optimizer.lr * lr_multiplier(progress, config.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr

        started = time.perf_counter()
        x, y = batch_at(train_ids, step, batch, config.seq_len, config.seed)
        x, y = x[rank * local : (rank + 1) * local], y[rank * local : (rank + 1) * local]
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss_sum = 0.0
        for i in range(accum):
            xs, ys = x[i * micro : (i + 1) * micro], y[i * micro : (i + 1) * micro]
            with autocast_for(device, config):
                loss = compute_loss(step_model, xs, ys)
            (loss * xs.shape[0] / local).backward()
            loss_sum += float(loss.detach()) * xs.shape[0]
        train_loss = loss_sum / local
        if world > 1:
            total = torch.tensor([train_loss], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(total)
            train_loss = float(total) / world
        step += 1
        if not math.isfinite(train_loss):
            optimizer.zero_grad(set_to_none=True)
            outcome.cause = f"nan_loss at step {step}"
            break
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        outcome.train_seconds += time.perf_counter() - started
        outcome.steps = step
        outcome.tokens = step * config.batch_tokens
        if on_step is not None:
            on_step(step, train_loss, outcome.tokens_per_second)

        done = (total_steps is not None and step >= total_steps) or (
            seconds is not None and outcome.train_seconds >= seconds
        )
        if step % config.eval_every == 0 or done:
            val_loss = evaluate(model, val_ids, config, device, micro)
            point = EvalPoint(step, outcome.tokens, val_loss, train_loss, lr, outcome.train_seconds)
            outcome.curve.append(point)
            if not math.isfinite(val_loss):
                outcome.cause = f"nan_loss at step {step}"
                break
            if reporter is not None and reporter(point) and not done:
                outcome.cause = f"pruned at step {step}"
                break
        if checkpoint is not None and rank == 0 and (done or checkpoint.due(step)):
            checkpoint.save(
                {
                    "step": step,
                    "train_seconds": outcome.train_seconds,
                    "curve": [p.to_dict() for p in outcome.curve],
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng_state(),
                }
            )
    return outcome
