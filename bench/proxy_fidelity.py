"""Proxy fidelity: how well do cheap scores rank architectures by their long-budget quality?

Reads bench/ground_truth.json (run bench/ground_truth.py first): 20 architectures of bench/grid.yaml
trained on Tiny Shakespeare at the trial budget (200k tokens) and at 8x. For each score it prints
Spearman's rho and Kendall's tau against the long-budget held-out loss (negated, so +1 is perfect),
computed with nas.proxy.fidelity, the code `nas report`'s proxy check uses:
- short-trial scores: the held-out loss at the end of the trial budget, and at its first eval;
- zero-cost scores, at initialisation with the trial's seed and first batch, with nas.proxy:
  non-embedding params, SNIP, gradient norm.
Then the signal-to-noise ratio: the spread of long-budget loss across architectures against the
spread of one architecture over 3 seeds; pairs closer than the seed spread are ties.

    python bench/proxy_fidelity.py     # about a minute (zero-cost scores only; no training)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _results import record  # noqa: E402
from _shakespeare import GROUND_TRUTH, shakespeare_protocol  # noqa: E402

from nas.arch import ArchConfig  # noqa: E402
from nas.data.tokens import prepare_tokens  # noqa: E402
from nas.model import build_model, fit_vocab  # noqa: E402
from nas.proxy import fidelity, zero_cost_scores  # noqa: E402
from nas.train.windows import batch_at  # noqa: E402

LABELS = {
    "short": "short trial: held-out loss at the trial budget (200k tokens)",
    "first_eval": "short trial: held-out loss at its first eval (20k tokens)",
    "non_embedding_params": "zero-cost: non-embedding params",
    "proxy.snip": "zero-cost: SNIP at initialisation",
    "proxy.grad_norm": "zero-cost: gradient norm at initialisation",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-record", action="store_true", help="print; do not append to RESULTS.md")
    args = parser.parse_args()
    data = json.loads(GROUND_TRUTH.read_text())
    entries = [e for e in data["archs"].values() if "long" in e and "short" in e]
    protocol = shakespeare_protocol()
    config = protocol.pretrain
    tokens = prepare_tokens(protocol)
    micro = config.micro_batch_size or config.batch_size
    x, y = batch_at(tokens.train, 0, min(8, micro), config.seq_len, config.seed)  # as run_trial does

    scores: dict[str, list[float]] = {name: [] for name in LABELS}
    for e in entries:
        arch, _ = fit_vocab(ArchConfig(**e["arch"]), tokens.vocab_size, config.seq_len)
        model = build_model(arch, tokens.tokenizer, torch.device("cpu"), config.seed)
        zc = zero_cost_scores(model, x, y)
        scores["short"].append(-e["short"]["val_loss"])
        scores["first_eval"].append(-e["short"]["curve"][1][2])
        scores["non_embedding_params"].append(float(e["non_embedding_params"]))
        scores["proxy.snip"].append(zc["proxy.snip"])
        scores["proxy.grad_norm"].append(zc["proxy.grad_norm"])
    quality = [-e["long"]["val_loss"] for e in entries]
    rows = fidelity(scores, quality)

    table = ["| score | Spearman's rho | Kendall's tau |", "|---|---|---|"]
    table += [f"| {LABELS[r.name]} | {r.rho:.3f} | {r.tau:.3f} |" for r in rows]

    long_losses = [e["long"]["val_loss"] for e in entries]
    short_losses = [e["short"]["val_loss"] for e in entries]
    seeds = data.get("seeds", {})
    ref = data["archs"].get(seeds.get("arch_hash", ""), {})
    runs = seeds.get("runs", {})
    noise = ""
    if ref and all(f"{b}/{s}" in runs for b in ("short", "long") for s in (1, 2)):
        long_seeds = [ref["long"]["val_loss"], runs["long/1"]["val_loss"], runs["long/2"]["val_loss"]]
        short_seeds = [ref["short"]["val_loss"], runs["short/1"]["val_loss"], runs["short/2"]["val_loss"]]
        band_long = max(long_seeds) - min(long_seeds)
        band_short = max(short_seeds) - min(short_seeds)
        spread_long = max(long_losses) - min(long_losses)
        spread_short = max(short_losses) - min(short_losses)
        pairs = list(itertools.combinations(long_losses, 2))
        ties = sum(abs(a - b) <= band_long for a, b in pairs)
        best = min(long_losses)
        near_best = sum(v - best <= band_long for v in long_losses)
        noise = (
            f"\n\nSignal to noise: long-budget loss spreads {spread_long:.4f} across the {len(entries)} "
            f"architectures and {band_long:.4f} across 3 seeds of `{ref['summary']}` (ratio "
            f"{spread_long / band_long:.1f}); at the trial budget {spread_short:.4f} vs {band_short:.4f} (ratio "
            f"{spread_short / band_short:.1f}). {ties} of {len(pairs)} architecture pairs differ by less than the "
            f"long-budget seed spread (ties); {near_best} architectures lie within it of the best "
            f"({best:.4f})."
        )
    best_long = min(entries, key=lambda e: e["long"]["val_loss"])
    best_short = min(entries, key=lambda e: e["short"]["val_loss"])
    picks = (
        f"\n\nBest at the long budget: `{best_long['summary']}` ({best_long['long']['val_loss']:.4f}); best at the "
        f"trial budget: `{best_short['summary']}`, whose long-budget loss is {best_short['long']['val_loss']:.4f} "
        f"({100 * (best_short['long']['val_loss'] / best_long['long']['val_loss'] - 1):.2f} % worse)."
    )
    body = (
        "\n".join(table)
        + noise
        + picks
        + (
            f"\n\nFrom `bench/ground_truth.json` ({len(entries)} architectures of `bench/grid.yaml`, Tiny Shakespeare, "
            f"{data['meta']['short_tokens']:,} vs {data['meta']['long_tokens']:,} tokens). Correlations by "
            "`nas.proxy.fidelity`, as in `nas report`'s proxy check; scores oriented so +1 is a perfect ranking."
        )
    )
    record("proxy_fidelity: short trials and zero-cost proxies vs the long budget", body, args.no_record)


if __name__ == "__main__":
    main()
