"""Hand-checked examples for nas.train.metrics (pure Python, fast)."""

from __future__ import annotations

import importlib.util
import math
import random

import pytest

from nas.train.metrics import (
    classification_metrics,
    exact_match,
    normalize_answer,
    perplexity,
    squad_exact_match,
    squad_f1,
    squad_metrics,
)


# --- normalize_answer --------------------------------------------------------------------------------------------
def test_normalize_answer_squad_rules():
    # lower -> "the  cat's hat!" -> drop punctuation -> "the  cats hat" -> drop "the" -> collapse spaces.
    assert normalize_answer("The  Cat's hat!") == "cats hat"
    assert normalize_answer("  A\tman,  an apple\nand THE end. ") == "man apple and end"


def test_normalize_answer_articles_only_whole_words():
    assert normalize_answer("another theory anthem") == "another theory anthem"
    assert normalize_answer("the") == ""
    # Punctuation is removed before articles, so "the-end" -> "theend" (kept), as in the official script.
    assert normalize_answer("the-end") == "theend"


# --- SQuAD EM / F1 -----------------------------------------------------------------------------------------------
def test_squad_f1_hand_computed():
    # pred "the cat sat" -> [cat, sat]; truth "a cat sat down" -> [cat, sat, down]; common = 2.
    # precision = 2/2 = 1, recall = 2/3, F1 = 2 * 1 * (2/3) / (1 + 2/3) = (4/3) / (5/3) = 0.8
    assert squad_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)


def test_squad_f1_counts_repeated_tokens_as_a_bag():
    # pred [cat, cat, cat], truth [cat, dog]: common = min(3, 1) = 1; P = 1/3, R = 1/2, F1 = (1/3) / (5/6) = 0.4
    assert squad_f1("cat cat cat", ["cat dog"]) == pytest.approx(0.4)


def test_squad_exact_match_normalises():
    assert squad_exact_match("The Cat.", ["cat"]) == 1.0
    assert squad_exact_match("cats", ["cat"]) == 0.0


def test_squad_max_over_ground_truths():
    truths = ["dog", "a black cat", "cat"]
    assert squad_exact_match("The cat", truths) == 1.0
    # vs "dog": 0; vs "black cat": P = 1/1, R = 1/2 -> F1 = 2/3; vs "cat": 1.0 -> max 1.0
    assert squad_f1("The cat", truths) == 1.0
    # pred [black, dog]: vs "dog" P = 1/2, R = 1 -> 2/3; vs "black cat" P = 1/2, R = 1/2 -> 1/2; max 2/3
    assert squad_f1("black dog", ["dog", "black cat"]) == pytest.approx(2 / 3)


def test_squad_wrong_answer_scores_zero():
    assert squad_f1("Paris", ["Berlin, Germany"]) == 0.0
    assert squad_exact_match("Paris", ["Berlin, Germany"]) == 0.0


def test_squad_both_empty_after_normalisation():
    # Official v1.1: EM compares "" == "" -> 1; F1 has num_same == 0 -> 0. Kept on purpose.
    assert squad_exact_match("The.", ["a"]) == 1.0
    assert squad_f1("The.", ["a"]) == 0.0


def test_squad_metrics_percentages():
    preds = ["The Cat.", "the cat sat", "Paris", "blue"]
    refs = [["cat"], ["a cat sat down"], ["Berlin"], ["red", "Blue!"]]
    # EM per example: 1, 0, 0, 1 -> 2/4 = 50%. F1: 1, 0.8, 0, 1 -> 2.8/4 = 70%.
    result = squad_metrics(preds, refs)
    assert result == {"exact_match": pytest.approx(50.0), "f1": pytest.approx(70.0)}


# --- classification ----------------------------------------------------------------------------------------------
def test_classification_metrics_hand_computed_confusion():
    labels = [0, 0, 1, 1, 2, 2]
    preds = [0, 1, 1, 1, 2, 0]
    # Correct at positions 0, 2, 3, 4 -> accuracy 4/6 = 2/3.
    # class 0: predicted at {0, 5}, tp 1 -> P 1/2; present at {0, 1} -> R 1/2; F1 1/2
    # class 1: predicted at {1, 2, 3}, tp 2 -> P 2/3; present at {2, 3} -> R 1; F1 = (4/3)/(5/3) = 4/5
    # class 2: predicted at {4}, tp 1 -> P 1; present at {4, 5} -> R 1/2; F1 = 1/(3/2) = 2/3
    # macro P = (1/2 + 2/3 + 1)/3 = 13/18; R = (1/2 + 1 + 1/2)/3 = 2/3; F1 = (15/30 + 24/30 + 20/30)/3 = 59/90
    m = classification_metrics(preds, labels)
    assert m == {
        "accuracy": pytest.approx(2 / 3),
        "precision": pytest.approx(13 / 18),
        "recall": pytest.approx(2 / 3),
        "macro_f1": pytest.approx(59 / 90),
    }
    # num_classes=4 adds class 3, never predicted nor present: all zeros, so the sums are divided by 4.
    m4 = classification_metrics(preds, labels, num_classes=4)
    assert m4 == {
        "accuracy": pytest.approx(2 / 3),
        "precision": pytest.approx(13 / 24),
        "recall": pytest.approx(1 / 2),
        "macro_f1": pytest.approx(59 / 120),
    }


def test_classification_metrics_class_present_but_never_predicted():
    # class 0: P 1, R 1, F1 1; class 1: predicted {1, 2}, tp 1 -> P 1/2, R 1 -> F1 2/3; class 2: never predicted -> 0s.
    # accuracy 2/3; P = (1 + 1/2 + 0)/3 = 1/2; R = (1 + 1 + 0)/3 = 2/3; F1 = (1 + 2/3 + 0)/3 = 5/9
    m = classification_metrics([0, 1, 1], [0, 1, 2])
    assert m == {
        "accuracy": pytest.approx(2 / 3),
        "precision": pytest.approx(1 / 2),
        "recall": pytest.approx(2 / 3),
        "macro_f1": pytest.approx(5 / 9),
    }


def test_classification_metrics_perfect():
    assert classification_metrics([1, 0, 1], [1, 0, 1]) == {
        "accuracy": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "macro_f1": 1.0,
    }


# --- exact_match / perplexity ------------------------------------------------------------------------------------
def test_exact_match_strips_whitespace_only():
    preds = ["  42\n", "Hello", "foo bar", "x"]
    refs = ["42", "hello", "foo bar ", "y"]
    # "42" == "42" yes; case differs no; "foo bar" == "foo bar" yes; no -> 2/4
    assert exact_match(preds, refs) == 0.5


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(10)) == pytest.approx(10.0)
    assert perplexity(1e6) == math.inf
    assert perplexity(math.inf) == math.inf


# --- errors ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda: classification_metrics([0, 1], [0]),
        lambda: classification_metrics([], []),
        lambda: classification_metrics([0, 3], [0, 1], num_classes=3),
        lambda: classification_metrics([0], [0], num_classes=0),
        lambda: exact_match(["a"], ["a", "b"]),
        lambda: exact_match([], []),
        lambda: squad_metrics(["a"], []),
        lambda: squad_metrics([], []),
        lambda: squad_f1("a", []),
        lambda: squad_exact_match("a", []),
    ],
)
def test_errors_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_length_mismatch_message_is_clear():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        classification_metrics([0, 1], [0])


# --- optional cross-checks (skipped unless already installed) ----------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="sklearn not installed")
def test_matches_sklearn():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = random.Random(0)
    for _ in range(20):
        labels = [rng.randrange(4) for _ in range(30)]
        preds = [rng.randrange(4) for _ in range(30)]
        m = classification_metrics(preds, labels, num_classes=4)
        p, r, f, _ = precision_recall_fscore_support(
            labels, preds, labels=list(range(4)), average="macro", zero_division=0
        )
        assert m["accuracy"] == pytest.approx(accuracy_score(labels, preds))
        assert (m["precision"], m["recall"], m["macro_f1"]) == pytest.approx((p, r, f))


@pytest.mark.skipif(importlib.util.find_spec("evaluate") is None, reason="evaluate not installed")
def test_matches_evaluate_squad():
    import evaluate

    preds = ["The Cat.", "the cat sat", "Paris", "blue"]
    refs = [["cat"], ["a cat sat down"], ["Berlin"], ["red", "Blue!"]]
    squad = evaluate.load("squad")
    expected = squad.compute(
        predictions=[{"id": str(i), "prediction_text": p} for i, p in enumerate(preds)],
        references=[{"id": str(i), "answers": {"text": r, "answer_start": [0] * len(r)}} for i, r in enumerate(refs)],
    )
    got = squad_metrics(preds, refs)
    assert got["exact_match"] == pytest.approx(expected["exact_match"])
    assert got["f1"] == pytest.approx(expected["f1"])
