"""`nas search --dry-run`: sample the space and estimate the study's compute at the throughput measured
here and now, and the memory a worker needs, training nothing. At most :data:`SAMPLED` architectures are
drawn, whatever ``n_trials`` (a million trials are estimated from the same sample, scaled), so a dry run
takes seconds. The throughput is one forward pass of a micro-batch no larger than :data:`MEASURE_BYTES`
allows, without gradients (a training step's FLOPs are three forwards'); the peak memory of a training
step is worked out from the counts (:func:`step_memory_bytes`), and a protocol whose step cannot fit the
machine's memory is refused."""

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
MEASURE_BYTES = 1 << 30  # activations (and logits) the throughput's forward pass may hold


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
    peak_bytes: float = 0.0  # a worker's training step, for the largest sampled architecture (step_memory_bytes)
    peak_reference: str = ""  # that architecture's summary
    available_bytes: float | None = None  # the device's memory (available RAM on CPU), None if unknown

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
    largest = max(archs, key=lambda a: step_memory_bytes(a, config))
    peak, available = step_memory_bytes(largest, config), device_memory_bytes(config)
    if available is not None and peak > available:
        problem = (
            f"one training step of {largest.summary()} needs about {peak / 2**30:.1f} GiB (weights, gradients "
            f"and Adam state, and the activations and logits of a micro-batch of {_micro(config)} sequences of "
            f"{config.seq_len}), more than the {available / 2**30:.1f} GiB this machine has free: lower "
            "pretrain.micro_batch_size (the batch is kept by accumulation) or the space's sizes"
        )
        raise NasInputError(protocol.source, [("pretrain.micro_batch_size", problem)])
    return Estimate(
        n_archs=len(archs),
        space_name=space.name,
        median_params=statistics.median(a.param_count() for a in archs),
        total_flops=total_flops,
        flops_per_second=measure_flops_per_second(reference, protocol),
        reference=reference.summary(),
        pretrain_seconds_per_trial=config.budget.seconds,
        n_trials=max(n_trials, 1),
        peak_bytes=peak,
        peak_reference=largest.summary(),
        available_bytes=available,
    )


def _micro(config: Any) -> int:
    return int(min(config.micro_batch_size or config.batch_size, config.batch_size))


def _bytes_per_value(config: Any) -> int:
    from nas.train.pretrain import resolve_device

    device = resolve_device(config)
    return 2 if config.dtype == "bfloat16" or (config.dtype == "auto" and device.type == "cuda") else 4


def _activation_bytes(arch: ArchConfig, config: Any, sequences: int) -> float:
    """The activations a backward pass keeps for ``sequences`` sequences (per layer and token: the residual
    stream, norms, q/k/v and attention output, the FFN's inner values, and the attention probabilities
    where they are materialised), plus the logits in the loss's float32 and their gradient."""
    tokens = sequences * config.seq_len
    d, heads, kv_heads, head_dim, ffn = arch.dims()
    inner = 3 * ffn if arch.ffn == "gated" else 2 * ffn
    per_layer = 6 * d + 2 * heads * head_dim + 2 * kv_heads * head_dim + inner + 2 * heads * config.seq_len
    logits = tokens * arch.vocab_size * (_bytes_per_value(config) + 8)
    return tokens * arch.n_layers * per_layer * _bytes_per_value(config) + logits


def step_memory_bytes(arch: ArchConfig, config: Any) -> float:
    """A worker's peak memory in one training step, worked out from the counts: float32 weights, gradients and
    AdamW's two moments (16 bytes per parameter), and the activations of one micro-batch."""
    return 16.0 * arch.param_count() + _activation_bytes(arch, config, _micro(config))


def device_memory_bytes(config: Any) -> float | None:
    """The protocol's device's memory: a GPU's total, or the RAM available now (None if unknown)."""
    import torch

    from nas.train.pretrain import resolve_device

    if resolve_device(config).type == "cuda":
        return float(torch.cuda.mem_get_info()[1])
    try:
        for line in open("/proc/meminfo"):  # noqa: SIM115  (a small read-only file)
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


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
    """Training FLOP/s of ``arch`` here, from forward passes alone: the fastest of 3 after a warm-up, of a
    micro-batch whose activations stay within MEASURE_BYTES, without gradients (a training step costs three
    forwards' FLOPs, at about a forward's rate)."""
    import torch
    import transformers

    from nas.train.pretrain import autocast_for, resolve_device

    config = protocol.pretrain
    device = resolve_device(config)
    per_sequence = _activation_bytes(arch, config, 1)
    sequences = max(1, min(_micro(config), int(MEASURE_BYTES // per_sequence)))
    model: Any = transformers.AutoModelForCausalLM.from_config(arch.to_hf_config()).to(device)
    model.eval()
    x = torch.randint(0, arch.vocab_size, (sequences, config.seq_len), device=device)
    times = []
    with torch.no_grad():
        for _ in range(4):
            start = time.perf_counter()
            with autocast_for(device, config):
                model(input_ids=x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return arch.flops_per_token(config.seq_len) / 3 * sequences * config.seq_len / min(times[1:])
