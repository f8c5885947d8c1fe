"""Is the width rule for the learning rate fair where it was not chosen (issue 32, point 6)?

The rule shipped until 2026-12-07 (`optimizer.lr_width_base: 64`, scope `model`: the whole model's peak
lr x 64 / d_model above width 64) was chosen on the Gutenberg books (bench/lr_sweep.py). Here it is compared with the
µP-faithful rule (scope `hidden`: only the hidden matrices' Adam lr x 64 / d_model; embeddings, norms and
biases keep the base lr) and with no rule (3e-3 for every width), on two corpora: the Gutenberg books
(bench/_gutenberg.py, 2 books held out) and Tiny Shakespeare (bench/_shakespeare.py; its ~300k training
tokens repeat at this budget, for every rule alike), at widths 128 and 256 (at 64 and below the rules
agree), 2 seeds, WSD, 4 x the ground truth's trial budget (786,432 tokens). Results go to bench/lr_rule.json,
shared by several processes (one per core; each claims a run) and resumed after a restart.

    nice -n 19 python bench/lr_rule.py --threads 1       # the runs (start one per core)
    python bench/lr_rule.py --report [--record]          # per corpus and width: each rule's loss, the verdict
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gutenberg import BATCH_TOKENS, SEQ_LEN, VOCAB, gutenberg_protocol  # noqa: E402
from _results import record  # noqa: E402
from _shakespeare import shakespeare_protocol  # noqa: E402
from gt_train import claimed, locked  # noqa: E402
from lr_sweep import finite_or_none, nas_source, save  # noqa: E402

from nas.arch import ArchConfig  # noqa: E402

OUT = Path(__file__).resolve().parent / "lr_rule.json"
TOKENS = 786_432
SEEDS = (0, 1)
RULES = {  # name: overrides of text-files' optimizer (lr 3e-3, lr_width_base 64; the model rule was shipped until
    # 2026-12-07, when these runs made the hidden rule the shipped one)
    "model": ["pretrain.optimizer.lr_width_scope=model"],
    "hidden (µP)": ["pretrain.optimizer.lr_width_scope=hidden"],
    "none (3e-3)": ["pretrain.optimizer.lr_width_base=null"],
}
CORPORA = ("gutenberg", "shakespeare")


def archs() -> list[ArchConfig]:
    common = dict(family="qwen3", vocab_size=VOCAB, max_seq_len=SEQ_LEN, head_dim=32, qk_norm=True)
    return [
        ArchConfig(**common, n_layers=4, d_model=128, n_heads=4, n_kv_heads=4, ffn_dim=384),
        ArchConfig(**common, n_layers=2, d_model=256, n_heads=8, n_kv_heads=8, ffn_dim=768),
    ]


def protocol_for(corpus: str, rule: str, seed: int) -> Any:
    extra = ["pretrain.schedule.kind=wsd", *RULES[rule]]
    if corpus == "gutenberg":
        return gutenberg_protocol(TOKENS, seed=seed, eval_every=96, extra=extra)
    sets = [f"tokenizer.vocab_size={VOCAB}", f"pretrain.seq_len={SEQ_LEN}", f"pretrain.batch_tokens={BATCH_TOKENS}"]
    return shakespeare_protocol(
        TOKENS, seed=seed, eval_every=96, extra=[*sets, "pretrain.optimizer.lr_width_base=64", *extra]
    )


def planned() -> list[tuple[str, str, str, ArchConfig, int]]:
    """(key, corpus, rule, arch, seed), seed 0 of everything first."""
    return [
        (f"{corpus}/{arch.arch_hash()}/{rule}/seed={seed}", corpus, rule, arch, seed)
        for seed in SEEDS
        for corpus in CORPORA
        for arch in archs()
        for rule in RULES
    ]


def train(corpus: str, rule: str, arch: ArchConfig, seed: int) -> dict[str, Any]:
    from nas.trial import run_trial

    protocol = protocol_for(corpus, rule, seed)
    started = time.perf_counter()
    result = run_trial(arch, protocol)
    opt = protocol.pretrain.optimizer
    return {
        "corpus": corpus,
        "rule": rule,
        "summary": arch.summary(),
        "d_model": arch.d_model,
        "seed": seed,
        "peak_lr": opt.peak_lr(arch.d_model),
        "hidden_lr": opt.peak_lr(arch.d_model)
        * (opt.width_factor(arch.d_model) if opt.lr_width_scope == "hidden" else 1),
        "status": result.status,
        "val_loss": finite_or_none(result.metrics.get("val_loss", float("nan"))),
        "tokens": int(result.metrics.get("tokens_trained", 0)),
        "wall_seconds": time.perf_counter() - started,
        "protocol_hash": protocol.content_hash,
        "nas_source": nas_source(),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def run_all() -> None:
    if not OUT.exists():
        save({"meta": {"what": "bench/lr_rule.py", "tokens": TOKENS}, "runs": {}}, OUT)
    for key, corpus, rule, arch, seed in planned():
        with locked(OUT) as data:
            if key in data["runs"] or claimed(data, key):
                continue
            since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            data.setdefault("claims", {})[key] = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        entry = None
        try:
            entry = train(corpus, rule, arch, seed)
        finally:
            with locked(OUT) as data:
                data["claims"].pop(key, None)
                if entry is not None:
                    data["runs"][key] = entry
        print(f"{key}: {entry['val_loss']} ({entry['wall_seconds']:.0f}s)", flush=True)


def report(data: dict[str, Any]) -> str:
    runs = [r for r in data["runs"].values() if r["val_loss"] is not None]
    lines = [
        "| corpus | width | " + " | ".join(RULES) + " | seed spread | best |",
        "|---|---|" + "---|" * (len(RULES) + 2),
    ]
    verdict: dict[str, int] = dict.fromkeys(RULES, 0)
    cells_total = 0
    for corpus in CORPORA:
        for width in sorted({r["d_model"] for r in runs}):
            means, gaps = {}, []
            for rule in RULES:
                values = {
                    r["seed"]: r["val_loss"]
                    for r in runs
                    if (r["corpus"], r["d_model"], r["rule"]) == (corpus, width, rule)
                }
                if values:
                    means[rule] = statistics.fmean(values.values())
                if len(values) == 2:
                    gaps.append(abs(values[0] - values[1]))
            if not means:
                continue
            spread = statistics.median(gaps) if gaps else float("nan")
            best = min(means, key=means.get)
            cells_total += 1
            for rule, m in means.items():
                verdict[rule] += m - means[best] <= spread  # within the seed spread of the best
            shown = [f"{means[r]:.4f}" if r in means else "-" for r in RULES]
            lines.append(f"| {corpus} | {width} | " + " | ".join(shown) + f" | {spread:.4f} | {best} |")
    lines.append("")
    lines.append(
        "Within the seed spread (median |seed 0 - seed 1| of the cell) of the cell's best: "
        + "; ".join(f"{rule} {n} of {cells_total}" for rule, n in verdict.items())
        + "."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if args.report:
        record(
            "lr_rule: the width rule for the learning rate on two corpora",
            report(json.loads(OUT.read_text())),
            not args.record,
        )
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run_all()


if __name__ == "__main__":
    main()
