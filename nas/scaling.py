"""Extrapolate a held-out loss to the full-training budget from losses measured at a few smaller ones.

A trial whose WSD schedule has cool-downs (nas.train.schedule) knows the annealed held-out loss of
its architecture at several budgets D: the points ``(D_j, L_j)``. Each architecture i is modelled as

    L_i(D) = E_i + B_i · D^(-beta)

with its own irreducible loss E_i and data coefficient B_i, and ONE data exponent beta shared by all
the architectures of a study (Chinchilla's form with the model size folded into E_i and B_i). Given
beta the fit is least squares with E_i, B_i >= 0; beta is profiled over a grid, on every trial's
points at once (:func:`fit_beta`), so each new trial sharpens every prediction. The uncertainty of a prediction adds
the spread over beta's 95 % profile interval (an F test, the noise being estimated) to the
least-squares variance of (E_i, B_i).
With no spare degree of freedom (one curve of three points, or only two points per curve) beta is
not identified: the prior range [0.15, 0.6] around Chinchilla's beta = 0.28 (Hoffmann et al., 2022)
stands in.

Across a study's trials (:func:`fit_size_trend`), the size trend

    L(N, D) = E + A · N^(-alpha) + B · D^(-beta)

(Hoffmann et al.'s form over non-embedding parameters N and tokens D) is fitted on every trial's points
at once, and a trial's prediction is the trend at its N and the target budget plus ``own_weight`` times
its own deviation from the trend at its last point (:func:`predict_with_trend`). On the Gutenberg ground
truth the deviation at the trial budget did not carry to 8x (bench/RESULTS.md, prediction_fidelity:
weights 0-1 compared on the develop half, 0 best), so ``target.own_weight`` defaults to 0. The
uncertainty is then the spread of the trials' deviations from the trend: what the trend cannot see.

Pure numpy: no torch, no Optuna.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BetaFit",
    "Prediction",
    "SizeTrend",
    "StudyFit",
    "fit_beta",
    "fit_size_trend",
    "predict_loss",
    "predict_with_trend",
    "penalise_reach",
    "target_tokens",
    "PRIOR_BETA",
    "MIN_TREND_CURVES",
    "SHAPE_FEATURES",
    "shape_features",
]

PRIOR_BETA = (0.28, 0.15, 0.6)  # (centre, low, high) when the points cannot tell
BETAS = np.geomspace(0.05, 2.0, 81)

ALPHAS = np.geomspace(0.02, 1.5, 41)
MIN_TREND_CURVES = 5  # trials, of at least 3 distinct sizes, before the size trend is fitted
# Whether the size trend is also fitted on trials with a single point (stopped at their first rung): a trend fitted
# on the promoted trials alone knows the sizes that were promoted, and extrapolates to the others
TREND_SINGLE_POINTS = False

Points = Sequence[Sequence[float]]  # [[tokens, loss], ...]


@dataclass(frozen=True)
class BetaFit:
    beta: float
    low: float  # the 95 % profile interval of beta
    high: float
    sigma2: float  # residual variance per point (0 when there are no spare degrees of freedom)
    dof: int
    n_curves: int

    @property
    def identified(self) -> bool:
        return self.dof > 0


@dataclass(frozen=True)
class Prediction:
    value: float
    std: float
    beta: float
    n_points: int
    trend_curves: int = 0  # trials the size trend was fitted on; 0: the trial's own curve alone


def _design(tokens: np.ndarray, beta: float, ref: float) -> np.ndarray:
    """[1, (D / ref)^-beta]: scaled by a reference budget so that the columns stay comparable."""
    return np.stack([np.ones_like(tokens), (tokens / ref) ** (-beta)], axis=1)


def _coefficients(x: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """(E, B) by least squares with E >= 0 and B >= 0: a loss is never negative, and it does not rise
    with more data (a rising curve gets B = 0, a flat prediction)."""
    from scipy.optimize import nnls

    coef, _ = nnls(x, losses)
    return coef


def _sse(points: np.ndarray, beta: float) -> float:
    x = _design(points[:, 0], beta, points[-1, 0])
    residual = points[:, 1] - x @ _coefficients(x, points[:, 1])
    return float(residual @ residual)


def _clean(points: Points) -> np.ndarray:
    """Finite points with distinct budgets, as an (n, 2) array sorted by tokens."""
    rows = {float(d): float(v) for d, v in points if d > 0 and math.isfinite(d) and math.isfinite(v)}
    return np.array(sorted(rows.items()), dtype=np.float64).reshape(-1, 2)


def fit_beta(curves: Sequence[Points]) -> BetaFit:
    """The shared data exponent of every curve with at least two points (see the module doc)."""
    usable = [c for c in (_clean(points) for points in curves) if len(c) >= 2]
    dof = sum(len(c) - 2 for c in usable) - 1  # two coefficients per curve, and the shared beta
    if dof <= 0:
        centre, low, high = PRIOR_BETA
        return BetaFit(centre, low, high, 0.0, max(dof, 0), len(usable))
    from scipy.optimize import minimize_scalar
    from scipy.stats import f as f_distribution

    def total(beta: float) -> float:
        return sum(_sse(c, beta) for c in usable)

    totals = np.array([total(b) for b in BETAS])
    i = int(np.argmin(totals))
    lo, hi = BETAS[max(0, i - 1)], BETAS[min(len(BETAS) - 1, i + 1)]
    refined = minimize_scalar(total, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
    beta, best = (float(refined.x), float(refined.fun)) if refined.fun <= totals[i] else (BETAS[i], totals[i])
    sigma2 = max(best / dof, 1e-12)
    threshold = float(f_distribution.ppf(0.95, 1, dof)) * sigma2  # beta's 95 % profile interval, sigma estimated
    inside = [b for b, s in zip(BETAS, totals, strict=True) if s - best <= threshold] + [beta]
    return BetaFit(float(beta), float(min(inside)), float(max(inside)), sigma2, dof, len(usable))


def _predict_at(points: np.ndarray, tokens: float, beta: float, sigma2: float) -> tuple[float, float]:
    ref = points[-1, 0]
    x = _design(points[:, 0], beta, ref)
    coef = _coefficients(x, points[:, 1])
    at = np.array([1.0, (tokens / ref) ** (-beta)])
    variance = float(sigma2 * at @ np.linalg.pinv(x.T @ x) @ at) if sigma2 > 0 else 0.0
    return float(at @ coef), variance


def predict_loss(points: Points, tokens: float, fit: BetaFit) -> Prediction | None:
    """The held-out loss at ``tokens`` from one architecture's ``points`` under ``fit``'s beta;
    None with fewer than two points."""
    clean = _clean(points)
    if len(clean) < 2 or not tokens > 0:
        return None
    value, variance = _predict_at(clean, tokens, fit.beta, fit.sigma2)
    ends = [_predict_at(clean, tokens, b, 0.0)[0] for b in (fit.low, fit.high)]
    beta_spread = (max(ends) - min(ends)) / (2 * 1.96)  # a 95 % interval as a standard deviation
    return Prediction(value, math.sqrt(variance + beta_spread**2), fit.beta, len(clean))


def target_tokens(
    params: float, flops_per_token: float, tokens: int | None, flops: float | None, tokens_per_param: float
) -> float:
    """Tokens of the full-training budget: given, from a FLOP budget, or ``tokens_per_param`` x params."""
    if tokens is not None:
        return float(tokens)
    if flops is not None:
        return flops / flops_per_token
    return tokens_per_param * params


@dataclass(frozen=True)
class SizeTrend:
    """``L(N, D) = E + A·(N / n_ref)^-alpha + B·(D / d_ref)^-beta`` over a study's trials (module doc)."""

    e: float
    a: float
    b: float
    alpha: float
    beta: float
    n_ref: float
    d_ref: float
    spread: float  # RMS of the trials' deviations from the trend at their last point
    sigma2: float  # residual variance per point
    n_curves: int
    shape_coef: tuple[float, ...] = ()  # per shape feature (shape_features), when fitted with shapes

    def at(self, size: float, tokens: float, shape: Sequence[float] = ()) -> float:
        size_part = self.e + self.a * (size / self.n_ref) ** -self.alpha + self.b * (tokens / self.d_ref) ** -self.beta
        return size_part + sum(c * x for c, x in zip(self.shape_coef, shape, strict=False))


SHAPE_FEATURES = ("log aspect (d_model / n_layers)", "FFN ratio", "KV heads / heads", "local/global")


def shape_features(arch: dict[str, Any]) -> tuple[float, ...]:
    """An architecture's shape beyond its size, for a shape-aware trend (SHAPE_FEATURES; arXiv 2510.18245
    fits such terms): depth-to-width aspect, FFN ratio, the share of KV heads, and whether attention is
    local in some layers."""
    d, layers = float(arch["d_model"]), float(arch["n_layers"])
    heads = float(arch.get("n_heads") or 1)
    kv = float(arch.get("n_kv_heads") or heads)
    ffn = float(arch.get("ffn_dim") or 4 * d)
    return (math.log(d / layers), ffn / d, kv / heads, float(arch.get("attention", "full") != "full"))


def _trend_columns(sizes: np.ndarray, tokens: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.stack([np.ones_like(sizes), sizes**-alpha, tokens**-beta], axis=1)


def _unconstrained_sse(x_n: np.ndarray, x_d: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """The residual sum of squares of the size trend without its bounds at every (alpha, beta) of the grid at
    once (normal equations, batched): a lower bound on the bounded fit's, which lets the grid search skip
    the pairs that cannot win. Pairs whose normal equations are singular get 0 (never skipped)."""
    u = x_n[None, :] ** -ALPHAS[:, None]  # (alphas, n)
    v = x_d[None, :] ** -BETAS[:, None]  # (betas, n)
    n, a, b = len(losses), len(ALPHAS), len(BETAS)
    gram = np.empty((a, b, 3, 3))
    gram[..., 0, 0] = n
    gram[..., 0, 1] = gram[..., 1, 0] = u.sum(1)[:, None]
    gram[..., 0, 2] = gram[..., 2, 0] = v.sum(1)[None, :]
    gram[..., 1, 1] = (u * u).sum(1)[:, None]
    gram[..., 2, 2] = (v * v).sum(1)[None, :]
    gram[..., 1, 2] = gram[..., 2, 1] = u @ v.T
    rhs = np.empty((a, b, 3))
    rhs[..., 0] = losses.sum()
    rhs[..., 1] = (u @ losses)[:, None]
    rhs[..., 2] = (v @ losses)[None, :]
    try:
        coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.zeros((a, b))
    sse = losses @ losses - np.einsum("abk,abk->ab", coef, rhs)
    return np.where(np.isfinite(sse), np.maximum(sse, 0.0) * (1 - 1e-9), 0.0)


def fit_size_trend(
    curves: Sequence[tuple[float, Points]], shapes: Sequence[Sequence[float]] | None = None
) -> SizeTrend | None:
    """The size trend over ``(non-embedding params, points)`` per trial; None with fewer than
    :data:`MIN_TREND_CURVES` trials of two or more points, fewer than 3 distinct sizes, or no spare
    degree of freedom (5 coefficients, plus one per shape feature). (alpha, beta) on a grid, (E, A, B) >= 0
    by least squares. With ``shapes`` (each curve's :func:`shape_features`), the trend also has a linear
    term per feature, of either sign (each as a pair of non-negative columns, +x and -x)."""
    from scipy.optimize import nnls

    kept = [
        (float(n), c, tuple(shapes[i]) if shapes is not None else ())
        for i, (n, points) in enumerate(curves)
        if n > 0 and len(c := _clean(points)) >= 1
    ]
    curves_of_two = [(n, c, f) for n, c, f in kept if len(c) >= 2]
    if len(curves_of_two) < MIN_TREND_CURVES or len({n for n, _, _ in curves_of_two}) < 3:
        return None
    kept = kept if TREND_SINGLE_POINTS else curves_of_two
    sizes = np.concatenate([np.full(len(c), n) for n, c, _ in kept])
    points = np.concatenate([c for _, c, _ in kept])
    features = np.concatenate([np.tile(np.asarray(f, dtype=np.float64), (len(c), 1)) for _, c, f in kept])
    n_shape = features.shape[1] if features.ndim == 2 else 0
    dof = len(points) - 5 - n_shape
    if dof <= 0:
        return None
    n_ref, d_ref = float(np.exp(np.log(sizes).mean())), float(np.exp(np.log(points[:, 0]).mean()))
    x_n, x_d, losses = sizes / n_ref, points[:, 0] / d_ref, points[:, 1]
    signed = np.concatenate([features, -features], axis=1) if n_shape else np.zeros((len(points), 0))
    best: tuple[float, float, float, np.ndarray] | None = None
    bound = _unconstrained_sse(x_n, x_d, losses) if not n_shape else None
    for i, alpha in enumerate(ALPHAS):
        for j, beta in enumerate(BETAS):
            if bound is not None and best is not None and bound[i, j] >= best[0] ** 2:
                continue  # least squares without the bounds already does no better than the best so far
            x = np.concatenate([_trend_columns(x_n, x_d, alpha, beta), signed], axis=1)
            coef, norm = nnls(x, losses)
            if best is None or norm < best[0]:
                best = (norm, float(alpha), float(beta), coef)
    assert best is not None
    norm, alpha, beta, coef = best
    e, a, b = (float(v) for v in coef[:3])
    shape_coef = tuple(float(p - m) for p, m in zip(coef[3 : 3 + n_shape], coef[3 + n_shape :], strict=True))
    trend = SizeTrend(e, a, b, alpha, beta, n_ref, d_ref, 0.0, norm**2 / dof, len(kept), shape_coef)
    last = [c[-1, 1] - trend.at(n, c[-1, 0], f) for n, c, f in kept]
    spread = math.sqrt(statistics.fmean(d * d for d in last))
    return SizeTrend(e, a, b, alpha, beta, n_ref, d_ref, spread, trend.sigma2, len(kept), shape_coef)


def predict_with_trend(
    points: Points, size: float, tokens: float, trend: SizeTrend, own_weight: float, shape: Sequence[float] = ()
) -> Prediction | None:
    """The trend at ``size`` and ``tokens`` plus ``own_weight`` x the trial's deviation from the trend at
    its last point; the std adds the part of the trials' spread around the trend that is not carried
    (``(1 - own_weight)·spread``) to the per-point residual variance. None without a finite point."""
    clean = _clean(points)
    if not len(clean) or not tokens > 0 or not size > 0:
        return None
    deviation = clean[-1, 1] - trend.at(size, clean[-1, 0], shape)
    value = trend.at(size, tokens, shape) + own_weight * deviation
    std = math.sqrt(trend.sigma2 + ((1 - own_weight) * trend.spread) ** 2)
    return Prediction(float(value), std, trend.beta, len(clean), trend.n_curves)


def penalise_reach(prediction: Prediction | None, points: Points, tokens: float, rate: float) -> Prediction | None:
    """``prediction`` at ``tokens`` raised by ``rate``·ln(tokens / the last point's tokens) of itself, with that
    much added to its std in quadrature (StudyFit's reach penalty); unchanged at rate 0 or within the points."""
    clean = _clean(points)
    if prediction is None or rate <= 0 or not len(clean) or not tokens > clean[-1, 0]:
        return prediction
    shift = prediction.value * rate * math.log(tokens / clean[-1, 0])
    std = math.sqrt(prediction.std**2 + shift**2)
    return Prediction(prediction.value + shift, std, prediction.beta, prediction.n_points, prediction.trend_curves)


@dataclass(frozen=True)
class StudyFit:
    """What a study's trials say about the target budget: the size trend (None when it is not fitted)
    and the shared data exponent; :meth:`predict` is the one prediction rule (module doc). With
    ``reach_penalty`` r > 0 a prediction at tokens D from points ending at tokens t < D is raised by
    r·ln(D / t) of itself, and that much is added to its std: the size trend's prediction turns optimistic
    as it reaches further past a trial's points (bench/RESULTS.md, gt_iso_extrapolation)."""

    trend: SizeTrend | None
    beta: BetaFit
    own_weight: float
    reach_penalty: float = 0.0

    @classmethod
    def of(
        cls,
        curves: Sequence[tuple[float, Points]],
        size_trend: bool = True,
        own_weight: float = 0.0,
        reach_penalty: float = 0.0,
    ) -> StudyFit:
        trend = fit_size_trend(curves) if size_trend else None
        return cls(trend, fit_beta([points for _, points in curves]), own_weight, reach_penalty)

    @classmethod
    def for_target(
        cls, curves: Sequence[tuple[float, Points]], target: Any, own_weight: float | None = None
    ) -> StudyFit:
        """The fit a protocol's ``target`` (nas.protocol.Target) asks for: its prediction rule, its own weight
        (or ``own_weight``) and its reach penalty."""
        weight = target.own_weight if own_weight is None else own_weight
        return cls.of(curves, target.prediction == "size-trend", weight, getattr(target, "reach_penalty", 0.0))

    def predict(
        self, points: Points, size: float, tokens: float, own_weight: float | None = None, min_points: int = 2
    ) -> Prediction | None:
        """The prediction at ``tokens`` (module doc); ``own_weight`` in place of the fit's (a rung's weight),
        and with ``min_points`` 1 the trend predicts from a single point (a trial at its first rung)."""
        weight = self.own_weight if own_weight is None else own_weight
        if self.trend is not None and len(_clean(points)) >= min_points:
            prediction = predict_with_trend(points, size, tokens, self.trend, weight)
        else:
            prediction = predict_loss(points, tokens, self.beta)
        return penalise_reach(prediction, points, tokens, self.reach_penalty)

    def describe(self) -> str:
        """One line for a report title."""
        beta = self.beta
        if self.trend is None:
            shared = f"refitted on {beta.n_curves} trials" if beta.identified else "prior range: the points cannot tell"
            return (
                f"data exponent beta = {beta.beta:.3f} [{beta.low:.3f}, {beta.high:.3f}] ({shared}; "
                f"residual sd {math.sqrt(beta.sigma2):.3g}, {beta.dof} spare points)"
            )
        t = self.trend
        return (
            f"size trend L(N, D) = {t.e:.3g} + {t.a:.3g}·(N/{t.n_ref:.3g})^-{t.alpha:.2f} + "
            f"{t.b:.3g}·(D/{t.d_ref:.3g})^-{t.beta:.2f} over {t.n_curves} trials, spread {t.spread:.3f}; "
            f"own weight {self.own_weight:g}"
        ) + (f"; reach penalty {self.reach_penalty:g}" if self.reach_penalty else "")
