"""Proxy fidelity: do cheap scores rank architectures like the quality they stand for?

Shared by `nas report`'s proxy check and the benchmarks. Scores are oriented so that higher means
"predicted better"; quality is oriented likewise, so a faithful proxy has a rank correlation near +1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["spearman", "kendall", "LOW_RHO"]

LOW_RHO = 0.5  # below this a proxy's ranking is a weak guide


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
