"""How well a trial's rungs foretell its loss at a full-training compute budget (issue 32), on the iso-FLOP
ground truth (bench/gt_iso.py), and which weight of its own deviation each rung earns.

For each budget C and each rung k (the trial budget T = 49,152 tokens x 1, 2.5, 5, 10, 20), every
architecture of a half is taken to have reached rung k: its points are the ground truth's seed-0 annealed
losses at the rungs up to k, cut at its D = C / flops_per_token as nas cuts them (a trial whose next rung
passes D is trained to D: its loss there is measured). nas's size trend (nas.scaling.fit_size_trend) is
fitted on those points (at rung 0 on the points up to rung 1: a trend needs two budgets per curve), and
each architecture's prediction at D is nas's rule (nas.scaling.predict_with_trend): the trend plus w x its
deviation from the trend at its highest rung. Figures, against the truth (the mean over seeds of the loss
at D):
- error: the median |prediction - truth| / truth;
- shape: Spearman between the prediction's and the truth's deviations from a size-only fit (quadratic in
  log non-embedding params, fitted on the half at that budget): does the prediction rank shapes of equal
  size as the truth does?
The weight per rung (0, 0.25, ..., 1) is chosen on the develop half (best shape Spearman, pooled over the
budgets; ties: lower error) and then measured on the report half, never chosen there.

    python bench/gt_iso_fidelity.py                 # both halves, the chosen weights
    python bench/gt_iso_fidelity.py --record        # append to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _gutenberg import BATCH_TOKENS  # noqa: E402
from _results import record  # noqa: E402
from gt_iso import BUDGETS, OUT, RUNGS, TRIAL_TOKENS, load_split, truth  # noqa: E402

from nas.scaling import fit_size_trend, predict_with_trend, shape_features  # noqa: E402

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) >= 3 else math.nan


def size_deviation(sizes: list[float], values: list[float]) -> list[float]:
    """Each value's deviation from a quadratic fit in log size."""
    x = np.log(np.asarray(sizes))
    coef = np.polyfit(x, np.asarray(values), 2)
    return list(np.asarray(values) - np.polyval(coef, x))


def archs_of(data: dict[str, Any], entries: list[dict[str, Any]], half: str) -> list[dict[str, Any]]:
    """The half's architectures with seed 0 complete: points, and truth per budget (mean over seeds)."""
    runs = [r for r in data["runs"].values() if r["status"] == "complete"]
    out = []
    for e in entries:
        mine = [r for r in runs if r["arch_hash"] == e["hash"]]
        seed0 = next((r for r in mine if r["seed"] == 0), None)
        if e["half"] != half or seed0 is None:
            continue
        truths = {}
        for i in range(len(BUDGETS)):
            values = [v for r in mine if (v := truth(r, f"C{i}")) is not None]
            truths[i] = statistics.fmean(values) if values else math.nan
        points = sorted((int(t), v) for t, v in seed0["annealed"] if v is not None)
        out.append({"entry": e, "points": points, "truth": truths, "targets": seed0["targets"]})
    return out


def rung_points(arch: dict[str, Any], budget: int, rung: int) -> tuple[list[tuple[int, float]], bool]:
    """The architecture's points up to rung index ``rung``, cut at its D (then the last point is D's)."""
    d = arch["targets"][f"C{budget}"]
    wanted = [round(TRIAL_TOKENS * m / BATCH_TOKENS) * BATCH_TOKENS for m in RUNGS[: rung + 1]]
    below = [t for t in wanted if t < d - BATCH_TOKENS]
    at_target = len(below) < len(wanted)
    targets = [*below, d] if at_target else below

    def near(t: int) -> tuple[int, float]:
        tokens, loss = min(arch["points"], key=lambda p: abs(p[0] - t))
        if abs(tokens - t) > max(BATCH_TOKENS, 0.03 * t):
            raise KeyError(f"{arch['entry']['summary']}: no point near {t:,} tokens")
        return tokens, loss

    return [near(t) for t in targets], at_target


def evaluate(
    archs: list[dict[str, Any]], budget: int, rung: int, weight: float, shape: bool = False
) -> dict[str, float]:
    """The prediction at C from every architecture's points up to ``rung`` (``shape``: the trend with
    nas.scaling's shape terms) against the truth. Architectures without a point at this budget's D (the
    extension's smallest stop at the middle budget) are left out."""
    archs = [a for a in archs if f"C{budget}" in a["targets"]]
    curves, cut, fitted = [], [], []
    for a in archs:
        points, at_target = rung_points(a, budget, rung)
        curves.append((float(a["entry"]["non_embedding_params"]), points))
        cut.append(at_target)
        # the trend needs two budgets per curve: at rung 0 it is fitted on points up to rung 1 (in a study, the
        # trials promoted past the first rung give it), the trial's own prediction still from rung 0 alone
        fitted.append((curves[-1][0], rung_points(a, budget, max(rung, 1))[0]))
    shapes = [shape_features(a["entry"]["arch"].to_dict()) if shape else () for a in archs]
    trend = fit_size_trend(fitted, shapes if shape else None)
    preds, truths, sizes = [], [], []
    for a, (size, points), at_target, features in zip(archs, curves, cut, shapes, strict=True):
        d = a["targets"][f"C{budget}"]
        w = 1.0 if at_target else weight
        p = predict_with_trend(points, size, d, trend, w, features) if trend is not None else None
        if p is None or not math.isfinite(a["truth"][budget]):
            continue
        preds.append(p.value)
        truths.append(a["truth"][budget])
        sizes.append(size)
    errors = [abs(p - t) / t for p, t in zip(preds, truths, strict=True)]
    shape = spearman(size_deviation(sizes, preds), size_deviation(sizes, truths)) if len(sizes) >= 5 else math.nan
    return {
        "error": statistics.median(errors) if errors else math.nan,
        "shape": shape,
        "n": len(preds),
        "at_target": sum(cut),
    }


def choose(archs: list[dict[str, Any]]) -> list[float]:
    """Per rung, the weight with the best shape Spearman pooled over budgets on ``archs`` (ties: lower error)."""
    chosen = []
    for rung in range(len(RUNGS)):
        scored = []
        for w in WEIGHTS:
            rows = [evaluate(archs, b, rung, w) for b in range(len(BUDGETS))]
            shapes = [r["shape"] for r in rows if math.isfinite(r["shape"])]
            shape = statistics.fmean(shapes) if shapes else 0.0
            error = statistics.fmean(r["error"] for r in rows if math.isfinite(r["error"]))
            scored.append((-round(shape, 3), error, w))
        chosen.append(min(scored)[2])
    return chosen


def table(archs: list[dict[str, Any]], weights: list[float], shape: bool = False) -> str:
    lines = [
        "| rung (x T) | weight | " + " | ".join(f"C = {c:.3g}: error / shape rho / at D" for c in BUDGETS) + " |",
        "|---|---|" + "---|" * len(BUDGETS),
    ]
    for rung, w in enumerate(weights):
        cells = []
        for b in range(len(BUDGETS)):
            r = evaluate(archs, b, rung, w, shape)
            cells.append(f"{100 * r['error']:.2f} % / {r['shape']:.2f} / {r['at_target']} of {r['n']}")
        lines.append(f"| {RUNGS[rung]:g} | {w:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md (default: only print)")
    args = parser.parse_args()
    data, entries = json.loads(OUT.read_text()), load_split()
    develop, report = archs_of(data, entries, "develop"), archs_of(data, entries, "report")
    if min(len(develop), len(report)) < 10:
        raise SystemExit(f"too few architectures with their runs yet (develop {len(develop)}, report {len(report)})")
    weights = choose(develop)
    zero = [0.0] * len(RUNGS)
    body = "\n\n".join(
        [
            f"Architectures with their runs: develop {len(develop)}, report {len(report)}. Weights chosen on "
            f"the develop half, per rung {list(RUNGS)} x T: {weights}.",
            "Develop half, chosen weights (error: median |prediction - truth| / truth; shape rho: Spearman of the "
            "prediction's and the truth's deviations from a size-only fit; at D: architectures whose rungs reached "
            "their D, measured not predicted):\n\n" + table(develop, weights),
            "**Report half, chosen weights:**\n\n" + table(report, weights),
            "Report half, weight 0 (the size trend alone):\n\n" + table(report, zero),
            "Report half, chosen weights, the trend with shape terms (nas.scaling.shape_features: log aspect, FFN "
            "ratio, KV share, local/global; fitted on the same points):\n\n" + table(report, weights, shape=True),
        ]
    )
    print(json.dumps({"weights": weights}))
    record("gt_iso_fidelity: the prediction at a compute budget, by rung", body, not args.record)


if __name__ == "__main__":
    main()
