"""How the prediction at a compute budget errs with the length of its extrapolation (issue 32), on the iso-FLOP
ground truth (bench/gt_iso.py).

The replay (bench/gt_iso_search.py --trace) showed the rung search picking small models whose D lies far past
the top rung (20 x T) and predicting them too low. Here every architecture of a half is taken to have reached
the top rung; nas's size trend is fitted on all of them (as bench/gt_iso_fidelity.py does at its top rung), and
each architecture whose D lies past the top rung is predicted at D with its own deviation carried whole
(weight 1, the top rung's chosen weight). Per budget: the Spearman between D / top rung and the signed error
(prediction - truth) / truth, and the median signed error by how far past the top rung D lies. A negative
error is an optimistic prediction. Nothing is chosen here; both halves are shown.

    python bench/gt_iso_extrapolation.py            # print
    python bench/gt_iso_extrapolation.py --penalty 0.01   # with target.reach_penalty
    python bench/gt_iso_extrapolation.py --record   # append to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import record  # noqa: E402
from gt_iso import BUDGETS, OUT, RUNGS, TRIAL_TOKENS, load_split  # noqa: E402
from gt_iso_fidelity import archs_of, rung_points, spearman  # noqa: E402

from nas.scaling import fit_size_trend, penalise_reach, predict_with_trend  # noqa: E402

TOP = len(RUNGS) - 1
BINS = ((0.0, 2.0, "< 2x"), (2.0, 4.0, "2-4x"), (4.0, math.inf, ">= 4x"))


def signed_errors(archs: list[dict], budget: int, penalty: float = 0.0) -> list[tuple[float, float]]:
    """(D / top rung, signed relative error) of each architecture whose D lies past the top rung, the
    prediction raised by ``penalty`` (target.reach_penalty)."""
    archs = [a for a in archs if f"C{budget}" in a["targets"]]
    curves = [(float(a["entry"]["non_embedding_params"]), rung_points(a, budget, TOP)) for a in archs]
    trend = fit_size_trend([(size, points) for size, (points, _) in curves])
    rows = []
    for a, (size, (points, at_target)) in zip(archs, curves, strict=True):
        d, truth = a["targets"][f"C{budget}"], a["truth"][budget]
        p = predict_with_trend(points, size, d, trend, 1.0) if trend is not None and not at_target else None
        p = penalise_reach(p, points, d, penalty)
        if p is not None and math.isfinite(truth):
            rows.append((d / (RUNGS[TOP] * TRIAL_TOKENS), (p.value - truth) / truth))
    return rows


def table(archs: list[dict], penalty: float) -> str:
    head = " | ".join(f"median error, D {label} the top rung" for _, _, label in BINS)
    lines = [f"| C (FLOPs) | n | Spearman(D / top rung, error) | {head} |", "|---|---|---|" + "---|" * len(BINS)]
    for budget, c in enumerate(BUDGETS):
        rows = signed_errors(archs, budget, penalty)
        if len(rows) < 5:
            lines.append(f"| {c:.3g} | {len(rows)} | too few past the top rung |" + " |" * len(BINS))
            continue
        rho = spearman([r[0] for r in rows], [r[1] for r in rows])
        cells = []
        for lo, hi, _ in BINS:
            inside = [r[1] for r in rows if lo <= r[0] < hi]
            cells.append(f"{100 * statistics.median(inside):+.1f} % (n={len(inside)})" if inside else "-")
        lines.append(f"| {c:.3g} | {len(rows)} | {rho:+.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--penalty", type=float, default=0.0, help="target.reach_penalty (default 0: none)")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md (default: only print)")
    args = parser.parse_args()
    data, entries = json.loads(OUT.read_text()), load_split()
    body = "\n\n".join(
        [
            "Signed error of the top-rung prediction at D (prediction - truth, over truth; negative: optimistic), "
            "for the architectures whose D lies past the top rung (20 x T); the trend fitted on every architecture "
            "of the half at its top rung, the own deviation carried whole. Each architecture's points are its "
            "seed 0's; the truth is the mean over its seeds (seed spread at these budgets: 0.2-0.9 %, section "
            f"gt_iso_search). Reach penalty (target.reach_penalty): {args.penalty:g}.",
            "Develop half:\n\n" + table(archs_of(data, entries, "develop"), args.penalty),
            "Report half:\n\n" + table(archs_of(data, entries, "report"), args.penalty),
        ]
    )
    record("gt_iso_extrapolation: the prediction's error against how far it reaches", body, not args.record)


if __name__ == "__main__":
    main()
