"""`nas search --dry-run`: sample the space and estimate the study's compute at the throughput measured
here and now, training nothing. At most :data:`SAMPLED` architectures are drawn, whatever ``n_trials``
(a million trials are estimated from the same sample, scaled), so a dry run takes seconds."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from nas.arch import ArchConfig
from nas.errors import NasInputError
from nas.protocol import TrialProtocol
from nas.space import SearchSpace, random_samples

__all__ = ["Estimate", "estimate_search", "SAMPLED"]

SAMPLED = 100  # architectures an estimate samples at most
DRAWS = 4  # draws per architecture wanted: a constrained space rejects some


@dataclass
class Estimate:
    n_archs: int
    space_name: str
    median_params: float
    total_flops: float  # pretraining + fine-tuning of every sampled architecture, no pruning
    flops_per_second: float  # measured on ``reference``
    reference: str  # the summary of the median-cost architecture
    pretrain_seconds_per_trial: float | None  # a time budget, when the protocol has one
    n_trials: int = 0  # the trials estimated (``n_archs`` of them sampled); 0: n_archs

    @property
    def minutes(self) -> float:
        return self.total_flops / self.flops_per_second / 60


def estimate_search(space: SearchSpace, protocol: TrialProtocol, n_trials: int, seed: int) -> Estimate:
    wanted = max(1, min(n_trials, SAMPLED))
    archs = [s.arch for s in random_samples(space, wanted * DRAWS, seed) if s.arch is not None][:wanted]
    if not archs:
        raise NasInputError(space.source, "no feasible architecture to estimate")
    config = protocol.pretrain
    total_flops = 0.0
    for arch in archs:
        fpt = arch.flops_per_token(config.seq_len)
        tokens = _trial_tokens(config, protocol.target, arch, fpt)
        finetune = sum(t.steps * t.batch_size * t.max_length for t in protocol.tasks)
        total_flops += (tokens + finetune) * fpt
    total_flops *= max(n_trials, 1) / len(archs)  # the sample's mean cost, for every trial
    reference = sorted(archs, key=lambda a: a.flops_per_token())[len(archs) // 2]
    return Estimate(
        n_archs=len(archs),
        space_name=space.name,
        median_params=statistics.median(a.param_count() for a in archs),
        total_flops=total_flops,
        flops_per_second=measure_flops_per_second(reference, protocol),
        reference=reference.summary(),
        pretrain_seconds_per_trial=config.budget.seconds,
        n_trials=max(n_trials, 1),
    )


def _trial_tokens(config: Any, target: Any, arch: ArchConfig, fpt: float) -> int:
    """Tokens a trial trains at most: its budget, or with rungs its top rung (cut at the target), with no
    pruning; a time budget counts 0 (its seconds are shown instead)."""
    from nas.scaling import target_tokens
    from nas.train.schedule import budget_tokens, rung_plan, rungs_within_target

    if not config.rungs or config.budget.seconds is not None:
        return budget_tokens(config, fpt) or 0
    full = target_tokens(arch.param_count(), fpt, target.tokens, target.flops, target.tokens_per_param)
    capped, _ = rungs_within_target(config, fpt, full)
    if not capped.rungs:
        return budget_tokens(capped, fpt) or 0
    return rung_plan(capped, fpt).total_steps * config.batch_tokens


def measure_flops_per_second(arch: ArchConfig, protocol: TrialProtocol) -> float:
    """Training FLOP/s of ``arch`` here: the fastest of 3 steps after one warm-up step."""
    import torch
    import transformers

    from nas.train.pretrain import make_optimizer, resolve_device

    config = protocol.pretrain
    device = resolve_device(config)
    model: Any = transformers.AutoModelForCausalLM.from_config(arch.to_hf_config()).to(device)
    optimizer = make_optimizer(model, config, 1e-4, device)
    x = torch.randint(0, arch.vocab_size, (config.batch_size, config.seq_len), device=device)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return arch.flops_per_token(config.seq_len) * config.batch_tokens / min(times[1:])
