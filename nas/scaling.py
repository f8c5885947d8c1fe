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

Pure numpy: no torch, no Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BetaFit", "Prediction", "fit_beta", "predict_loss", "target_tokens", "PRIOR_BETA"]

PRIOR_BETA = (0.28, 0.15, 0.6)  # (centre, low, high) when the points cannot tell
BETAS = np.geomspace(0.05, 2.0, 81)

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
