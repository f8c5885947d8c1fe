"""GPU throughput: MFU and tokens/s of nas's trial loop against a bare PyTorch loop, ~125M params.

The trial loop is `nas.train.pretrain.pretrain` (what every trial runs: schedule, grad clipping,
accumulation, the eval hooks, bf16 autocast on CUDA, `torch.compile` when the protocol asks); the
bare loop is the same model, batch, fused AdamW and bf16 autocast in twelve lines. Each runs with
`torch.compile` off and on. Tokens/s is measured over the steps after warm-up (compilation
excluded); MFU = tokens/s x training FLOPs per token (nas.arch: 3x forward, attention included) /
the GPU's peak dense bf16 FLOP/s (--peak-tflops; 989 for an H100/H200 SXM).

Run it where a GPU is available (never in tests); it finishes in under 5 minutes on one H200:

    python bench/gpu_mfu.py                  # records to bench/RESULTS.md
    python bench/gpu_mfu.py --smoke          # seconds on a CPU: a tiny model, nothing recorded
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import append  # noqa: E402

from nas.arch import ArchConfig  # noqa: E402
from nas.protocol import Budget, Pretrain  # noqa: E402
from nas.train.pretrain import compute_loss, make_optimizer, pretrain  # noqa: E402
from nas.train.windows import batch_at  # noqa: E402


def build(arch: ArchConfig, device: torch.device) -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(arch.to_hf_config()).to(device)


def bare_loop(arch, ids, config: Pretrain, device, steps: int, warmup: int) -> float:
    """Tokens/s of the plainest loop: batch, forward under bf16 autocast, backward, clip, step."""
    model = build(arch, device)
    step_model = torch.compile(model) if config.compile else model
    optimizer = make_optimizer(model, config, config.optimizer.peak_lr(arch.d_model), device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    started = None
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        x, y = batch_at(ids, step, config.batch_size, config.seq_len, config.seed)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            loss = compute_loss(step_model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_tokens / (time.perf_counter() - started)


def trial_loop(arch, ids, config: Pretrain, device, steps: int, warmup: int) -> float:
    """Tokens/s of nas's pretrain() after warm-up: its per-step timer excludes evals, so the rate of the
    steps after ``warmup`` is read from the step callback's cumulative tokens/s."""
    model = build(arch, device)
    marks: dict[int, float] = {}

    def on_step(step: int, loss: float, tps: float) -> None:
        if step in (warmup, warmup + steps):
            marks[step] = step * config.batch_tokens / tps  # training seconds so far

    total = config.model_copy(update={"budget": Budget(tokens=(warmup + steps) * config.batch_tokens)})
    pretrain(model, ids, ids[: 4 * config.seq_len + 1], total, arch.flops_per_token(config.seq_len), on_step=on_step)
    return steps * config.batch_tokens / (marks[warmup + steps] - marks[warmup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32, help="sequences of --seq-len per step")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s of the GPU")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on whatever device, nothing recorded")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.smoke:
        arch = ArchConfig(vocab_size=512, max_seq_len=64, n_layers=2, d_model=64, n_heads=2)
        args.seq_len, args.batch, args.steps, args.warmup = 64, 4, 4, 2
    else:  # GPT-2-small-sized Llama: 12 x 768, 12 heads, gated FFN 2048, 32k vocabulary
        arch = ArchConfig(
            vocab_size=32768, max_seq_len=args.seq_len, n_layers=12, d_model=768, n_heads=12, ffn_dim=2048
        )
    ids = np.random.default_rng(0).integers(0, arch.vocab_size, size=4_000_000, dtype=np.int64)
    flops = arch.flops_per_token(args.seq_len)
    rows = ["| loop | torch.compile | tokens/s | MFU | ratio to bare loop |", "|---|---|---|---|---|"]
    for compiled in (False, True):
        config = Pretrain(
            seq_len=args.seq_len,
            batch_tokens=args.batch * args.seq_len,
            eval_every=10**9,
            eval_tokens=4 * args.seq_len,
            compile=compiled,
        )
        bare = bare_loop(arch, ids, config, device, args.steps, args.warmup)
        trial = trial_loop(arch, ids, config, device, args.steps, args.warmup)
        for name, tps in (("bare PyTorch", bare), ("nas trial (pretrain)", trial)):
            mfu = tps * flops / (args.peak_tflops * 1e12)
            rows.append(
                f"| {name} | {'on' if compiled else 'off'} | {tps:,.0f} | {100 * mfu:.1f} % | {tps / bare:.3f} |"
            )
            print(rows[-1], flush=True)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    body = "\n".join(rows) + (
        f"\n\n{arch.summary()}: {arch.param_count():,} params, {flops:.3g} training FLOPs/token at seq_len "
        f"{args.seq_len}; batch {args.batch} x {args.seq_len}; bf16 autocast; {args.steps} timed steps after "
        f"{args.warmup} warm-up; MFU against {args.peak_tflops:g} TFLOP/s peak ({gpu})."
    )
    if args.smoke or device.type != "cuda":
        print(body)
        return
    append(f"gpu_mfu: trial loop vs bare loop at ~125M params on {gpu}", body)


if __name__ == "__main__":
    main()
