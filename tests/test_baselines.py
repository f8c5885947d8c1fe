"""nas.train.baselines: what a trivial predictor scores with no model, on hand-made task sets where it is known."""

import math
from collections import Counter

import pytest

from nas.data.tasks import TaskSet
from nas.data.tokens import train_tokenizer
from nas.protocol import KIND_METRICS, Task
from nas.train.baselines import (
    baseline_text,
    classification_baselines,
    completion_targets,
    generation_baselines,
    protocol_baselines,
    qa_baselines,
    task_baselines,
)


def _labelled(*labels: str) -> list[dict]:
    return [{"text": f"example {i}", "label": label} for i, label in enumerate(labels)]


def test_classification_majority_class_of_the_train_split():
    """3 of 4 train labels are "pos"; always "pos" on an eval set with 2 of 5 "pos"."""
    taskset = TaskSet(
        _labelled("pos", "pos", "neg", "pos"), _labelled("pos", "neg", "neg", "pos", "neg"), ["neg", "pos"]
    )
    scores = {name: b.value for name, b in classification_baselines(taskset).items()}
    # pos: precision 2/5, recall 2/2, F1 2*0.4*1/1.4 = 4/7; neg: never predicted, so precision = recall = F1 = 0.
    assert scores == pytest.approx(
        {"accuracy": 2 / 5, "precision": 0.2, "recall": 0.5, "macro_f1": 2 / 7, "chance": 0.5}, abs=1e-12
    )
    predictors = {name: b.predictor for name, b in classification_baselines(taskset).items()}
    assert predictors == {**dict.fromkeys(KIND_METRICS["classification"], "majority class"), "chance": "uniform guess"}


def test_classification_majority_is_the_train_majority_and_ties_go_to_the_first_label():
    eval_ = _labelled("a", "b", "b", "c")
    taskset = TaskSet(_labelled("c", "b", "c"), eval_, ["a", "b", "c"])  # majority "c": 1 of 4 right
    assert classification_baselines(taskset)["accuracy"].value == 0.25
    assert classification_baselines(taskset)["chance"].value == pytest.approx(1 / 3)
    tie = TaskSet(_labelled("c", "b", "c", "b"), eval_, ["a", "b", "c"])  # "b" and "c" twice each: "b"
    assert classification_baselines(tie)["accuracy"].value == 0.5


def _qa(context: str, answer: str) -> dict:
    return {"context": context, "question": "?", "answers": {"text": [answer], "answer_start": [context.find(answer)]}}


def test_qa_first_k_words_of_the_context_k_the_median_train_answer_length():
    train = [_qa("x", "red kite"), _qa("x", "a grey cat"), _qa("x", "Oslo")]  # 2, 3 and 1 words: k = 2
    evals = [
        _qa("Red kite flies over Oslo.", "red kite"),  # "Red kite": exact
        _qa("The grey cat sleeps.", "grey cat sleeps"),  # "The grey" -> "grey": precision 1, recall 1/3, F1 0.5
    ]
    baselines = qa_baselines(TaskSet(train, evals))
    assert {name: b.value for name, b in baselines.items()} == pytest.approx({"exact_match": 0.5, "f1": 0.75})
    assert {b.predictor for b in baselines.values()} == {"first 2 words"}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["Mira lives in Oslo. Tomas lives in Lima."] * 30, vocab_size=300)


def test_generation_most_frequent_completion_and_unigram_perplexity(tokenizer):
    """Exact match compares tokens, as a trial's greedy check does: "Oslo." is not " Oslo."."""
    task = Task(name="answer", kind="generation", max_length=32)
    completions = [" Oslo.", " Oslo.", " Lima."]
    taskset = TaskSet(
        [{"prompt": "Where?", "completion": c} for c in completions],
        [{"prompt": "Where?", "completion": c} for c in (" Oslo.", " Lima.", "Oslo.")],
    )
    baselines = generation_baselines(task, taskset, tokenizer)
    assert baselines["exact_match"].value == pytest.approx(1 / 3)
    assert baselines["exact_match"].predictor == "most frequent completion"
    # The unigram of the train completions' tokens and EOS, add-one smoothed over the vocabulary.
    train = completion_targets(completions, tokenizer, 32)
    evals = completion_targets([" Oslo.", " Lima.", "Oslo."], tokenizer, 32)
    assert all(t[-1] == tokenizer.eos_token_id for t in train + evals)
    counts, total = Counter(x for t in train for x in t), sum(len(t) for t in train)
    nll = [-math.log((counts[x] + 1) / (total + len(tokenizer))) for t in evals for x in t]
    assert baselines["perplexity"].value == pytest.approx(math.exp(sum(nll) / len(nll)))
    assert 1 < baselines["perplexity"].value < len(tokenizer)  # far better than a uniform guess
    (whole,), (cut,) = (completion_targets([" Oslo Lima Oslo Lima"], tokenizer, n) for n in (64, 3))
    assert len(whole) > 3 and cut == whole[:2]  # cut to max_length - 1, as a trial cuts its targets


def test_generation_choice_baseline_is_a_uniform_guess_among_each_examples_candidates(tokenizer):
    task = Task(name="answer", kind="generation", max_length=32)
    four = [" Oslo.", " Lima.", " Rome.", " Kyiv."]
    evals = [
        {"prompt": "Where?", "completion": " Oslo.", "choices": four[:2], "grade": "near"},
        {"prompt": "Where?", "completion": " Lima.", "choices": four, "grade": "far"},
    ]
    baselines = generation_baselines(task, TaskSet(evals, evals), tokenizer)
    assert baselines["choice_accuracy"].value == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert baselines["choice_accuracy"].predictor == "uniform guess"
    assert baselines["near.choice_accuracy"].value == 0.5 and baselines["far.choice_accuracy"].value == 0.25
    bare = [{k: v for k, v in x.items() if k != "choices"} for x in evals]
    without = generation_baselines(task, TaskSet(evals, bare), tokenizer)
    assert "choice_accuracy" not in without  # no candidates, no multiple-choice score


def test_protocol_baselines_cover_every_task_metric_and_are_computed_once(micro_protocol, monkeypatch):
    from nas.data import tasks
    from nas.data.tokens import prepare_tokens
    from nas.train import baselines

    monkeypatch.setattr(baselines, "_CACHE", {})
    protocol = micro_protocol()
    tokenizer = prepare_tokens(protocol).tokenizer
    loads = []
    real = tasks.load_task_set
    monkeypatch.setattr(tasks, "load_task_set", lambda *args: loads.append(args[0].name) or real(*args))
    first = protocol_baselines(protocol, tokenizer)
    again = protocol_baselines(protocol, tokenizer)
    assert first == again and loads == ["claims", "qa", "answer"]  # the second call read no task set
    names = {t.name for t in protocol.tasks}
    chance = {"claims.chance"} | {f"claims.{g}.chance" for g in protocol.tasks[0].grades()}
    expected = {m for m in protocol.metric_names() if m.split(".")[0] in names} | chance
    assert {f"claims.{g}.accuracy" for g in ("near", "mid", "far")} <= expected  # every grade on its own
    assert set(first) == expected
    assert all(0 <= b.value <= 1 for name, b in first.items() if not name.endswith("perplexity"))


def test_baseline_text():
    values = {"claims.accuracy": 0.4, "claims.macro_f1": 2 / 7, "claims.chance": 1 / 3, "qa.f1": 0.07}
    predictors = {"claims.accuracy": "majority class", "claims.macro_f1": "majority class", "qa.f1": "first 2 words"}
    assert baseline_text("claims.accuracy", values, predictors) == "majority class 0.4, chance 0.3333"
    assert baseline_text("claims.macro_f1", values, predictors) == "majority class 0.2857"
    assert baseline_text("qa.f1", values, predictors) == "first 2 words 0.07"
    assert baseline_text("val_loss", values, predictors) == ""


def test_qa_uniform_span_perplexity_is_the_geometric_mean_of_the_context_lengths(tokenizer):
    """A uniform guess among the context's tokens scores log(context tokens) per example; answers cut off by
    max_length are skipped, as a trial skips them."""
    from nas.train.spans import qa_features

    evals = [_qa("Mira lives in Oslo.", "Oslo"), _qa("Mira lives in Oslo. Tomas lives in Lima.", "Lima")]
    task = Task(name="qa", kind="qa", max_length=64)
    context = [len(f["ids"]) - f["ctx_first"] for f in qa_features(evals, tokenizer, 64)]
    baselines = task_baselines(task, TaskSet(evals, evals), tokenizer)
    assert baselines["perplexity"].value == pytest.approx(math.sqrt(context[0] * context[1]))
    assert baselines["perplexity"].predictor == "uniform span"
    assert "perplexity" not in qa_baselines(TaskSet(evals, evals))  # no tokenizer: no span baseline
    short = Task(name="qa", kind="qa", max_length=8)  # the second answer, at the end, is cut off
    (first, second) = qa_features(evals, tokenizer, 8)
    assert second["end"] is None and first["end"] is not None
    n = len(first["ids"]) - first["ctx_first"]
    assert task_baselines(short, TaskSet(evals, evals), tokenizer)["perplexity"].value == pytest.approx(n)


def test_qa_uniform_span_perplexity_per_grade_and_nan_where_every_answer_is_cut_off(tokenizer):
    from nas.train.spans import qa_features

    evals = [
        {**_qa("Mira lives in Oslo.", "Oslo"), "grade": "near"},
        {**_qa("Mira lives in Oslo. Tomas lives in Lima. Mira lives in Oslo.", "Lima"), "grade": "far"},
        {**_qa("Tomas lives in Lima.", "Lima"), "grade": "near"},
    ]
    task = Task(name="qa", kind="qa", max_length=64)
    context = [len(f["ids"]) - f["ctx_first"] for f in qa_features(evals, tokenizer, 64)]
    baselines = task_baselines(task, TaskSet(evals, evals), tokenizer)
    assert baselines["near.perplexity"].value == pytest.approx(math.sqrt(context[0] * context[2]))
    assert baselines["far.perplexity"].value == pytest.approx(context[1])
    tiny = Task(name="qa", kind="qa", max_length=8)  # "Lima", far into the context, is cut off: no span to score
    assert math.isnan(task_baselines(tiny, TaskSet(evals, evals[1:2]), tokenizer)["perplexity"].value)
