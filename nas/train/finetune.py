"""Fine-tuning from the trial's pretrained weights, one function per task kind, each returning metrics.

- classification: ``*ForSequenceClassification`` (the head reads the last token); accuracy, macro
  precision / recall / F1.
- qa: ``*ForQuestionAnswering`` over "question \\n context" (the question first, so that causal
  attention lets context tokens see it); SQuAD exact match and F1 (as fractions 0..1), and the held-out
  span perplexity: exp of the gold span's mean start / end cross-entropy over the context's tokens (a
  smooth score of the same skill: exact match and F1 move only when the argmax does).
- generation: the causal LM, trained on completion tokens; held-out perplexity of the completions
  and exact match of the greedy completion; where the examples carry candidate completions, multiple-choice
  accuracy (right when the candidate with the lowest summed NLL, EOS included, is the completion alone; all
  candidates follow the same prompt, cut to fit the longest).
  Greedy decoding reproduces a target exactly iff the argmax at every target position, given the
  target's prefix, is the target token (EOS included), so exact match is read off one teacher-forced
  forward pass.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.arch import ArchConfig
from nas.data.tasks import TaskSet, load_task_set
from nas.protocol import CHOICE_METRIC, Pretrain, Schedule, Task, TrialProtocol
from nas.train.baselines import completion_targets
from nas.train.metrics import by_grade, classification_metrics, perplexity, span_perplexity, squad_metrics
from nas.train.pretrain import autocast_for, lr_multiplier
from nas.train.spans import best_span, qa_features, span_nll

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "by_length",
    "choice_hits",
    "evaluate_tasks",
    "finetune",
    "freeze_below",
    "generation_eval",
    "generation_rows",
    "length_grouped_batches",
]

_SCHEDULE = Schedule(kind="linear", warmup_fraction=0.1, min_lr_ratio=0.0)
REPEAT_SEED_STRIDE = 1000  # a task's k-th repeat fine-tunes with seed + 1000 k (tasks' own seeds differ by 1)


def finetune(
    task: Task,
    taskset: TaskSet,
    lm: PreTrainedModel,
    arch: ArchConfig,
    tokenizer: Any,
    pretrain_config: Pretrain,
    seed: int,
) -> dict[str, float]:
    """Fine-tune a copy of the pretrained weights on ``task``; return ``{metric: value}``. With ``task.repeats``
    K > 1, K runs with seeds ``seed + 1000 * k`` and each metric's mean over them."""
    fn = {"classification": _classification, "qa": _qa, "generation": _generation}[task.kind]
    runs = []
    for k in range(task.repeats):
        torch.manual_seed(seed + REPEAT_SEED_STRIDE * k)
        runs.append(fn(task, taskset, lm, arch, tokenizer, pretrain_config, seed + REPEAT_SEED_STRIDE * k))
    return {name: sum(run[name] for run in runs) / len(runs) for name in runs[0]}


def evaluate_tasks(
    protocol: TrialProtocol,
    model: PreTrainedModel,
    arch: ArchConfig,
    tokenizer: Any,
    on_task: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """The final task evaluation (a trial's and `nas train`'s): every task of ``protocol`` fine-tuned from
    ``model`` with seed ``pretrain.seed + index + 1``; returns ``{"task.metric": value}``.
    ``on_task(name)`` is called as each task starts."""
    config = protocol.pretrain
    scores: dict[str, float] = {}
    for index, task in enumerate(protocol.tasks):
        if on_task is not None:
            on_task(task.name)
        taskset = load_task_set(task, protocol.source)
        metrics = finetune(task, taskset, model, arch, tokenizer, config, config.seed + index + 1)
        scores.update({f"{task.name}.{name}": value for name, value in metrics.items()})
    return scores


def _head_model(kind: str, lm: PreTrainedModel, arch: ArchConfig, tokenizer: Any, **config: Any) -> torch.nn.Module:
    import transformers

    hf_config = arch.to_hf_config(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    for key, value in config.items():
        setattr(hf_config, key, value)
    auto = {
        "classification": transformers.AutoModelForSequenceClassification,
        "qa": transformers.AutoModelForQuestionAnswering,
    }[kind]
    model = auto.from_config(hf_config)
    model.base_model.load_state_dict(lm.base_model.state_dict())  # the pretrained body; a fresh head
    return model.to(next(lm.parameters()).device)


def _train(model: torch.nn.Module, task: Task, lengths: list[int], batch_fn: Any, config: Pretrain, seed: int) -> None:
    """``task.steps`` AdamW steps on seeded random batches (:func:`length_grouped_batches` of the training
    examples, whose token counts are ``lengths``); ``batch_fn(indices) -> loss``."""
    device = next(model.parameters()).device
    if task.train_layers is not None:
        freeze_below(model, task.train_layers)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=task.lr, weight_decay=task.weight_decay)
    model.train()
    batches = length_grouped_batches(lengths, task.batch_size, task.steps, task.length_grouping, seed)
    for step, indices in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = task.lr * lr_multiplier(step / task.steps, _SCHEDULE)
        with autocast_for(device, config):
            loss = batch_fn(indices)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def length_grouped_batches(
    lengths: list[int], batch_size: int, steps: int, grouping: int, seed: int
) -> list[np.ndarray]:
    """``steps`` batches of example indices, each without repeats. They are drawn ``grouping`` batches at a
    time: the group's examples (distinct while the examples suffice) are sorted by length and cut into
    batches, which come in random order; so a batch holds examples of similar length and pads little, and
    over the run every example is as likely to be drawn as with plain random batches (``grouping`` 1)."""
    rng = np.random.default_rng(seed)
    n, size = len(lengths), min(batch_size, len(lengths))
    tokens = np.asarray(lengths)
    out: list[np.ndarray] = []
    while len(out) < steps:
        m = min(grouping, steps - len(out))
        if m == 1 or m * size > n:  # too few examples for a group of distinct ones: batches one by one
            out += [rng.choice(n, size=size, replace=False) for _ in range(m)]
            continue
        drawn = rng.choice(n, size=m * size, replace=False)
        cut = drawn[np.argsort(tokens[drawn], kind="stable")].reshape(m, size)
        out += [cut[i] for i in rng.permutation(m)]
    return out


def by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches of indices in order of length (a batch pads little); the caller maps results back."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def freeze_below(model: torch.nn.Module, top: int) -> None:
    """Freeze the body of ``model`` (a `transformers` model with a head) but its top ``top`` transformer
    layers and what follows them (the final norm); the head stays trainable unless it is tied to the
    frozen input embeddings. Frozen lower layers cost no backward pass."""
    body = model.base_model
    assert isinstance(body, torch.nn.Module)
    children = list(body.named_children())
    at = next((i for i, (_, m) in enumerate(children) if isinstance(m, torch.nn.ModuleList)), None)
    if at is None:
        raise ValueError(f"{type(body).__name__} has no list of transformer layers to fine-tune from the top")
    layers: list[torch.nn.Module] = list(children[at][1].children())
    for p in body.parameters():
        p.requires_grad_(False)
    for module in [*layers[len(layers) - min(top, len(layers)) :], *(m for _, m in children[at + 1 :])]:
        for p in module.parameters():
            p.requires_grad_(True)


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


# ---- classification -------------------------------------------------------------------------
def _classification(task, taskset, lm, arch, tokenizer, config, seed) -> dict[str, float]:
    labels = taskset.labels or []
    model = _head_model("classification", lm, arch, tokenizer, num_labels=len(labels))
    device = next(model.parameters()).device
    encode = tokenizer.backend_tokenizer.encode_batch

    def encoded(examples: list[dict]) -> tuple[list[list[int]], list[int]]:
        # Keep the end of long texts: the head reads the last token, where the claim is.
        ids = [e.ids[-task.max_length :] for e in encode([x["text"] for x in examples], add_special_tokens=False)]
        return ids, [labels.index(str(x["label"])) for x in examples]

    train_ids, train_y = encoded(taskset.train)
    eval_ids, eval_y = encoded(taskset.eval)

    def loss_of(indices: np.ndarray) -> torch.Tensor:
        ids, mask = _pad([train_ids[i] for i in indices], tokenizer.pad_token_id, device)
        y = torch.tensor([train_y[i] for i in indices], device=device)
        return F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits.float(), y)

    _train(model, task, [len(r) for r in train_ids], loss_of, config, seed)
    predictions = [0] * len(eval_ids)
    with torch.no_grad():
        for batch in by_length([len(r) for r in eval_ids], task.eval_batch_size):
            ids, mask = _pad([eval_ids[i] for i in batch], tokenizer.pad_token_id, device)
            with autocast_for(device, config):
                labels_of_batch = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
            for i, label in zip(batch, labels_of_batch, strict=True):
                predictions[i] = label
    return by_grade(
        taskset.eval,
        lambda idx: classification_metrics([predictions[i] for i in idx], [eval_y[i] for i in idx], len(labels)),
    )


# ---- extractive QA --------------------------------------------------------------------------
def _qa(task, taskset, lm, arch, tokenizer, config, seed) -> dict[str, float]:
    model = _head_model("qa", lm, arch, tokenizer)
    device = next(model.parameters()).device
    train = [
        f
        for f in qa_features(taskset.train, tokenizer, task.max_length)
        if f["start"] is not None and f["end"] is not None
    ]
    evals = qa_features(taskset.eval, tokenizer, task.max_length)
    if not train:
        raise ValueError(f"task '{task.name}': no training answer fits in max_length={task.max_length} tokens")

    def loss_of(indices: np.ndarray) -> torch.Tensor:
        batch = [train[i] for i in indices]
        ids, mask = _pad([f["ids"] for f in batch], tokenizer.pad_token_id, device)
        out = model(input_ids=ids, attention_mask=mask)
        starts = torch.tensor([f["start"] for f in batch], device=device)
        ends = torch.tensor([f["end"] for f in batch], device=device)
        return (F.cross_entropy(out.start_logits.float(), starts) + F.cross_entropy(out.end_logits.float(), ends)) / 2

    _train(model, task, [len(f["ids"]) for f in train], loss_of, config, seed)
    predictions = [""] * len(evals)
    nll: list[float | None] = [None] * len(evals)
    with torch.no_grad():
        for batch in by_length([len(f["ids"]) for f in evals], task.eval_batch_size):
            ids, mask = _pad([evals[i]["ids"] for i in batch], tokenizer.pad_token_id, device)
            with autocast_for(device, config):
                out = model(input_ids=ids, attention_mask=mask)
            for row, i in enumerate(batch):
                start, end = out.start_logits[row].float(), out.end_logits[row].float()
                predictions[i] = best_span(start, end, evals[i], task.max_answer_tokens)
                nll[i] = span_nll(start, end, evals[i])

    def score(idx: list[int]) -> dict[str, float]:
        scores = squad_metrics([predictions[i] for i in idx], [evals[i]["answers"] for i in idx])
        return {name: value / 100.0 for name, value in scores.items()} | {"perplexity": span_perplexity(nll, idx)}

    return by_grade(taskset.eval, score)


# ---- generation -----------------------------------------------------------------------------
def _generation(task, taskset, lm, arch, tokenizer, config, seed) -> dict[str, float]:
    model = copy.deepcopy(lm)
    encode = tokenizer.backend_tokenizer.encode_batch

    def encoded(examples: list[dict]) -> list[tuple[list[int], int]]:
        """(ids, number of completion tokens); the prompt is cut from the left to fit."""
        prompts = encode([x["prompt"] for x in examples], add_special_tokens=False)
        completions = completion_targets([x["completion"] for x in examples], tokenizer, task.max_length)
        out = []
        for p, target in zip(prompts, completions, strict=True):
            prompt = p.ids[-(task.max_length - len(target)) :]
            out.append((prompt + target, len(target)))
        return out

    train, evals = encoded(taskset.train), encoded(taskset.eval)

    def loss_of(indices: np.ndarray) -> torch.Tensor:
        logits, targets, completion = _completion_logits(model, [train[i] for i in indices], tokenizer.pad_token_id)
        return F.cross_entropy(logits[completion], targets[completion])

    _train(model, task, [len(r[0]) for r in train], loss_of, config, seed)
    rows = generation_rows(model, evals, tokenizer.pad_token_id, task.eval_batch_size, config)
    hits: list[int] | None = None
    if taskset.has_choices:
        choice_rows = []
        prompts = encode([x["prompt"] for x in taskset.eval], add_special_tokens=False)
        for p, x in zip(prompts, taskset.eval, strict=True):
            candidates = completion_targets(x["choices"], tokenizer, task.max_length)
            prompt = p.ids[-(task.max_length - max(map(len, candidates))) :]  # one cut: every candidate sees it
            choice_rows += [(prompt + target, len(target)) for target in candidates]
        nll = [r[0] for r in generation_rows(model, choice_rows, tokenizer.pad_token_id, task.eval_batch_size, config)]
        hits = choice_hits(nll, [x["choices"] for x in taskset.eval], [x["completion"] for x in taskset.eval])

    def score(idx: list[int]) -> dict[str, float]:
        nll, count = sum(rows[i][0] for i in idx), sum(rows[i][1] for i in idx)
        out = {"perplexity": perplexity(nll / count), "exact_match": sum(rows[i][2] for i in idx) / len(idx)}
        if hits is not None:
            out[CHOICE_METRIC] = sum(hits[i] for i in idx) / len(idx)
        return out

    return by_grade(taskset.eval, score)


def choice_hits(nll: list[float], choices: list[list[str]], answers: list[str]) -> list[int]:
    """Multiple choice by likelihood: per example, 1 if its answer is the candidate with the lowest summed NLL
    (``nll`` lists every example's candidates in turn), else 0; a tie with a wrong candidate counts as wrong."""
    out, at = [], 0
    for candidates, answer in zip(choices, answers, strict=True):
        scores = nll[at : at + len(candidates)]
        at += len(candidates)
        best = min(scores)
        winners = [c for c, s in zip(candidates, scores, strict=True) if s == best]
        out.append(int(set(winners) == {answer}))
    if at != len(nll):
        raise ValueError(f"choice_hits: {len(nll)} scores for {at} candidates")
    return out


def _completion_logits(
    model: torch.nn.Module, rows: list[tuple[list[int], int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token logits, the targets, and a mask of the positions that predict completion tokens.

    ``rows`` are (ids, n): the last n ids of each row are its completion.
    """
    device = next(model.parameters()).device
    ids, mask = _pad([r[0] for r in rows], pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    targets = ids[:, 1:]
    completion = torch.zeros_like(targets, dtype=torch.bool)
    for i, (row, n_target) in enumerate(rows):
        completion[i, len(row) - 1 - n_target : len(row) - 1] = True
    return logits, targets, completion


def generation_eval(
    model: torch.nn.Module, rows: list[tuple[list[int], int]], pad_id: int, batch_size: int, config: Pretrain
) -> tuple[float, int, int]:
    """(summed NLL of completion tokens, their count, rows whose greedy completion is exact)."""
    per_row = generation_rows(model, rows, pad_id, batch_size, config)
    return sum(r[0] for r in per_row), sum(r[1] for r in per_row), sum(r[2] for r in per_row)


@torch.no_grad()
def generation_rows(
    model: torch.nn.Module, rows: list[tuple[list[int], int]], pad_id: int, batch_size: int, config: Pretrain
) -> list[tuple[float, int, int]]:
    """Per row: (summed NLL of its completion tokens, their count, 1 if its greedy completion is exact else 0)."""
    device = next(model.parameters()).device
    model.eval()
    out: list[tuple[float, int, int]] = [(0.0, 0, 0)] * len(rows)
    for batch in by_length([len(r[0]) for r in rows], batch_size):
        with autocast_for(device, config):
            logits, targets, completion = _completion_logits(model, [rows[i] for i in batch], pad_id)
        losses = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        nll = losses.masked_fill(~completion, 0.0).sum(dim=1).tolist()
        count = completion.sum(dim=1).tolist()
        exact = ((logits.argmax(-1) == targets) | ~completion).all(dim=1).tolist()
        for i, a, b, c in zip(batch, nll, count, exact, strict=True):
            out[i] = (float(a), int(b), int(c))
    return out
