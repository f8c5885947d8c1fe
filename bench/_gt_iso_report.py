"""The iso-FLOP ground truth's figures (bench/gt_iso.py --report): per budget, the best architecture and
whether its size lies inside the space, how many architectures lie within 4x and within +-20 % of the best
size (and how they differ in shape), the seed spread, and how much of the ranking size alone explains."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
from gt_iso import BUDGETS, truth


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) >= 3 else math.nan


def table_of(data: dict[str, Any], entries: list[dict[str, Any]], budget: int) -> dict[str, dict[str, Any]]:
    """hash -> {entry, seeds {seed: loss at D}, mean, tokens, epochs} for the complete runs."""
    runs = [r for r in data["runs"].values() if r["status"] == "complete"]
    out = {}
    for e in entries:
        mine = [r for r in runs if r["arch_hash"] == e["hash"]]
        seeds = {r["seed"]: v for r in mine if (v := truth(r, f"C{budget}")) is not None}
        if seeds:
            seed0 = next(r for r in mine if r["seed"] == min(seeds))
            out[e["hash"]] = {
                "entry": e,
                "seeds": seeds,
                "mean": statistics.fmean(seeds.values()),
                "tokens": seed0["targets"][f"C{budget}"],
                "epochs": seed0["targets"][f"C{budget}"] / 3_440_000,
            }
    return out


def shape_of(e: dict[str, Any]) -> str:
    a = e["arch"]
    kv = "GQA" if a.n_kv_heads < a.n_heads else "MHA"
    attention = "local/global" if a.attention != "full" else "full"
    return f"L{a.n_layers} d{a.d_model} ffn{a.ffn_dim // a.d_model}x {kv} {attention}"


def report(data: dict[str, Any], entries: list[dict[str, Any]]) -> str:
    n_runs = sum(r["status"] == "complete" for r in data["runs"].values())
    sizes = sorted(e["non_embedding_params"] for e in entries)
    lines = [
        f"{n_runs} runs of {len(entries)} architectures (non-embedding params {sizes[0]:,} .. {sizes[-1]:,}); "
        f"budgets {', '.join(f'{c:.3g}' for c in BUDGETS)} FLOPs. Truth: the loss at D = C / flops_per_token "
        "(mean over seeds).",
        "",
        "| C (FLOPs) | best (loss, N, D) | best N's place among the sizes | within 4x of best N (measured) "
        "| within +-20 % (shapes) | seed spread (median, n) | Spearman size-trend vs truth "
        "| best within 4x needs repeated data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i in range(len(BUDGETS)):
        table = table_of(data, entries, i)
        if len(table) < 5:
            lines.append(f"| {BUDGETS[i]:.3g} | {len(table)} architectures so far | | | | | | |")
            continue
        best = min(table.values(), key=lambda r: r["mean"])
        n_best = best["entry"]["non_embedding_params"]
        place = sum(s < n_best for s in sizes)
        band = [r for r in table.values() if n_best / 4 <= r["entry"]["non_embedding_params"] <= 4 * n_best]
        unmeasured = sum(
            1 for e in entries if n_best / 4 <= e["non_embedding_params"] <= 4 * n_best and e["hash"] not in table
        )
        near = [r for r in table.values() if abs(r["entry"]["non_embedding_params"] / n_best - 1) <= 0.2]
        gaps = [abs(r["seeds"][0] - r["seeds"][1]) for r in table.values() if {0, 1} <= set(r["seeds"])]
        spread = statistics.median(gaps) if gaps else math.nan
        logs = np.log([r["entry"]["non_embedding_params"] for r in table.values()])
        means = np.array([r["mean"] for r in table.values()])
        fit = np.polyval(np.polyfit(logs, means, 2), logs)
        repeated = sum(r["epochs"] > 1 for r in band)
        lines.append(
            f"| {BUDGETS[i]:.3g} | {best['entry']['summary']} ({best['mean']:.4f}, {n_best:,}, {best['tokens']:,}) | "
            f"{place + 1} of {len(sizes)} | {len(band)} ({unmeasured} without a point) | {len(near)}: "
            f"{', '.join(sorted({shape_of(r['entry']) for r in near}))} | {spread:.4f} ({len(gaps)}) | "
            f"{_spearman(list(fit), list(means)):.2f} | {repeated} |"
        )
    lines += ["", "The 8 best at each budget (mean over seeds; seed 0 / seed 1):", ""]
    for i in range(len(BUDGETS)):
        table = table_of(data, entries, i)
        ranked = sorted(table.values(), key=lambda r: r["mean"])[:8]
        shown = "; ".join(
            f"{r['entry']['summary']} {r['mean']:.4f} ({' / '.join(f'{v:.4f}' for _, v in sorted(r['seeds'].items()))})"
            for r in ranked
        )
        lines.append(f"- C = {BUDGETS[i]:.3g}: {shown}")
    return "\n".join(lines)
