"""Signal over noise: does the trial protocol separate architectures by more than seed noise?

Pretrains 8 different architectures from a space under a protocol (fine-tuning tasks dropped: the
criterion is held-out loss), then one of them again under 3 different seeds (initialisation and
data order), and compares the spread (max - min) of final held-out loss across architectures with
the spread across seeds. Without a ratio well above 1, no ranking the search makes means anything.
Target for `tiny` x `cpu-tiny`: ratio >= 3.

    python bench/signal_noise.py --space tiny --trial cpu-tiny --archs 8 --seeds 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import append  # noqa: E402

from nas.protocol import load_protocol  # noqa: E402
from nas.space import load_space, random_samples  # noqa: E402
from nas.trial import run_trial  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--trial", default="cpu-tiny")
    parser.add_argument("--archs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    space = load_space(args.space)
    draws = [s.arch for s in random_samples(space, 200, args.sample_seed) if s.arch is not None]
    archs = list({a.arch_hash(): a for a in draws}.values())[: args.archs]

    def loss(arch, seed: int) -> float:
        protocol = load_protocol(args.trial, [*args.overrides, f"pretrain.seed={seed}"])
        result = run_trial(arch, protocol.model_copy(update={"tasks": []}))
        print(f"  seed {seed}  {arch.summary():58s} val_loss {result.metrics['val_loss']:.4f}", flush=True)
        return result.metrics["val_loss"]

    print(f"{len(archs)} architectures, seed 0:")
    arch_losses = [(a, loss(a, 0)) for a in archs]
    reference = archs[0]
    print(f"{args.seeds} seeds of {reference.summary()}:")
    seed_losses = [arch_losses[0][1]] + [loss(reference, s) for s in range(1, args.seeds)]
    arch_spread = max(v for _, v in arch_losses) - min(v for _, v in arch_losses)
    seed_spread = max(seed_losses) - min(seed_losses)
    ratio = arch_spread / seed_spread if seed_spread > 0 else float("inf")

    rows = ["| architecture | params | held-out loss (seed 0) |", "|---|---|---|"]
    rows += [f"| {a.summary()} | {a.param_count():,} | {v:.4f} |" for a, v in sorted(arch_losses, key=lambda x: x[1])]
    verdict = "meets" if ratio >= 3 else "MISSES"
    body = "\n".join(rows) + (
        f"\n\nSeeds 0..{args.seeds - 1} of `{reference.summary()}`: "
        + ", ".join(f"{v:.4f}" for v in seed_losses)
        + f".\n\nSpread across {len(archs)} architectures: {arch_spread:.4f}; across {args.seeds} seeds: "
        f"{seed_spread:.4f}; ratio {ratio:.1f} ({verdict} the >= 3 target). Protocol `{args.trial}` "
        f"(pretraining only){', overrides ' + ' '.join(args.overrides) if args.overrides else ''}."
    )
    if args.no_record:
        print(body)
    else:
        append(f"signal_noise: `{args.space}` x `{args.trial}` held-out loss", body)


if __name__ == "__main__":
    main()
