"""The report of bench/gt_train.py: the ground truth per architecture, its ceiling (8T seed 0 vs seed 1),
the pairs tied within the seed spread, rank correlations against the mean 8T loss, and the runs redone."""

from __future__ import annotations

import collections
import itertools
import math
import statistics
from typing import Any

from _gutenberg import FAR_FACTOR, LONG_FACTOR, at_recipe_lr


def by_arch(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per architecture: half, params, the T loss, the 8T losses by seed and their mean, the loss at T on
    the 8T seed-0 curve, the 16T loss (None where a run is missing or failed)."""
    short = data["meta"]["short_tokens"]
    rows: dict[str, dict[str, Any]] = {}
    for r in data["runs"].values():
        row = rows.setdefault(r["arch_hash"], {"half": r["half"], "params": r["non_embedding_params"], "long": {}})
        if r["val_loss"] is None or not at_recipe_lr(r, r["d_model"]):  # a stale run waits to be redone
            continue
        if r["factor"] == 1 and r["seed"] == 0:
            row["t"] = r["val_loss"]
        elif r["factor"] == FAR_FACTOR and r["seed"] == 0:
            row["far"] = r["val_loss"]
        elif r["factor"] == LONG_FACTOR:
            row["long"][r["seed"]] = r["val_loss"]
            if r["seed"] == 0:
                row["t_curve"] = next((p[2] for p in r["curve"] if p[1] == short), None)
    for row in rows.values():
        row["mean"] = statistics.fmean(row["long"].values()) if row["long"] else None
    return list(rows.values())


def cell(pairs: list[tuple[float, float]]) -> str:
    from scipy import stats

    if len(pairs) < 3:
        return f"- ({len(pairs)})"
    xs, ys = zip(*pairs, strict=True)
    rho, tau = stats.spearmanr(xs, ys).statistic, stats.kendalltau(xs, ys).statistic
    return f"{rho:.3f} / {tau:.3f} ({len(pairs)})"


def report(data: dict[str, Any], done: dict[str, int], planned: dict[str, int]) -> str:
    """The ceiling, the ties within the seed spread and the rank correlations against the mean 8T loss;
    ``done`` and ``planned`` count the runs per phase."""
    rows = by_arch(data)

    def vs_mean(key: str, sign: float = 1.0) -> Any:
        return lambda r: (sign * r[key], r["mean"]) if r.get(key) is not None and r["mean"] is not None else None

    predictors = [
        (
            "ceiling: 8T seed 0 vs 8T seed 1",
            lambda r: (r["long"][0], r["long"][1]) if {0, 1} <= set(r["long"]) else None,
        ),
        ("trial-budget final loss (T, seed 0)", vs_mean("t")),
        ("non-embedding params (negated)", vs_mean("params", -1.0)),
        ("loss at T on the 8T seed-0 curve", vs_mean("t_curve")),
        ("16T seed-0 loss (far set)", vs_mean("far")),
    ]
    lines = ["| vs mean 8T loss: Spearman / Kendall (n) | develop | report | all |", "|---|---|---|---|"]
    for name, pair in predictors:
        cells = [
            cell([p for r in rows if (h is None or r["half"] == h) and (p := pair(r))])
            for h in ("develop", "report", None)
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    variances = [statistics.variance(r["long"].values()) for r in rows if len(r["long"]) >= 2]
    means = [r["mean"] for r in rows if r["mean"] is not None]
    text = "\n".join(lines) + "\n\n"
    text += "Runs: " + ", ".join(f"{p} {done[p]}/{planned[p]}" for p in done)
    sources = sorted({r["nas_source"] for r in data["runs"].values()})
    reuse = sum(r.get("reused_from") == "lr_sweep" for r in data["runs"].values())
    text += f"; {reuse} reused from lr_sweep; nas code {', '.join(sources) or '-'}.\n"
    machines = collections.Counter(r.get("machine", "?") for r in data["runs"].values())
    text += "Machines (runs): " + "; ".join(f"{m} ({n})" for m, n in machines.most_common())
    text += " (the same run differs across CPUs by about a seed's spread: _results.FIRST_MACHINE).\n"
    if variances:
        pooled = math.sqrt(statistics.fmean(variances))
        pairs = list(itertools.combinations(means, 2))
        ties = sum(abs(a - b) < pooled for a, b in pairs)
        text += (
            f"Seed spread: pooled std of the 8T loss over {len(variances)} architectures with >= 2 seeds "
            f"{pooled:.4f}; {ties} of {len(pairs)} pairs of mean 8T losses differ by less than it (a tie)."
        )
    return text + redone(data)


def redone(data: dict[str, Any]) -> str:
    """The runs redone at the current recipe's lr: each one's loss under the first recipe (its earliest
    superseded run: one lr for every width) and now, with the changes per budget; "" when none was redone."""
    rows = []
    for key, olds in data.get("superseded", {}).items():
        new = data["runs"].get(key)
        old = next((o for o in olds if o.get("val_loss") is not None and o["lr"] != new["lr"]), None)  # the first
        if new is None or new.get("val_loss") is None or old is None or not at_recipe_lr(new, new["d_model"]):
            continue
        rows.append((new, old))
    if not rows:
        return ""
    lines = [
        "\n\nRuns redone at the current recipe's lr, against the first recipe's run (kept under superseded):",
        "",
        "| run | architecture | old lr: loss | new lr: loss | change |",
        "|---|---|---|---|---|",
    ]
    for new, old in sorted(rows, key=lambda p: (p[0]["factor"], p[0]["seed"], p[0]["d_model"], p[0]["n_layers"])):
        lines.append(
            f"| {new['factor']}T seed {new['seed']} | {new['summary']} | {old['lr']:.3g}: {old['val_loss']:.4f} | "
            f"{new['lr']:.3g}: {new['val_loss']:.4f} | {new['val_loss'] - old['val_loss']:+.4f} |"
        )
    lines.append("")
    for factor in sorted({new["factor"] for new, _ in rows}):
        got = [new["val_loss"] - old["val_loss"] for new, old in rows if new["factor"] == factor]
        lines.append(
            f"At {factor}T: {len(got)} runs redone, {sum(c < 0 for c in got)} lower; median change "
            f"{statistics.median(got):+.4f} (min {min(got):+.4f}, max {max(got):+.4f})."
        )
    return "\n".join(lines)
