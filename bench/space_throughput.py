"""Training throughput of the costliest architectures of a space on this machine's CPU.

The `tiny` space promises that every sample trains at >= 5k tokens/s on 2 CPU cores. This script
samples the space, takes the architectures with the most training FLOPs/token (the slowest), plus
the cheapest one as the in-run baseline, and times plain AdamW training steps (forward, backward,
step) of each HF model on random token batches of the space's context length.

    python bench/space_throughput.py --space tiny --top 6 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import transformers  # noqa: E402
from _results import append  # noqa: E402

from nas.space import load_space, random_samples  # noqa: E402


def tokens_per_second(arch, batch: int, steps: int, warmup: int = 3) -> float:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(arch.to_hf_config())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, arch.vocab_size, (batch, arch.max_seq_len))
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return batch * arch.max_seq_len / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--target", type=float, default=5000.0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2) if not torch.cuda.is_available() else torch.get_num_threads())

    space = load_space(args.space)
    archs = {s.arch.arch_hash(): s.arch for s in random_samples(space, args.samples, seed=0) if s.feasible}
    ranked = sorted(archs.values(), key=lambda a: a.flops_per_token(), reverse=True)
    chosen = [*ranked[: args.top], ranked[-1]]
    rows = []
    for arch in chosen:
        tps = tokens_per_second(arch, args.batch, args.steps)
        rows.append((arch, tps))
        print(f"{arch.summary():60s} {arch.flops_per_token() / 1e6:7.2f} MFLOP/tok {tps:10,.0f} tok/s", flush=True)
    baseline = rows[-1][1]
    worst = min(t for _, t in rows[:-1])
    table = ["| architecture | params | MFLOPs/token | tokens/s | vs cheapest |", "|---|---|---|---|---|"]
    for arch, tps in rows:
        mflops, ratio = arch.flops_per_token() / 1e6, tps / baseline
        table.append(f"| {arch.summary()} | {arch.param_count():,} | {mflops:.2f} | {tps:,.0f} | {ratio:.2f} |")
    verdict = "meets" if worst >= args.target else "MISSES"
    body = "\n".join(table) + (
        f"\n\nSlowest of the {args.top} costliest of {len(archs)} distinct `{args.space}` samples: "
        f"{worst:,.0f} tokens/s ({worst / args.target:.2f}x the {args.target:,.0f} target: {verdict} it); "
        f"the cheapest architecture (baseline, same run) trains at {baseline:,.0f} tokens/s. "
        f"Batch {args.batch} x {chosen[0].max_seq_len} tokens, AdamW, median of {args.steps} steps."
    )
    if not args.no_record:
        append(f"space_throughput: `{args.space}` training tokens/s", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
