import math

import pytest
import torch

from nas.data.tokens import train_tokenizer
from nas.train.metrics import span_perplexity
from nas.train.spans import best_span, qa_features, span_nll, uniform_span_nll

STORY = "Mira is a baker from Oslo. Tomas keeps a red kite."
EXAMPLE = {
    "question": "Where is Mira from?",
    "context": STORY,
    "answers": {"text": ["Oslo"], "answer_start": [STORY.index("Oslo")]},
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([STORY, "Where is Mira from?", "What does Tomas keep?"] * 30, vocab_size=320)


def test_qa_answer_span_maps_to_tokens_and_back(tokenizer):
    example = EXAMPLE
    (feature,) = qa_features([example], tokenizer, max_length=64)
    s, e = feature["start"], feature["end"]
    assert feature["ctx_first"] <= s <= e
    assert feature["text"][feature["offsets"][s][0] : feature["offsets"][e][1]].strip() == "Oslo"
    # The span decoder picks the best start/end pair inside the context and returns its text.
    n = len(feature["ids"])
    start, end = torch.zeros(n), torch.zeros(n)
    start[s], end[e] = 5.0, 5.0
    start[0] = 100.0  # the question is not context: never chosen
    assert best_span(start, end, feature, max_tokens=4) == "Oslo"
    two = {**example, "answers": {"text": ["red kite"], "answer_start": [STORY.index("red kite")]}}
    (f2,) = qa_features([two], tokenizer, max_length=64)
    assert f2["text"][f2["offsets"][f2["start"]][0] : f2["offsets"][f2["end"]][1]].strip() == "red kite"


def test_qa_answer_cut_by_max_length_is_dropped(tokenizer):
    example = {
        "question": "What does Tomas keep?",
        "context": STORY,
        "answers": {"text": ["red kite"], "answer_start": [STORY.index("red kite")]},
    }
    (feature,) = qa_features([example], tokenizer, max_length=8)
    assert feature["end"] is None


def test_span_nll_is_the_mean_start_end_cross_entropy_over_the_context_only(tokenizer):
    (feature,) = qa_features([EXAMPLE], tokenizer, max_length=64)
    n, lo, s, e = len(feature["ids"]), feature["ctx_first"], feature["start"], feature["end"]
    assert 0 < lo < s <= e < n
    prefix = len(EXAMPLE["question"]) + 1  # "question\n": the context's tokens are those after it, all of them
    assert feature["offsets"][lo][1] > prefix >= feature["offsets"][lo - 1][1]
    assert n - lo == len(tokenizer.backend_tokenizer.encode(STORY, add_special_tokens=False).ids)
    flat = torch.zeros(n)
    assert span_nll(flat, flat, feature) == pytest.approx(math.log(n - lo))
    assert uniform_span_nll(feature) == pytest.approx(math.log(n - lo))
    start, end = torch.zeros(n), torch.zeros(n)
    start[s], end[e] = 2.0, 1.0
    start[0] = end[0] = 50.0  # a question token: not a candidate, so it changes nothing
    expected = (math.log(math.exp(2) + n - lo - 1) - 2 + math.log(math.e + n - lo - 1) - 1) / 2
    assert span_nll(start, end, feature) == pytest.approx(expected)
    start[s], end[e] = 30.0, 30.0  # sure and right: near zero
    assert span_nll(start, end, feature) == pytest.approx(0.0, abs=1e-6)


def test_span_nll_of_a_cut_off_answer_is_none_and_skipped_by_span_perplexity(tokenizer):
    (cut,) = qa_features([{**EXAMPLE, "question": "What does Tomas keep?"}], tokenizer, max_length=8)
    cut = {**cut, "end": None}
    assert span_nll(torch.zeros(8), torch.zeros(8), cut) is None
    assert uniform_span_nll(cut) is None
    assert span_perplexity([None, math.log(4.0), math.log(16.0)], [0, 1, 2]) == pytest.approx(8.0)
    assert math.isnan(span_perplexity([None, 1.0], [0]))


def test_padding_after_the_example_is_never_a_candidate(tokenizer):
    """A batch pads each row to the longest: logits past the example's own tokens change neither the NLL nor
    the decoded span, however large."""
    (feature,) = qa_features([EXAMPLE], tokenizer, max_length=64)
    n = len(feature["ids"])
    start, end = torch.randn(n, generator=torch.Generator().manual_seed(0)), torch.zeros(n)
    start[feature["start"]], end[feature["end"]] = 3.0, 3.0
    padded_start, padded_end = torch.cat([start, torch.full((5,), 40.0)]), torch.cat([end, torch.full((5,), 40.0)])
    assert span_nll(padded_start, padded_end, feature) == pytest.approx(span_nll(start, end, feature))
    assert best_span(padded_start, padded_end, feature, max_tokens=4) == best_span(start, end, feature, 4) == "Oslo"
