"""Evaluation metrics in pure Python: SQuAD v1.1 EM/F1, macro-averaged classification scores, exact match,
perplexity (of tokens, or of QA spans).

The SQuAD functions follow the official v1.1 evaluation script (``evaluate-v1.1.py``) exactly.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable

__all__ = [
    "by_grade",
    "classification_metrics",
    "exact_match",
    "normalize_answer",
    "perplexity",
    "span_perplexity",
    "squad_exact_match",
    "squad_f1",
    "squad_metrics",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def _check_pair(predictions: list, references: list, what: str) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{what}: {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError(f"{what}: no examples (empty lists)")


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, drop punctuation, drop whole-word articles, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _max_over(metric: Callable[[str, str], float], prediction: str, ground_truths: list[str]) -> float:
    if not ground_truths:
        raise ValueError("ground_truths is empty: need at least one reference answer")
    return max(metric(prediction, gt) for gt in ground_truths)


def _em(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def _f1(prediction: str, ground_truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gt_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(pred_tokens) & Counter(gt_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gt_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction: str, ground_truths: list[str]) -> float:
    """1.0 if the normalised prediction equals any normalised ground truth, else 0.0."""
    return _max_over(_em, prediction, ground_truths)


def squad_f1(prediction: str, ground_truths: list[str]) -> float:
    """Token-level F1 (bag of tokens after normalisation), maximised over the ground truths.

    As in the official v1.1 script, F1 is 0.0 whenever no token is shared, which includes the case where
    both prediction and ground truth normalise to the empty string (EM is 1.0 there, F1 is 0.0).
    """
    return _max_over(_f1, prediction, ground_truths)


def squad_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Mean EM and F1 over examples as percentages (0..100), like the official script's output."""
    _check_pair(predictions, references, "squad_metrics")
    n = len(predictions)
    em = sum(squad_exact_match(p, r) for p, r in zip(predictions, references, strict=True))
    f1 = sum(squad_f1(p, r) for p, r in zip(predictions, references, strict=True))
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


def classification_metrics(
    predictions: list[int], labels: list[int], num_classes: int | None = None
) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1, all as fractions 0..1.

    Classes are ``range(num_classes)`` when given, else the union of labels and predictions. A class never
    predicted has precision 0, one never present has recall 0, and F1 is 0 when precision + recall is 0
    (sklearn's ``zero_division=0``). Raises ValueError on empty or mismatched lists, or out-of-range ids.
    """
    _check_pair(predictions, labels, "classification_metrics")
    if num_classes is not None:
        if num_classes < 1:
            raise ValueError(f"classification_metrics: num_classes must be >= 1, got {num_classes}")
        bad = sorted({c for c in (*predictions, *labels) if not 0 <= c < num_classes})
        if bad:
            raise ValueError(f"classification_metrics: class ids {bad} outside range(num_classes={num_classes})")
        classes = list(range(num_classes))
    else:
        classes = sorted(set(predictions) | set(labels))
    true_pos = Counter(p for p, y in zip(predictions, labels, strict=True) if p == y)
    predicted, actual = Counter(predictions), Counter(labels)
    precisions, recalls, f1s = [], [], []
    for c in classes:
        p = true_pos[c] / predicted[c] if predicted[c] else 0.0
        r = true_pos[c] / actual[c] if actual[c] else 0.0
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    k = len(classes)
    return {
        "accuracy": sum(true_pos.values()) / len(labels),
        "precision": sum(precisions) / k,
        "recall": sum(recalls) / k,
        "macro_f1": sum(f1s) / k,
    }


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Fraction (0..1) of predictions equal to their reference after ``.strip()`` (no other normalisation)."""
    _check_pair(predictions, references, "exact_match")
    hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True))
    return hits / len(predictions)


def perplexity(mean_loss: float) -> float:
    """``exp(mean_loss)`` for a mean cross-entropy in nats; ``math.inf`` where that overflows."""
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return math.inf


def span_perplexity(nll: list[float | None], indices: list[int]) -> float:
    """:func:`perplexity` of the mean of ``nll[i]`` over ``indices``, skipping ``None`` (an answer cut off by the
    length limit); ``math.nan`` where every one is ``None``."""
    values = [v for v in (nll[i] for i in indices) if v is not None]
    return perplexity(sum(values) / len(values)) if values else math.nan


def by_grade(examples: list[dict], score: Callable[[list[int]], dict[str, float]]) -> dict[str, float]:
    """``score(indices)`` over all ``examples``, and, where examples carry a ``"grade"``, over each grade's
    examples as ``"<grade>.<metric>"`` (grades in order of first appearance)."""
    out = score(list(range(len(examples))))
    for grade in dict.fromkeys(str(e["grade"]) for e in examples if "grade" in e):
        indices = [i for i, e in enumerate(examples) if str(e.get("grade")) == grade]
        out.update({f"{grade}.{name}": value for name, value in score(indices).items()})
    return out
