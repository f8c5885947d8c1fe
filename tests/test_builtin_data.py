"""The builtin synthetic data set: deterministic, well-formed, and needing long-range recall and agreement."""

from __future__ import annotations

import hashlib
import json
import random
import re
import statistics
import time
from collections import Counter

import pytest

from nas.data import builtin
from nas.data.builtin import (
    LABELS,
    agreement_sentence,
    classification_examples,
    generation_examples,
    pretraining_corpus,
    qa_examples,
)

PLURALS = {pl for _, pl in builtin.NOUNS}
SINGULARS = {sg for sg, _ in builtin.NOUNS}
QUESTION_NAME = re.compile(r"(?:is|does) (\w+)")
CLAIM = re.compile(r"^(\w+) (?:is from|is|keeps) (.+)$")
PINNED_CORPUS = "4b3b0c18685df23d"  # sha256 of pretraining_corpus(0, 200) as JSON, first 16 hex digits


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=\.)\s", text) if s.strip()]


def _check_agreement(sentence: str) -> bool:
    """Assert the final copula agrees with the head noun; return whether the nearest noun before it mismatches."""
    words = sentence.rstrip(".").split()
    assert words[0] == "The"
    head, copula = words[1], words[-2]
    assert head in PLURALS | SINGULARS, sentence
    plural = head in PLURALS
    assert copula in (("are", "were") if plural else ("is", "was")), sentence
    nearest = next(w for w in reversed(words[:-2]) if w in PLURALS | SINGULARS)
    return (nearest in PLURALS) != plural


@pytest.mark.parametrize("fn", [pretraining_corpus, classification_examples, qa_examples, generation_examples])
def test_deterministic_and_seed_dependent(fn):
    assert fn(3, 40) == fn(3, 40)
    assert fn(3, 40) != fn(4, 40)
    assert fn(3, 10) == fn(3, 40)[:10]
    assert len(fn(3, 40)) == 40
    assert fn(3, 0) == []


def test_does_not_touch_global_random():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    pretraining_corpus(0, 20), qa_examples(0, 20), classification_examples(0, 20), generation_examples(0, 20)
    assert random.random() == expected


def test_vocabulary_has_no_ambiguous_names():
    names, cities = builtin.NAMES, builtin.CITIES
    assert len(set(names)) == len(names) >= 40 and len(set(cities)) == len(cities) >= 30
    for name in names:
        assert not any(name != other and (name in other or other in name) for other in names + cities), name
    nouns = SINGULARS | PLURALS
    assert not nouns & set(builtin.JOBS + builtin.ANIMALS + builtin.OBJECTS + builtin.PLACES)


def test_agreement_sentences_agree_with_head_noun_not_attractor():
    rng = random.Random(0)
    mismatched = 0
    for _ in range(300):
        sentence, plural = agreement_sentence(rng)
        assert (sentence.split()[1] in PLURALS) == plural
        mismatched += _check_agreement(sentence)
    assert mismatched >= 0.4 * 300  # the nearest noun usually has the other number
    assert len(agreement_sentence(random.Random(1), depth=2)[0].split()) >= 8


def test_pretraining_documents():
    docs = pretraining_corpus(0, 400)
    paragraphs = [d for d in docs if "Question:" not in d]
    assert 0.15 <= len(paragraphs) / len(docs) <= 0.35
    for doc in paragraphs[:50]:
        assert 6 <= len(_sentences(doc)) <= 10
        for sentence in _sentences(doc):
            _check_agreement(sentence)
    stories = [d for d in docs if "Question:" in d]
    assert 150 <= statistics.mean(len(d.split()) for d in stories) <= 250
    for doc in stories:
        story, *qa = doc.split("\nQuestion: ")
        assert 2 <= len(qa) <= 4
        for line in qa:
            question, answer = line.split("\nAnswer: ")
            assert question.endswith("?") and answer.endswith(".")
            assert answer[:-1] in story
            assert QUESTION_NAME.search(question).group(1) in story


def _words_after(text: str, value_at: int) -> int:
    """Words between the end of the sentence holding offset ``value_at`` and the end of ``text``."""
    return len(text[text.index(".", value_at) + 1 :].split())


def _in_grade(grade: str, words: int) -> bool:
    low, high = builtin.GRADE_WORDS[grade]
    return low <= words and (high is None or words <= high)


def test_qa_answers_at_offset_and_graded_by_distance():
    examples = qa_examples(0, 300)
    assert [ex["grade"] for ex in examples[:6]] == list(builtin.GRADES) * 2  # grades in turn
    for ex in examples:
        context, (answer,), (start,) = ex["context"], ex["answers"]["text"], ex["answers"]["answer_start"]
        assert set(ex) == {"id", "title", "context", "question", "answers", "grade"}
        assert context[start : start + len(answer)] == answer
        name = QUESTION_NAME.search(ex["question"]).group(1)
        fact_start = context.rfind(". ", 0, start) + 1
        assert context[fact_start:].split()[0] == name  # the sentence holding the answer is about that person
        assert 1 <= len(answer.split()) <= 2
        assert _in_grade(ex["grade"], _words_after(context, start)), (ex["grade"], context, answer)
    assert len({ex["id"] for ex in examples}) == len({ex["title"] for ex in examples}) == len(examples)


def test_grades_can_be_chosen():
    assert {ex["grade"] for ex in classification_examples(0, 20, ["near"])} == {"near"}
    assert [ex["grade"] for ex in generation_examples(0, 4, ["far", "near"])] == ["far", "near"] * 2
    with pytest.raises(ValueError, match="unknown grade"):
        qa_examples(0, 2, ["close"])


def test_pretraining_corpus_is_pinned():
    """The corpus is part of every cached token set: a change must come with a GENERATOR_VERSION bump."""
    digest = hashlib.sha256(json.dumps(pretraining_corpus(0, 200)).encode()).hexdigest()
    assert (builtin.GENERATOR_VERSION, digest[:16]) == ("1", PINNED_CORPUS)


def test_classification_labels_and_claims():
    examples = classification_examples(0, 600)
    counts = Counter(ex["label"] for ex in examples)
    assert set(counts) == set(LABELS)
    assert all(c >= 0.2 * len(examples) for c in counts.values())
    for ex in examples:
        story, claim = ex["text"].split("\nClaim: ")
        name, value = CLAIM.match(claim.removesuffix(".")).groups()
        stated = any(name in s and value in s for s in _sentences(story))
        if ex["label"] == "true":
            assert stated and value.split()[-1] in story.replace(".", "").split()
        elif ex["label"] == "false":
            assert name in story.split() and not stated
        else:
            assert name not in story


def test_generation_examples():
    examples = generation_examples(0, 300)
    for ex in examples:
        prompt, completion = ex["prompt"], ex["completion"]
        assert completion.startswith(" ") and completion.endswith(".")
        answer = completion[1:-1]
        assert 1 <= len(answer.split()) <= 4
        story, question = prompt.rsplit("\nQuestion: ", 1)
        assert question.endswith("?\nAnswer:")
        name = QUESTION_NAME.search(question).group(1)
        fact = next(i for i, s in enumerate(_sentences(story)) if s.split()[0] == name and answer in s)
        assert _in_grade(ex["grade"], len(" ".join(_sentences(story)[fact + 1 :]).split()))
        # the candidates: every story person's value of the asked attribute, each stated in the story
        choices = ex["choices"]
        assert completion in choices and len(set(choices)) == len(choices) >= 3
        assert all(c.startswith(" ") and c.endswith(".") and c[1:-1] in story for c in choices)


def test_pretraining_is_fast():
    start = time.perf_counter()
    docs = pretraining_corpus(0, 5000)
    assert time.perf_counter() - start < 2.0
    assert len(docs) == 5000 and len(set(docs)) > 4900
