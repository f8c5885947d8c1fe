"""How well trial-budget data predicts and ranks the long-budget ground truth (issue 13, sections 3-4).

Uses the architectures of bench/ground_truth_gutenberg.json (bench/gt_train.py) with a T run and an 8T run.
Scores from the T run only: its final loss; non-embedding params (more is better); nas.scaling's predicted
8T loss from its annealed points (~0.31T, 0.625T, T) with beta fitted on its own points ("own fit"), on
the T points of every architecture of its half ("study fit", as nas.trial.add_prediction), or the develop
half's beta ("develop-half beta": tuned on develop, honest on report). Per half (bench/gt_split.json) and
all: Spearman / Kendall vs the mean 8T loss with 90 % bootstrap intervals over architectures (1000
resamples, seed 0), the seed 0 vs 1 ceiling, the predictions' median abs % error and share within 2 std;
the form on longer curves: 8T from the 8T runs' 1.25T-5T points, 16T from the 8T seed-0 run's. JSON only.

    python bench/prediction_fidelity.py                  # print the markdown
    python bench/prediction_fidelity.py --record         # append it to bench/RESULTS.md
    python bench/prediction_fidelity.py --gt /tmp/x.json # another ground truth (never recorded)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gutenberg import FAR_FACTOR, LONG_FACTOR, at_recipe_lr
from gt_archs import SPLIT

from nas.scaling import StudyFit, fit_beta, predict_loss

GT = Path(__file__).resolve().parent / "ground_truth_gutenberg.json"
LR_SWEEP = GT.with_name("lr_sweep.json")
TRIAL_DESIGN = GT.with_name("trial_design.json")
HALVES = ("develop", "report", None)  # None: all
RESAMPLES = 1000
WEIGHTS = (0.0, 0.25, 0.5, 1.0)  # target.own_weight candidates, compared on the develop half
TREND = tuple(f"predicted 8T, size trend, own weight {w:g}" for w in WEIGHTS)
NAS = TREND[0]  # what nas computes by default (target.prediction: size-trend, own_weight: 0)
PRED = ("predicted 8T, own fit", "predicted 8T, study fit", "predicted 8T, develop-half beta", *TREND)
RANKERS = ("T loss", "non-embedding params", *PRED)
CEILING = "ceiling: 8T seed 0 vs 8T seed 1"
OTHER_TARGETS = (
    "search pick within the seed spread for >= 8 of 10 seeds at <= 20 % compute (bench/gt_search.py)",
    "1 % regret with >= 3x less compute than random (bench/gt_search.py)",
    "default `nas search` under 10 minutes on 2 cores (the README's Performance table)",
)
TITLE = "prediction_fidelity: trial-budget predictions and rankings vs the Gutenberg ground truth"


def _points(run: dict[str, Any]) -> list[list[float]]:
    return sorted([t, v] for t, v in run.get("annealed") or [] if v is not None)


def load_archs(data: dict[str, Any], design: str = "b2048") -> dict[str, dict[str, Any]]:
    """Per architecture: half, params, the T run's loss and points (the ground truth's own T run, or
    ``design``'s from bench/trial_design.json), 8T losses by seed (with the lr sweep's recipe-lr runs) and
    the seed-0 run's points, the 16T loss."""
    archs: dict[str, dict[str, Any]] = {}
    for r in data["runs"].values():
        new = {"half": r["half"], "params": r["non_embedding_params"], "d_model": r["d_model"]}
        new |= {"long": {}, "long_points": {}}
        a = archs.setdefault(r["arch_hash"], new)
        if r.get("val_loss") is None or not at_recipe_lr(r, r["d_model"]):  # a stale run waits to be redone
            continue
        if r["factor"] == 1 and r["seed"] == 0:
            a["t"], a["t_points"] = r["val_loss"], _points(r)
        elif r["factor"] == LONG_FACTOR:
            a["long"][r["seed"]], a["long_points"][r["seed"]] = r["val_loss"], _points(r)
        elif r["factor"] == FAR_FACTOR and r["seed"] == 0:
            a["far"] = r["val_loss"]
    for r in json.loads(LR_SWEEP.read_text())["runs"].values() if LR_SWEEP.exists() else []:
        if r["arch_hash"] in archs and r["val_loss"] is not None and at_recipe_lr(r, r["d_model"]):
            archs[r["arch_hash"]]["long"].setdefault(r["seed"], r["val_loss"])  # an 8T run at the recipe lr
    if design != "b2048":  # the trial is another design's T-budget run (bench/trial_design.py)
        for a in archs.values():
            a.pop("t", None), a.pop("t_points", None)
        for r in json.loads(TRIAL_DESIGN.read_text())["runs"].values():
            fresh = r["arch_hash"] in archs and at_recipe_lr(r, archs[r["arch_hash"]]["d_model"])
            if r["design"] == design and r["seed"] == 0 and r["val_loss"] is not None and fresh:
                archs[r["arch_hash"]]["t"], archs[r["arch_hash"]]["t_points"] = r["val_loss"], _points(r)
    for a in archs.values():
        a["mean"] = statistics.fmean(a["long"].values()) if a["long"] else None
    return archs


def add_scores(archs: dict[str, dict[str, Any]], target: float) -> dict[str, Any]:
    """Each T-run architecture's scores (lower predicts a lower 8T loss) and predictions; the halves' fits
    (beta over the half's curves, and nas.scaling.StudyFit's size trend per own weight)."""
    curves = {
        h: [(a["params"], a["t_points"]) for a in archs.values() if a["half"] == h and "t_points" in a]
        for h in HALVES[:2]
    }
    fits = {h: fit_beta([c for _, c in cs]) for h, cs in curves.items()}
    trends = {(h, w): StudyFit.of(cs, own_weight=w) for h, cs in curves.items() for w in WEIGHTS}
    for a in archs.values():
        if "t_points" not in a:
            continue
        own = fit_beta([a["t_points"]])
        a["pred"] = {
            name: predict_loss(a["t_points"], target, fit)
            for name, fit in zip(PRED[:3], (own, fits[a["half"]], fits["develop"]), strict=True)
        }
        a["pred"] |= {
            name: trends[a["half"], w].predict(a["t_points"], a["params"], target)
            for name, w in zip(TREND, WEIGHTS, strict=True)
        }
        a["own_beta"] = own.beta
        a["score"] = {"T loss": a["t"], "non-embedding params": -a["params"]}
        a["score"] |= {k: p.value for k, p in a["pred"].items() if p is not None}
    return fits | {f"trend {h}": trends[h, 0.0] for h in HALVES[:2]}


def _table(title: str, rows: dict[str, list[str]]) -> str:
    lines = [f"| {title} | develop | report | all |", "|---|---|---|---|"]
    return "\n".join(lines + [f"| {name} | {' | '.join(cells)} |" for name, cells in rows.items()])


def rank_cell(pairs: list[tuple[float, float]]) -> str:
    """Spearman [90 % CI] / Kendall [90 % CI] (n), the interval over 1000 seeded bootstrap resamples."""
    from scipy.stats import kendalltau, spearmanr

    if len(pairs) < 3:
        return f"- ({len(pairs)})"
    x, y = (np.array(v) for v in zip(*pairs, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample with constant inputs has no correlation: NaN, skipped
        resamples = np.random.default_rng(0).integers(0, len(x), size=(RESAMPLES, len(x)))
        boot = [(spearmanr(x[i], y[i]).statistic, kendalltau(x[i], y[i]).statistic) for i in resamples]
    (rho_lo, tau_lo), (rho_hi, tau_hi) = np.nanpercentile(np.array(boot), [5, 95], axis=0)
    rho, tau = spearmanr(x, y).statistic, kendalltau(x, y).statistic
    return f"{rho:.3f} [{rho_lo:.2f}, {rho_hi:.2f}] / {tau:.3f} [{tau_lo:.2f}, {tau_hi:.2f}] ({len(x)})"


def ranking_table(used: list[dict[str, Any]]) -> tuple[str, dict[tuple[str, str | None], float]]:
    """The rank-correlation table and the Spearman values the targets need."""
    from scipy.stats import spearmanr

    pairings = {CEILING: lambda a: (a["long"][0], a["long"][1]) if {0, 1} <= set(a["long"]) else None}
    pairings |= {n: (lambda a, n=n: (a["score"][n], a["mean"]) if n in a["score"] else None) for n in RANKERS}
    rows: dict[str, list[str]] = {}
    rhos: dict[tuple[str, str | None], float] = {}
    for name, pair in pairings.items():
        for half in HALVES:
            pairs = [p for a in used if half in (None, a["half"]) and (p := pair(a)) is not None]
            rows.setdefault(name, []).append(rank_cell(pairs))
            if len(pairs) >= 3:
                rhos[name, half] = float(spearmanr(*zip(*pairs, strict=True)).statistic)
    return _table("vs mean 8T loss: Spearman [90 % CI] / Kendall [90 % CI] (n)", rows), rhos


def pick_table(used: list[dict[str, Any]], spread: float | None) -> str:
    """Each ranking's pick with every architecture trained at T: its regret (mean 8T loss over the best,
    minus 1) per half and all, and whether it lies within the seed spread of the best (*)."""
    rows: dict[str, list[str]] = {}
    for name in RANKERS:
        for half in HALVES:
            pool = [a for a in used if half in (None, a["half"]) and name in a["score"]]
            if not pool:
                rows.setdefault(name, []).append("-")
                continue
            best, pick = min(a["mean"] for a in pool), min(pool, key=lambda a: a["score"][name])
            mark = "*" if spread is not None and pick["mean"] - best <= spread else ""
            rows.setdefault(name, []).append(f"{100 * (pick['mean'] / best - 1):.2f} %{mark}")
    return _table("regret of the pick, all trained at T (* within the seed spread)", rows)


def error_table(used: list[dict[str, Any]]) -> tuple[str, dict[tuple[str, str | None], float]]:
    """Median |predicted - mean 8T| / mean 8T and the share with |error| <= 2 predicted std, per half."""
    rows: dict[str, list[str]] = {}
    mdape: dict[tuple[str, str | None], float] = {}
    for name in PRED:
        for half in HALVES:
            preds = [
                (a["pred"][name], a["mean"]) for a in used if half in (None, a["half"]) and a["pred"][name] is not None
            ]
            if not preds:
                rows.setdefault(name, []).append("- (0)")
                continue
            mdape[name, half] = 100 * statistics.median(abs(p.value - m) / m for p, m in preds)
            within = 100 * statistics.fmean(abs(p.value - m) <= 2 * p.std for p, m in preds)
            rows.setdefault(name, []).append(f"{mdape[name, half]:.2f} %; {within:.0f} % ({len(preds)})")
    return _table("predicted vs mean 8T loss: median abs % error; share within 2 std (n)", rows), mdape


def _extrapolate(cases: list[tuple[str, list[list[float]], float, float]], shared: bool) -> list[str]:
    """Median abs % error per half of predicting each case's loss at its tokens from its points
    (case: half, points, loss, tokens), with its own beta or one shared by its half's cases."""
    fits = {h: fit_beta([c[1] for c in cases if c[0] == h]) for h in HALVES[:2]}
    cells = []
    for half in HALVES:
        errs = []
        for h, pts, actual, tokens in (c for c in cases if half is None or c[0] == half):
            if (p := predict_loss(pts, tokens, fits[h] if shared else fit_beta([pts]))) is not None:
                errs.append(abs(p.value - actual) / actual)
        cells.append(f"{100 * statistics.median(errs):.2f} % ({len(errs)})" if errs else "- (0)")
    return cells


def form_table(archs: dict[str, dict[str, Any]], short: int) -> str:
    """The functional form on longer curves: 8T from the 8T runs' earlier points, 16T from the 8T run's."""
    long_t, far_t = LONG_FACTOR * short, FAR_FACTOR * short
    to8 = [
        (a["half"], pts[:-1], a["long"][s], long_t)
        for a in archs.values()
        for s, pts in a["long_points"].items()
        if len(pts) >= 4 and pts[-1][0] == long_t
    ]
    to16 = [
        (a["half"], a["long_points"][0], a["far"], far_t)
        for a in archs.values()
        if "far" in a and len(a["long_points"].get(0, [])) >= 2
    ]
    rows = {}
    for name, cases in (("8T from the 8T run's 1.25T, 2.5T, 5T points", to8), ("16T from the 8T seed-0 run", to16)):
        rows[f"{name}, own beta"] = _extrapolate(cases, shared=False)
        rows[f"{name}, beta shared by the half's runs"] = _extrapolate(cases, shared=True)
    return _table("extrapolation: median abs % error (n runs)", rows)


def _size_only_deviations(used: list[dict[str, Any]]) -> list[float]:
    """Each architecture's mean 8T loss minus the best fit E + A·(N / N_ref)^-alpha over ``used`` (alpha on
    a grid, E, A >= 0): what non-embedding params alone cannot explain. Diagnostic only: it reads the 8T
    losses, so nothing in nas's predictions uses it."""
    from scipy.optimize import nnls

    sizes = np.array([a["params"] for a in used], dtype=float)
    sizes /= np.exp(np.log(sizes).mean())
    losses = np.array([a["mean"] for a in used])
    fits = []
    for alpha in np.linspace(0.05, 1.5, 59):
        x = np.stack([np.ones_like(sizes), sizes**-alpha], axis=1)
        coef, norm = nnls(x, losses)
        fits.append((norm, x @ coef))
    return list(losses - min(fits, key=lambda f: f[0])[1])


def beyond_size_table(used: list[dict[str, Any]], fits: dict[str, Any]) -> str:
    """Is there anything in the trial beyond its size? Per half: each architecture's deviation from its
    half's size trend at T (the trial, nas.scaling's own-weight input) against its mean 8T loss's deviation
    from a size-only fit at 8T over the half (``_size_only_deviations``): Spearman and Kendall with bootstrap
    intervals ("all": both halves' deviations pooled), and the RMS of the 8T deviations (the room a
    better-than-params ranking would have, to hold against the seed spread)."""
    pairs: dict[str | None, list[tuple[float, float]]] = {None: []}
    for half in HALVES[:2]:
        pool = [a for a in used if a["half"] == half and "t_points" in a]
        trend = fits[f"trend {half}"].trend
        if len(pool) < 5 or trend is None:
            pairs[half] = []
            continue
        at_t = [a["t_points"][-1][1] - trend.at(a["params"], a["t_points"][-1][0]) for a in pool]
        pairs[half] = list(zip(at_t, _size_only_deviations(pool), strict=True))
        pairs[None] += pairs[half]
    rows = {
        "deviation at T vs at 8T: Spearman [90 % CI] / Kendall [90 % CI] (n)": [rank_cell(pairs[h]) for h in HALVES],
        "RMS deviation at 8T from size alone": [
            f"{np.sqrt(np.mean([d * d for _, d in pairs[h]])):.4f}" if pairs[h] else "-" for h in HALVES
        ],
    }
    return _table("beyond size: does the trial's deviation from the size trend foretell the 8T one?", rows)


def targets(rhos: dict, mdape: dict, n_report: int, n_half: int) -> str:
    """Issue 13's targets, judged on the report half for nas's default prediction (the size trend)."""
    partial = f" on partial data ({n_report} of {n_half} report architectures)" if n_report < n_half else ""
    nas_rho, params, ceiling = (rhos.get((k, "report")) for k in (NAS, RANKERS[1], CEILING))
    lines = [f"Issue 13 targets (report half; the ranking nas uses = {NAS}):"]
    if nas_rho is None or params is None:
        lines.append("- Spearman >= 0.9 (or ceiling - 0.05) and >= params + 0.15: not yet measurable")
    else:
        need = 0.9 if ceiling is None else min(0.9, ceiling - 0.05)
        verdict = ("met" if nas_rho >= need and nas_rho >= params + 0.15 else "missed") + partial
        note = "" if ceiling is not None else " (ceiling not yet measured)"
        lines.append(f"- Spearman {nas_rho:.3f} vs needed {need:.3f}{note} and params {params:.3f} + 0.15: {verdict}")
    m = mdape.get((NAS, "report"))
    verdict = "not yet measurable" if m is None else f"{m:.2f} %: " + ("met" if m <= 2 else "missed") + partial
    lines.append(f"- median abs error of predicted_val_loss at 8T <= 2 %: {verdict}")
    return "\n".join(lines + [f"- {t}: measured there" for t in OTHER_TARGETS])


def fits_line(fits: dict[str, Any], archs: dict[str, dict[str, Any]]) -> str:
    """The fitted betas, the size trends, and the spread of the T losses and of nas's predictions."""
    text = "Beta over the T runs' annealed points: " + "; ".join(
        f"{h} {f.beta:.3f} [{f.low:.3f}, {f.high:.3f}] ({f.n_curves} curves, dof {f.dof})"
        for h, f in fits.items()
        if not h.startswith("trend")
    )
    text += ". Size trend per half (nas.scaling.StudyFit): " + "; ".join(
        f"{h.removeprefix('trend ')}: {f.describe()}" for h, f in fits.items() if h.startswith("trend")
    )
    if own := [a["own_beta"] for a in archs.values() if "own_beta" in a]:
        text += (
            f". Own fits: median beta {statistics.median(own):.3f}, {sum(b <= 0.0501 for b in own)} of "
            f"{len(own)} at the grid's lower edge 0.05 (the curve is not convex in log tokens)"
        )
    if preds := [a["pred"][NAS] for a in archs.values() if a.get("pred", {}).get(NAS)]:
        values, losses = [p.value for p in preds], [a["t"] for a in archs.values() if "t" in a]
        text += (
            f". Predicted 8T (nas default): {min(values):.3f}-{max(values):.3f}, median std "
            f"{statistics.median(p.std for p in preds):.3f}; T losses {min(losses):.3f}-{max(losses):.3f}"
        )
    return text + "."


def weight_line(rhos: dict[tuple[str, str | None], float]) -> str:
    """Which own weight the develop half picks (its best Spearman), and how that pick fares on report."""
    dev = {w: rhos.get((name, "develop")) for w, name in zip(WEIGHTS, TREND, strict=True)}
    if any(v is None for v in dev.values()):
        return ""
    pick = max(WEIGHTS, key=lambda w: (dev[w], -w))  # type: ignore[arg-type, return-value]
    cells = ", ".join(f"{w:g}: {dev[w]:.3f}" for w in WEIGHTS)
    report = rhos.get((TREND[WEIGHTS.index(pick)], "report"))
    shown = "-" if report is None else f"{report:.3f}"
    return (
        f"Own weight (target.own_weight) by develop Spearman: {cells}; develop picks {pick:g} "
        f"(report {shown}); nas's default is 0.\n\n"
    )


def build(data: dict[str, Any], n_total: int, design: str = "b2048") -> str:
    short = data["meta"]["short_tokens"]
    archs = load_archs(data, design)
    fits = add_scores(archs, LONG_FACTOR * short)
    used = [a for a in archs.values() if "t" in a and a["long"]]
    n_t = sum("t" in a for a in archs.values())
    count = {h: sum(a["half"] == h for a in used) for h in HALVES[:2]}
    runs = {s: sum(s in a["long"] for a in archs.values()) for s in (0, 1, 2)}
    head = f"PARTIAL: {len(used)} of {n_total} architectures have 8T runs.\n\n" if len(used) < n_total else ""
    head += f"Trial design: {design} (bench/trial_design.py; b2048 = the ground truth's own T runs).\n\n"
    head += (
        f"Architectures with a T run: {n_t}; with a T run and at least one 8T run: {len(used)} (develop "
        f"{count['develop']}, report {count['report']}). Complete 8T runs by seed: "
        + ", ".join(f"seed {s} {n}" for s, n in runs.items())
        + f"; 16T runs: {sum('far' in a for a in archs.values())}. T = {short:,} tokens.\n\n"
    )
    body = head + fits_line(fits, archs) + "\n\n"
    rhos: dict = {}
    mdape: dict = {}
    if used:
        ranking, rhos = ranking_table(used)
        errors, mdape = error_table(used)
        gaps = [abs(a["long"][0] - a["long"][1]) for a in used if {0, 1} <= set(a["long"])]
        spread = statistics.median(gaps) if gaps else None
        body += ranking + "\n\n" + errors + "\n\n" + weight_line(rhos)
        body += pick_table(used, spread) + "\n\n"
        body += beyond_size_table(used, fits) + "\n\n"
        body += (
            "Beyond size: any prediction that is monotone in non-embedding params (the size trend at own weight "
            "0 is) ranks exactly as params do; only the trial's deviation from the trend could do better, and the "
            "table above says how much of the 8T deviation it foretells (0: nothing).\n\n"
        )
        body += (
            f"Seed spread: median |8T seed 0 - seed 1| = {spread:.4f} over {len(gaps)} architectures.\n\n"
            if spread
            else ""
        )
        body += (
            "Scores oriented so +1 is a perfect ranking (params negated). Study fit: beta fitted per half, "
            "each architecture's own curve. Size trend: L(N, D) = E + A·N^-alpha + B·D^-beta fitted per half "
            "over non-embedding params and the T runs' points, plus the own weight times the architecture's "
            "deviation from it at T.\n\n"
        )
    else:
        body += "No 8T run yet: rankings and prediction errors are not measurable.\n\n"
    body += form_table(archs, short) + "\n\n"
    return body + targets(rhos, mdape, count["report"], n_total // 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", type=Path, default=GT, help="ground-truth JSON (default %(default)s)")
    parser.add_argument("--record", action="store_true", help="append the section to bench/RESULTS.md")
    parser.add_argument("--design", default="b2048", help="the trial's design (bench/trial_design.py's DESIGNS)")
    args = parser.parse_args()
    if args.record and args.gt.resolve() != GT:
        raise SystemExit("--record only records bench/ground_truth_gutenberg.json")
    n_total = len(json.loads(SPLIT.read_text())["archs"])
    body = build(json.loads(args.gt.read_text()), n_total, args.design)
    from _results import record

    record(TITLE, body, no_record=not args.record)


if __name__ == "__main__":
    main()
