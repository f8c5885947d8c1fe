"""Training throughput of the trial pretraining loop against a bare PyTorch loop, in the same run.

`nas.train.pretrain.pretrain` (what `run_trial` calls) wraps the training step in an LR schedule,
loss read-back and NaN checks, autocast contexts and held-out evals. This script checks that it
trains as fast as a bare loop: both train the same Hugging Face model (same seed, same init) on the
same random token windows of the protocol's cached ids (`cpu-tiny`), with the same batch, AdamW
groups, LR schedule and gradient clipping, for the same number of steps; their training losses
agree to the last digit. Evals are excluded from both: `eval_every` is set past the last step, so
the trial loop evaluates only at step 0 and at the end, and those evals are timed (by wrapping
`nas.train.pretrain.evaluate`) and subtracted.

Two schedules:
  - lockstep: one `pretrain(...)` call, whose `on_step` callback runs the bare loop's next step on
    a second model, so trial and bare steps alternate (time in the callback is excluded from the
    trial's wall; repetitions alternate which loop goes first);
  - runs: whole runs one after the other, interleaved ABBA (bare, trial, trial, bare, ...).

Measures, per loop (medians; trial/bare is their ratio):
  - median step time: over every step of every run (data, forward, backward, clip, AdamW step);
  - summed step times: what `PretrainOutcome.tokens_per_second` reports (median run);
  - loop wall: the whole loop, optimizer set-up, schedule and read-backs included, evals excluded;
  - median paired ratio, with a bootstrap 95% interval: bare time / trial time of each lockstep
    step pair (of each ABBA pair of runs, in the runs schedule).

The verdict is the lockstep paired ratio, worst architecture: the machine may be shared, and a
paired step ratio cancels load from other processes, which can move whole runs by 2x or more.

    python bench/trial_throughput.py --steps 24 --reps 4
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from _results import append  # noqa: E402

import nas.train.pretrain as pretrain_module  # noqa: E402
from nas.data.tokens import prepare_tokens  # noqa: E402
from nas.protocol import Budget, Pretrain, load_protocol  # noqa: E402
from nas.space import load_space, random_samples  # noqa: E402
from nas.train.pretrain import lr_multiplier  # noqa: E402
from nas.train.windows import batch_at  # noqa: E402

TARGET = 0.97
LABELS = {
    "step": "median step time",
    "pairs": "median paired ratio",
    "sum": "summed step times (= `outcome.tokens_per_second`)",
    "wall": "loop wall, evals excluded",
}


def build_model(arch, tokenizer, seed: int) -> torch.nn.Module:
    """As `nas.model.build_model` does on CPU: seeded, from the HF config of the architecture."""
    torch.manual_seed(seed)
    config = arch.to_hf_config(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return transformers.AutoModelForCausalLM.from_config(config)


@dataclass
class Run:
    step_times: list[float]  # seconds of each training step (data, forward, backward, clip, step)
    wall: float  # seconds of the whole loop, evals (and the other loop, in lockstep) excluded
    loss: float  # last training loss

    @property
    def step_seconds(self) -> float:
        return sum(self.step_times)


class BareLoop:
    """A plain loop: AdamW (decay on matrices only), the same LR schedule, clipping; one step at a time."""

    def __init__(self, model: torch.nn.Module, train_ids: np.ndarray, config: Pretrain, steps: int) -> None:
        start = time.perf_counter()
        self.model, self.ids, self.config, self.steps = model, train_ids, config, steps
        opt = config.optimizer
        self.peak_lr = opt.peak_lr(pretrain_module.model_width(model))  # the trial loop's width rule
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": opt.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=self.peak_lr, betas=opt.betas, eps=opt.eps)
        model.train()
        self.step_times: list[float] = []
        self.loss = torch.tensor(float("nan"))
        self.wall = time.perf_counter() - start

    def step(self, step: int) -> None:
        config, model, optimizer = self.config, self.model, self.optimizer
        start = time.perf_counter()
        for group in optimizer.param_groups:  # outside the step timer, as in pretrain()
            group["lr"] = self.peak_lr * lr_multiplier(step / self.steps, config.schedule)
        started = time.perf_counter()
        x, y = batch_at(self.ids, step, config.batch_size, config.seq_len, config.seed)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        self.step_times.append(end - started)
        self.wall += end - start
        self.loss = loss

    def result(self) -> Run:
        return Run(self.step_times, self.wall, float(self.loss.detach()))

    def run(self) -> Run:
        for step in range(self.steps):
            self.step(step)
        return self.result()


def trial_run(
    model: torch.nn.Module, tokens, config: Pretrain, flops: float, between: Callable[[int], None] | None = None
) -> Run:
    """`pretrain(...)` as `run_trial` calls it. Per-step times come from its ``on_step`` callback
    (cumulative tokens/s, called after the step timer stops); ``between(step)`` runs in that callback
    and its time, like the evals', is subtracted from the wall."""
    excluded = [0.0]
    cumulative = [0.0]
    evaluate = pretrain_module.evaluate

    def timed_evaluate(*args, **kwargs):
        start = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            excluded[0] += time.perf_counter() - start

    def on_step(step: int, loss: float, tokens_per_second: float) -> None:
        start = time.perf_counter()
        cumulative.append(step * config.batch_tokens / tokens_per_second)
        if between is not None:
            between(step)
        excluded[0] += time.perf_counter() - start

    pretrain_module.evaluate = timed_evaluate
    try:
        start = time.perf_counter()
        outcome = pretrain_module.pretrain(
            model, tokens.train, tokens.val, config, flops, None, config.batch_size, on_step
        )
        wall = time.perf_counter() - start - excluded[0]
    finally:
        pretrain_module.evaluate = evaluate
    assert outcome.cause is None, outcome.cause
    step_times = [b - a for a, b in itertools.pairwise(cumulative)]
    assert abs(sum(step_times) - outcome.train_seconds) < 1e-6 * max(1.0, outcome.train_seconds)
    return Run(step_times, wall, outcome.curve[-1].train_loss)


def lockstep(arch, tokens, config: Pretrain, steps: int, bare_first: bool) -> tuple[Run, Run]:
    """One trial run and one bare run whose steps alternate (bare first or trial first)."""
    flops = arch.flops_per_token(config.seq_len)
    bare = BareLoop(build_model(arch, tokens.tokenizer, config.seed), tokens.train, config, steps)
    model = build_model(arch, tokens.tokenizer, config.seed)
    gc.collect()
    if bare_first:
        bare.step(0)
        trial = trial_run(model, tokens, config, flops, lambda done: bare.step(done) if done < steps else None)
    else:
        trial = trial_run(model, tokens, config, flops, lambda done: bare.step(done - 1))
    return bare.result(), trial


def separate(arch, tokens, config: Pretrain, steps: int, kind: str) -> Run:
    model = build_model(arch, tokens.tokenizer, config.seed)
    gc.collect()
    if kind == "bare":
        return BareLoop(model, tokens.train, config, steps).run()
    return trial_run(model, tokens, config, arch.flops_per_token(config.seq_len))


def speeds(runs: list[Run], batch_tokens: int, steps: int) -> dict[str, float]:
    """Tokens/s by each measure: median step over all steps of all runs; median run's sum and wall."""
    return {
        "step": batch_tokens / statistics.median(t for r in runs for t in r.step_times),
        "sum": steps * batch_tokens / statistics.median(r.step_seconds for r in runs),
        "wall": steps * batch_tokens / statistics.median(r.wall for r in runs),
    }


def spread(runs: list[Run]) -> float:
    """Slowest over fastest run by summed step time: near 1 on a quiet machine, far above under outside load."""
    seconds = [r.step_seconds for r in runs]
    return max(seconds) / min(seconds)


def ratios(bare: list[Run], trial: list[Run], batch_tokens: int, steps: int, lockstep: bool) -> dict[str, tuple]:
    """Per measure: (bare tokens/s, trial tokens/s, trial/bare, run-to-run spread note)."""
    b, t = speeds(bare, batch_tokens, steps), speeds(trial, batch_tokens, steps)
    out = {key: (b[key], t[key], t[key] / b[key], "") for key in b}
    out["sum"] = (*out["sum"][:3], f"run spread {spread(bare):.2f}x bare, {spread(trial):.2f}x trial")
    if lockstep:  # bare step k next to trial step k, the ratio of their times
        pairs = [
            x / y for rb, rt in zip(bare, trial, strict=True) for x, y in zip(rb.step_times, rt.step_times, strict=True)
        ]
    else:  # runs: the ratio of summed step times within each ABBA pair of runs
        pairs = [rb.step_seconds / rt.step_seconds for rb, rt in zip(bare, trial, strict=True)]
    low, high = bootstrap_median(pairs)
    out["pairs"] = (None, None, statistics.median(pairs), f"95% CI {low:.3f}-{high:.3f}, {len(pairs)} pairs")
    return out


def bootstrap_median(values: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the median."""
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(np.asarray(values), size=(draws, len(values))), axis=1)
    return float(np.quantile(medians, 0.025)), float(np.quantile(medians, 0.975))


def report_line(arch, rep: int, kind: str, run: Run, batch_tokens: int) -> None:
    med = batch_tokens / statistics.median(run.step_times)
    total = len(run.step_times) * batch_tokens / run.step_seconds
    print(
        f"{arch.summary():52s} rep {rep} {kind:14s} {med:8,.0f} tok/s median step, {total:8,.0f} summed, "
        f"loss {run.loss:.4f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="cpu-tiny")
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per run")
    parser.add_argument("--reps", type=int, default=4, help="repetitions of each schedule per architecture (>= 3)")
    parser.add_argument("--mode", choices=["both", "lockstep", "runs"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    protocol = load_protocol(args.protocol)
    tokens = prepare_tokens(protocol)
    config = protocol.pretrain.model_copy(
        update={
            "budget": Budget(tokens=args.steps * protocol.pretrain.batch_tokens),
            "eval_every": args.steps + 1,
            "device": "cpu",
        }
    )
    space = load_space(args.space)
    archs = {s.arch.arch_hash(): s.arch for s in random_samples(space, args.samples, seed=0) if s.feasible}
    ranked = sorted(archs.values(), key=lambda a: a.flops_per_token(config.seq_len), reverse=True)
    chosen = [ranked[0], ranked[len(ranked) // 2]]  # the costliest and the median
    modes = ["lockstep", "runs"] if args.mode == "both" else [args.mode]

    # Warm the process up (allocator, kernels, lazy imports), unmeasured.
    separate(
        chosen[1], tokens, config.model_copy(update={"budget": Budget(tokens=2 * config.batch_tokens)}), 2, "trial"
    )

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    rows, losses = [], []
    for arch in chosen:
        for mode in modes:
            bare_runs, trial_runs = [], []
            for rep in range(args.reps):
                bare_first = rep % 2 == 0
                if mode == "lockstep":
                    bare, trial = lockstep(arch, tokens, config, args.steps, bare_first)
                else:
                    order = ("bare", "trial") if bare_first else ("trial", "bare")
                    done = {kind: separate(arch, tokens, config, args.steps, kind) for kind in order}
                    bare, trial = done["bare"], done["trial"]
                bare_runs.append(bare)
                trial_runs.append(trial)
                report_line(arch, rep, f"{mode} bare", bare, config.batch_tokens)
                report_line(arch, rep, f"{mode} trial", trial, config.batch_tokens)
                losses.append(abs(bare.loss - trial.loss))
            measured = ratios(bare_runs, trial_runs, config.batch_tokens, args.steps, mode == "lockstep")
            rows += [(arch, mode, key, *values) for key, values in measured.items()]
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()[0]

    table = [
        "| architecture | MFLOPs/token | schedule | measure | bare tokens/s | trial tokens/s | trial/bare | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch, mode, key, bare_tps, trial_tps, ratio, note in rows:
        cells = [f"{v:,.0f}" if v is not None else "" for v in (bare_tps, trial_tps)]
        mflops = arch.flops_per_token(config.seq_len) / 1e6
        table.append(
            f"| {arch.summary()} | {mflops:.2f} | {mode} | {LABELS[key]} | {' | '.join(cells)} | {ratio:.3f} | {note} |"
        )
    primary = [r for r in rows if r[1] == modes[0] and r[2] == "pairs"]
    worst = min(primary, key=lambda r: r[5])
    others = [r[5] for r in rows if r[2] != "pairs"]
    verdict = "meets" if worst[5] >= args.target else "MISSES"
    body = "\n".join(table) + (
        f"\n\nTrial/bare, by the {modes[0]} median paired ratio, worst architecture ({worst[0].summary()}): "
        f"{worst[5]:.3f} ({worst[6]}) against the {args.target:.2f} target: {verdict} it. The unpaired measures "
        f"range over {min(others):.3f}-{max(others):.3f}. "
        f"`{args.protocol}` batch {config.batch_size} x {config.seq_len} tokens, {args.reps} repetitions of "
        f"{args.steps} steps per loop, schedule and architecture, fresh models per repetition, evals excluded, "
        f"{args.threads} torch threads; {elapsed:.0f} s measured. Bare and trial final training losses differ by at "
        f"most {max(losses):.1e} (same init, data and schedule). 1-minute load average {load_before:.1f} before, "
        f"{load_after:.1f} after. Run spread: slowest over fastest repetition by summed step time; far above 1 "
        f"means other processes loaded the machine during some runs: the paired ratios cancel that (lockstep: "
        f"a bare and a trial step, adjacent in time) where the unpaired medians do not."
    )
    if not args.no_record:
        append("trial_throughput: trial loop vs bare PyTorch loop", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
