"""Proxy fidelity: do cheap scores rank architectures like the quality they stand for?

Shared by `nas report`'s proxy check, the trial runner (which records the zero-cost scores of every
architecture at initialisation) and the benchmarks (bench/proxy_fidelity.py). Scores are oriented so
that higher means "predicted better"; quality is oriented likewise, so a faithful proxy has a rank
correlation near +1.

Zero-cost proxies, scored before any training:
- ``non_embedding_params``: bigger is predicted better (the scaling-law prior).
- ``proxy.snip``: SNIP saliency, sum over weights of |w * dL/dw| on one training batch at
  initialisation (Lee et al. 2019; used as a zero-cost NAS proxy by Abdelfattah et al. 2021).
- ``proxy.grad_norm``: the L2 norm of the gradient on the same batch (Abdelfattah et al. 2021).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["spearman", "kendall", "LOW_RHO", "ZERO_COST", "zero_cost_scores", "Fidelity", "fidelity"]

LOW_RHO = 0.5  # below this a proxy's ranking is a weak guide
ZERO_COST = ("non_embedding_params", "proxy.snip", "proxy.grad_norm")


def _clean(a: Sequence[float], b: Sequence[float]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho of two score lists (non-finite pairs dropped); nan with fewer than 3 pairs or no spread."""
    from scipy.stats import spearmanr

    x, y = _clean(a, b)
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b, with the same conventions as :func:`spearman`."""
    from scipy.stats import kendalltau

    x, y = _clean(a, b)
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(kendalltau(x, y).statistic)


@dataclass(frozen=True)
class Fidelity:
    name: str
    rho: float  # Spearman
    tau: float  # Kendall
    n: int
    low: float = math.nan  # Spearman's 90 % bootstrap interval (resampled trials)
    high: float = math.nan

    @property
    def weak(self) -> bool:
        return math.isfinite(self.rho) and self.rho < LOW_RHO


def fidelity(scores: Mapping[str, Sequence[float]], quality: Sequence[float]) -> list[Fidelity]:
    """Spearman and Kendall of each named score list against ``quality`` (all oriented higher = better)."""
    out = []
    for name, values in scores.items():
        x, y = _clean(values, quality)
        low, high = spearman_interval(x, y)
        out.append(Fidelity(name, spearman(values, quality), kendall(values, quality), len(x), low, high))
    return out


def spearman_interval(x: Sequence[float], y: Sequence[float], draws: int = 400, seed: int = 0) -> tuple[float, float]:
    """Spearman's rho's 90 % percentile-bootstrap interval over resampled pairs (nan, nan with fewer than 5):
    with a handful of trials a rho of 0.8 can mean anything from 0 to 1, and the report says so."""
    import numpy as np
    from scipy.stats import rankdata

    if len(x) < 5:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rhos = []
    for _ in range(draws):
        i = rng.integers(0, len(xs), len(xs))
        a, b = rankdata(xs[i]), rankdata(ys[i])
        if a.std() > 0 and b.std() > 0:
            rhos.append(float(np.corrcoef(a, b)[0, 1]))
    if len(rhos) < draws // 2:
        return math.nan, math.nan
    return float(np.quantile(rhos, 0.05)), float(np.quantile(rhos, 0.95))


def zero_cost_scores(model: Any, x: Any, y: Any) -> dict[str, float]:
    """SNIP and gradient norm of ``model`` on one batch (inputs ``x``, targets ``y``), from one forward
    and backward pass. The weights are left as they were and the gradients cleared."""
    import torch

    from nas.train.pretrain import compute_loss

    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    compute_loss(model, x, y).backward()
    with torch.no_grad():
        snip = sum(float((p.grad * p).abs().sum()) for p in params if p.grad is not None)
        grad_norm = math.sqrt(sum(float(p.grad.float().pow(2).sum()) for p in params if p.grad is not None))
    model.zero_grad(set_to_none=True)
    return {"proxy.snip": snip, "proxy.grad_norm": grad_norm}
