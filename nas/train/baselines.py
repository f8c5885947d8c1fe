"""The score of a trivial predictor, with no model, on each task's held-out examples: the bar a trial's
task metric has to clear to show that pretraining taught the architecture anything.

Each baseline is read off the task's own data (and, for generation, the tokenizer), on the same eval
examples a trial scores, with the trial's own metric code:

- classification: always the majority class of the train split (a tie goes to the first label in
  sorted order): accuracy, macro precision / recall / F1 as
  :func:`nas.train.metrics.classification_metrics` computes them for a trial; and ``chance``,
  1 / number of labels, the expected accuracy of a uniform guess.
- qa: the first k words of the context, k the median (lower) word count of the train split's first
  gold answers (at least 1): SQuAD exact match and F1 as fractions 0..1; and a uniform guess of the span's
  start and end among the context's tokens: its span perplexity (the geometric mean of the context lengths).
- generation: exact match of always answering the train split's most frequent completion, compared
  token for token with EOS, as a trial's greedy check is; perplexity of a unigram model of the train
  completions' tokens (add-one smoothing over the tokenizer's vocabulary) on the eval completions'
  tokens and EOS, the tokens a trial scores; where the examples carry candidate completions, the
  multiple-choice accuracy of a uniform guess among them (the mean of 1 / their number). (A uniform guess
  over the vocabulary scores a perplexity of the vocabulary size, a bar every trained model clears: not
  reported.)

:func:`protocol_baselines` caches each task's baselines per process, keyed by the task's settings
(and the tokenizer's content for generation and qa), so a worker computes them once per task set.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.protocol import CHOICE_METRIC
from nas.train.metrics import by_grade, classification_metrics, perplexity, span_perplexity, squad_metrics

if TYPE_CHECKING:
    from nas.data.tasks import TaskSet
    from nas.protocol import Task, TrialProtocol

__all__ = [
    "Baseline",
    "add_baselines",
    "CHANCE",
    "baseline_text",
    "classification_baselines",
    "completion_targets",
    "generation_baselines",
    "protocol_baselines",
    "qa_baselines",
    "task_baselines",
]

CHANCE = "chance"  # the key ("task.chance") of a classification task's uniform-guess accuracy


@dataclass(frozen=True)
class Baseline:
    value: float
    predictor: str  # what the trivial predictor does, short: "majority class", "first 3 words", ...


def classification_baselines(taskset: TaskSet) -> dict[str, Baseline]:
    """Always the train split's majority class; ``chance`` = 1 / number of labels."""
    labels = taskset.labels or sorted({str(e["label"]) for e in taskset.train + taskset.eval})
    counts = Counter(labels.index(str(e["label"])) for e in taskset.train)
    majority = max(counts, key=lambda c: (counts[c], -c))
    truth = [labels.index(str(e["label"])) for e in taskset.eval]
    scores = by_grade(
        taskset.eval, lambda idx: classification_metrics([majority] * len(idx), [truth[i] for i in idx], len(labels))
    )
    out = {name: Baseline(value, "majority class") for name, value in scores.items()}
    for name in [n for n in scores if n.rpartition(".")[2] == "accuracy"]:
        out[name.replace("accuracy", CHANCE)] = Baseline(1 / len(labels), "uniform guess")
    return out


def qa_baselines(taskset: TaskSet, task: Task | None = None, tokenizer: Any = None) -> dict[str, Baseline]:
    """The first k words of the context, k the median word count of the train answers; with ``task`` and
    ``tokenizer``, also the span perplexity of a uniform guess over the context's tokens."""
    lengths = [len(e["answers"]["text"][0].split()) for e in taskset.train if e["answers"]["text"]]
    k = max(1, statistics.median_low(lengths)) if lengths else 1
    predictions = [" ".join(e["context"].split()[:k]) for e in taskset.eval]
    answers = [e["answers"]["text"] for e in taskset.eval]
    scores = by_grade(taskset.eval, lambda idx: squad_metrics([predictions[i] for i in idx], [answers[i] for i in idx]))
    predictor = f"first {k} word{'s' if k > 1 else ''}"
    out = {name: Baseline(value / 100.0, predictor) for name, value in scores.items()}
    if task is not None and tokenizer is not None:
        from nas.train.spans import qa_features, uniform_span_nll

        nll = [uniform_span_nll(f) for f in qa_features(taskset.eval, tokenizer, task.max_length)]
        uniform = by_grade(taskset.eval, lambda idx: {"perplexity": span_perplexity(nll, idx)})
        out.update({name: Baseline(value, "uniform span") for name, value in uniform.items()})
    return out


def completion_targets(completions: list[str], tokenizer: Any, max_length: int) -> list[list[int]]:
    """The tokens a generation trial scores for each completion: its ids and EOS, cut to ``max_length - 1``."""
    encoded = tokenizer.backend_tokenizer.encode_batch(completions, add_special_tokens=False)
    return [(c.ids + [tokenizer.eos_token_id])[: max_length - 1] for c in encoded]


def generation_baselines(task: Task, taskset: TaskSet, tokenizer: Any) -> dict[str, Baseline]:
    """Exact match of the most frequent train completion; perplexity of the train completions' unigram."""
    train = completion_targets([e["completion"] for e in taskset.train], tokenizer, task.max_length)
    evals = completion_targets([e["completion"] for e in taskset.eval], tokenizer, task.max_length)
    most_frequent = Counter(tuple(t) for t in train).most_common(1)[0][0]  # ties: the first seen
    counts = Counter(token for t in train for token in t)
    total, vocab = sum(counts.values()), len(tokenizer)
    nll = [[-math.log((counts[token] + 1) / (total + vocab)) for token in t] for t in evals]

    def score(idx: list[int]) -> dict[str, float]:
        losses = [x for i in idx for x in nll[i]]
        exact = sum(tuple(evals[i]) == most_frequent for i in idx) / len(idx)
        out = {"perplexity": perplexity(sum(losses) / len(losses)), "exact_match": exact}
        if taskset.has_choices:  # a uniform guess among an example's candidates is right 1 / (their number) of the time
            out[CHOICE_METRIC] = sum(1 / len(taskset.eval[i]["choices"]) for i in idx) / len(idx)
        return out

    predictors = {"perplexity": "unigram", "exact_match": "most frequent completion", CHOICE_METRIC: "uniform guess"}
    return {name: Baseline(v, predictors[name.rpartition(".")[2]]) for name, v in by_grade(taskset.eval, score).items()}


def task_baselines(task: Task, taskset: TaskSet, tokenizer: Any = None) -> dict[str, Baseline]:
    """``{metric: Baseline}`` of one task (``chance`` too for classification); ``tokenizer`` for generation and
    qa (without it, qa has no span perplexity baseline)."""
    if task.kind == "classification":
        return classification_baselines(taskset)
    if task.kind == "qa":
        return qa_baselines(taskset, task, tokenizer)
    return generation_baselines(task, taskset, tokenizer)


_CACHE: dict[str, dict[str, Baseline]] = {}


def protocol_baselines(protocol: TrialProtocol, tokenizer: Any) -> dict[str, Baseline]:
    """``{"task.metric": Baseline}`` for every task of ``protocol``, each task computed once per process."""
    from nas.data.tasks import load_task_set

    out = {}
    for task in protocol.tasks:
        key = task.model_dump_json()
        if task.kind in ("generation", "qa") and tokenizer is not None:
            key += tokenizer.backend_tokenizer.to_str()
        key = hashlib.sha256(key.encode()).hexdigest()
        if key not in _CACHE:
            _CACHE[key] = task_baselines(task, load_task_set(task, protocol.source), tokenizer)
        out.update({f"{task.name}.{name}": baseline for name, baseline in _CACHE[key].items()})
    return out


def baseline_text(name: str, values: Mapping[str, float], predictors: Mapping[str, str]) -> str:
    """The baseline of metric ``name`` ("task.metric") as shown beside it, e.g. "majority class 0.4" (with
    ", chance 0.3333" beside a classification accuracy); "" when it has none."""
    if name not in values:
        return ""
    text = f"{predictors.get(name, 'baseline')} {values[name]:.4g}"
    task, _, metric = name.rpartition(".")
    if metric == "accuracy" and f"{task}.{CHANCE}" in values:
        text += f", chance {values[f'{task}.{CHANCE}']:.4g}"
    return text


def add_baselines(protocol: TrialProtocol, tokenizer: Any, result: dict[str, Any], log: Callable[[str], None]) -> None:
    """Each task metric beside what a trivial predictor scores with no model: logged, and kept in ``result`` as
    ``task_baselines`` and ``baseline_predictors`` (`nas train`'s final metrics)."""
    if not protocol.tasks:
        return
    baselines = protocol_baselines(protocol, tokenizer)
    values = {name: b.value for name, b in baselines.items()}
    predictors = {name: b.predictor for name, b in baselines.items()}
    for name in [n for n in result if n in values]:
        log(f"{name} {result[name]:.4g} (no model: {baseline_text(name, values, predictors)})")
    result["task_baselines"], result["baseline_predictors"] = values, predictors
