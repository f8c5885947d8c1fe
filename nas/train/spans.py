"""Extractive QA spans: the token features of "question \\n context", the best span of a model's start / end
logits, and how likely the logits make the gold span (its NLL, and a uniform guess's).

A span can only start and end in the context (the question is not a candidate) and within the example's
tokens (padding is not either), for the decoder, the NLL and the uniform guess alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["best_span", "qa_features", "span_nll", "uniform_span_nll"]


def qa_features(examples: list[dict], tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
    """Token ids of "question\\ncontext", the context's first token, offsets, and the answer's first and last
    token (``None`` where the answer is cut off by ``max_length``)."""
    features = []
    for example in examples:
        prefix = example["question"].strip() + "\n"
        text = prefix + example["context"]
        enc = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
        ids, offsets = enc.ids[:max_length], enc.offsets[:max_length]
        # the first token holding a context character (the "\n" separator alone is not context)
        ctx_first = next((i for i, (_, e) in enumerate(offsets) if e > len(prefix) and i > 0), len(ids))
        start_tok = end_tok = None
        answers = example["answers"]
        if answers["text"]:
            a_start = len(prefix) + answers["answer_start"][0]
            a_end = a_start + len(answers["text"][0])
            for i in range(ctx_first, len(ids)):
                s, e = offsets[i]
                if start_tok is None and s <= a_start < e:
                    start_tok = i
                if s < a_end <= e:
                    end_tok = i
                    break
        features.append(
            {
                "ids": ids,
                "offsets": offsets,
                "text": text,
                "ctx_first": ctx_first,
                "start": start_tok,
                "end": end_tok,
                "answers": answers["text"],
            }
        )
    return features


def best_span(start: torch.Tensor, end: torch.Tensor, feature: dict, max_tokens: int) -> str:
    """The highest-scoring context span (start <= end < start + max_tokens) as text."""
    n, lo = len(feature["ids"]), feature["ctx_first"]
    if lo >= n:
        return ""
    scores = start[lo:n, None] + end[None, lo:n]
    i = torch.arange(n - lo)
    band = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_tokens)
    scores = scores.masked_fill(~band.to(scores.device), -math.inf)
    best = int(scores.argmax())
    s, e = lo + best // (n - lo), lo + best % (n - lo)
    return feature["text"][feature["offsets"][s][0] : feature["offsets"][e][1]].strip()


def span_nll(start: torch.Tensor, end: torch.Tensor, feature: dict) -> float | None:
    """The mean of the start and end cross-entropies (nats) of the gold span, each a softmax over the context's
    tokens; ``None`` where the answer does not fit (``feature["end"] is None``)."""
    if feature["start"] is None or feature["end"] is None:
        return None
    lo, n = feature["ctx_first"], len(feature["ids"])
    s = F.cross_entropy(start[lo:n].float()[None], torch.tensor([feature["start"] - lo], device=start.device))
    e = F.cross_entropy(end[lo:n].float()[None], torch.tensor([feature["end"] - lo], device=end.device))
    return float(s + e) / 2


def uniform_span_nll(feature: dict) -> float | None:
    """:func:`span_nll` of logits that are all equal: log of the number of context tokens."""
    if feature["start"] is None or feature["end"] is None:
        return None
    return math.log(len(feature["ids"]) - feature["ctx_first"])
