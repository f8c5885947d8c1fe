"""Ground truth for the benchmarks: every architecture of bench/grid.yaml (20) trained on Tiny Shakespeare
at the trial budget (200k tokens, the full learning curve kept) and at a long budget (8x), plus one
architecture under 3 seeds at both budgets (the noise band). Results go to bench/ground_truth.json,
written after every run so an interrupted run resumes where it stopped; later benchmarks
(proxy_fidelity.py, search_efficiency.py, trainer_search.py) read it instead of retraining.

    nice -n 19 python bench/ground_truth.py --threads 1      # about 1.5 h on one core of this machine
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _results import append, machine  # noqa: E402
from _shakespeare import (  # noqa: E402
    EVAL_EVERY,
    GRID,
    GROUND_TRUTH,
    LONG_FACTOR,
    SHORT_TOKENS,
    grid_archs,
    shakespeare_protocol,
)

from nas.trial import run_trial  # noqa: E402

SEED_ARCH = 12  # index into grid_archs(): llama L2 d128 ffn256, mid-grid


def train(arch, tokens: int, seed: int, eval_every: int) -> dict:
    protocol = shakespeare_protocol(tokens, seed, eval_every)
    started = time.perf_counter()
    result = run_trial(arch, protocol)
    if result.status != "complete":
        raise RuntimeError(f"{arch.summary()}: {result.status} ({result.cause})")
    return {
        "val_loss": result.metrics["val_loss"],
        "tokens": int(result.metrics["tokens_trained"]),
        "train_seconds": result.metrics["train_seconds"],
        "wall_seconds": time.perf_counter() - started,
        "curve": [[p.step, p.tokens, p.val_loss] for p in result.curve],
        "protocol_hash": protocol.content_hash,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=GROUND_TRUTH)
    parser.add_argument("--indices", help="train only these grid indices, e.g. 18-23 (a second process's share)")
    parser.add_argument("--merge", type=Path, action="append", default=[], help="fold in another run's JSON first")
    parser.add_argument("--seeds-only", action="store_true", help="only the seed runs (write to --out, then --merge)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    archs = grid_archs()
    long_tokens = SHORT_TOKENS * LONG_FACTOR
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault(
        "meta",
        {
            "space": GRID.name,
            "space_text": GRID.read_text(),
            "data": "Tiny Shakespeare (../shared/data/tinyshakespeare/input.txt), text-files protocol",
            "short_tokens": SHORT_TOKENS,
            "long_tokens": long_tokens,
            "eval_every_short": EVAL_EVERY,
            "machine": machine(),
            "threads": torch.get_num_threads(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    data["meta"]["space_text"] = GRID.read_text()  # the grid as it is now (see its constraint)
    data.setdefault("archs", {})
    data.setdefault("seeds", {})
    for other in args.merge:
        theirs = json.loads(other.read_text())
        for key, entry in theirs["archs"].items():
            mine = data["archs"].setdefault(key, entry)
            for budget in ("short", "long"):
                if budget in entry:
                    mine.setdefault(budget, entry[budget])
        for key, run in theirs.get("seeds", {}).get("runs", {}).items():
            data["seeds"].setdefault("runs", {}).setdefault(key, run)
    chosen = range(len(archs))
    if args.indices:
        low, high = (int(v) for v in args.indices.split("-"))
        chosen = range(low, high + 1)

    def save() -> None:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(args.out)

    for i, arch in enumerate(archs):
        if i not in chosen or args.seeds_only:
            continue
        entry = data["archs"].setdefault(
            arch.arch_hash(),
            {
                "index": i,
                "summary": arch.summary(),
                "arch": arch.to_dict(),
                "params": arch.param_count(),
                "non_embedding_params": arch.non_embedding_params(),
                "flops_per_token": arch.flops_per_token(256),
            },
        )
        for budget, tokens, every in (("short", SHORT_TOKENS, EVAL_EVERY), ("long", long_tokens, EVAL_EVERY * 4)):
            if budget not in entry:
                entry[budget] = train(arch, tokens, 0, every)
                save()
            print(
                f"{i:2d} {arch.summary():45s} {budget:5s} {entry[budget]['val_loss']:.4f} "
                f"({entry[budget]['wall_seconds']:.0f}s)",
                flush=True,
            )

    if args.indices:
        save()
        return
    reference = archs[SEED_ARCH]
    seeds = data["seeds"].setdefault("runs", {})
    data["seeds"]["arch_hash"] = reference.arch_hash()
    for seed in (1, 2):
        for budget, tokens, every in (("short", SHORT_TOKENS, EVAL_EVERY), ("long", long_tokens, EVAL_EVERY * 4)):
            key = f"{budget}/{seed}"
            if key not in seeds:
                seeds[key] = train(reference, tokens, seed, every)
                save()
            print(f"seed {seed} {reference.summary():45s} {budget:5s} {seeds[key]['val_loss']:.4f}", flush=True)
    if args.seeds_only:
        save()
        return
    data["meta"]["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    save()

    entries = sorted(data["archs"].values(), key=lambda e: e["long"]["val_loss"])
    rows = ["| rank | architecture | non-emb params | short loss | long loss |", "|---|---|---|---|---|"]
    rows += [
        f"| {r + 1} | {e['summary']} | {e['non_embedding_params']:,} | {e['short']['val_loss']:.4f} | "
        f"{e['long']['val_loss']:.4f} |"
        for r, e in enumerate(entries)
    ]
    ref = data["archs"][reference.arch_hash()]
    long_seeds = [ref["long"]["val_loss"], seeds["long/1"]["val_loss"], seeds["long/2"]["val_loss"]]
    hours = sum(e[b]["wall_seconds"] for e in data["archs"].values() for b in ("short", "long")) / 3600
    body = "\n".join(rows) + (
        f"\n\n{len(entries)} architectures of `bench/grid.yaml`, Tiny Shakespeare, short budget "
        f"{SHORT_TOKENS:,} tokens, long budget {long_tokens:,} tokens ({LONG_FACTOR}x); "
        f"{hours:.2f} h of training on {data['meta']['threads']} thread(s). Long-budget loss of "
        f"`{reference.summary()}` over seeds 0, 1, 2: {', '.join(f'{v:.4f}' for v in long_seeds)}. "
        f"Stored in `bench/{args.out.name}`."
    )
    append(f"ground_truth: {len(entries)} architectures on Tiny Shakespeare, short and 8x budgets", body)


if __name__ == "__main__":
    main()
