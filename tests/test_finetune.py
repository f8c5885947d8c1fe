import math

import pytest
import torch

from nas.data.tasks import TaskSet
from nas.protocol import Pretrain, Task
from nas.train.finetune import (
    choice_hits,
    evaluate_tasks,
    finetune,
    freeze_below,
    generation_eval,
)


def test_generation_exact_match_equals_greedy_decoding(micro_pretrained):
    """Teacher-forced exact match (one forward pass) agrees with real greedy generation."""
    result, tokenizer = micro_pretrained
    model = result.model.eval()
    rows, expected = [], 0
    for i in range(12):
        prompt = [
            int(t)
            for t in torch.randint(2, tokenizer.vocab_size, (10 + i,), generator=torch.Generator().manual_seed(i))
        ]
        greedy = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=None,
        )[0, len(prompt) :].tolist()
        target = greedy if i % 3 else greedy[:3] + [(greedy[3] + 1) % tokenizer.vocab_size]  # every third: wrong
        expected += target == greedy
        rows.append((prompt + target, len(target)))
    nll, count, exact = generation_eval(model, rows, tokenizer.pad_token_id, batch_size=5, config=Pretrain())
    assert exact == expected == 8 and count == 12 * 4 and nll > 0


def test_generation_fine_tunes(micro_pretrained):
    from nas.data.tasks import load_task_set

    result, tokenizer = micro_pretrained
    task = Task(
        name="answer",
        kind="generation",
        steps=6,
        batch_size=4,
        max_length=160,
        data={"builtin": {"seed": 3, "train": 16, "eval": 8}},
    )
    scores = finetune(task, load_task_set(task), result.model, result.arch, tokenizer, Pretrain(), seed=1)
    metrics = ("perplexity", "exact_match", "choice_accuracy")
    grades = {f"{g}.{m}" for g in ("near", "mid", "far") for m in metrics}
    assert set(scores) == set(metrics) | grades and 1 < scores["perplexity"] < 1e4
    assert 0 <= scores["exact_match"] <= 1 and 0 <= scores["choice_accuracy"] <= 1


def test_choice_hits_picks_the_likeliest_candidate():
    choices = [[" a.", " b.", " c."], [" x.", " y."], [" p.", " q."]]
    nll = [3.0, 1.0, 2.0, 0.5, 0.5, 4.0, 1.0]  # second example: a tie between its right and wrong candidate
    assert choice_hits(nll, choices, [" b.", " x.", " p."]) == [1, 0, 0]
    assert choice_hits(nll, choices, [" a.", " y.", " q."]) == [0, 0, 1]
    with pytest.raises(ValueError, match="8 scores for 7 candidates"):
        choice_hits([*nll, 1.0], choices, [" b.", " x.", " p."])


def test_generation_choice_accuracy_scores_each_candidate_after_its_prompt(micro_pretrained, monkeypatch):
    """With fine-tuning switched off, each candidate's score is its NLL after its own example's prompt, and an
    example is right when its completion alone scores best."""
    from nas.train import finetune as finetune_module

    result, tokenizer = micro_pretrained
    monkeypatch.setattr(finetune_module, "_train", lambda *args: None)
    seen: list[list[float]] = []
    real_hits = finetune_module.choice_hits
    monkeypatch.setattr(finetune_module, "choice_hits", lambda nll, *rest: seen.append(nll) or real_hits(nll, *rest))
    cases = [
        ("Mira is a baker from Oslo. Mira is a", " baker.", [" baker.", " pilot.", " nurse."]),
        ("Tomas keeps a red kite. Tomas keeps a", " red kite.", [" red kite.", " red."]),
        ("Where is Mira from? Mira is from", " Lima.", [" Oslo.", " Lima.", " Rome.", " Kyiv."]),
        ("What does Tomas keep? Tomas keeps", " a red kite.", [" a red kite.", " a pilot.", " Oslo."]),
    ]
    examples = [
        {"prompt": p, "completion": c, "choices": choices, "grade": f"g{i}"} for i, (p, c, choices) in enumerate(cases)
    ]
    task = Task(name="answer", kind="generation", steps=1, max_length=64)
    scores = finetune(task, TaskSet(examples, examples), result.model, result.arch, tokenizer, Pretrain(), seed=0)
    encode = tokenizer.backend_tokenizer.encode
    expected_nll, expected_hits = [], []
    for prompt, completion, choices in cases:
        nll = []
        for choice in choices:
            target = encode(choice, add_special_tokens=False).ids + [tokenizer.eos_token_id]
            row = (encode(prompt, add_special_tokens=False).ids + target, len(target))
            nll.append(generation_eval(result.model, [row], tokenizer.pad_token_id, 1, Pretrain())[0])
        expected_nll += nll
        expected_hits.append(int(choices[nll.index(min(nll))] == completion))
    assert seen[0] == pytest.approx(expected_nll, rel=1e-4)  # each candidate after its own prompt, in order
    assert [scores[f"g{i}.choice_accuracy"] for i in range(4)] == expected_hits
    assert scores["choice_accuracy"] == sum(expected_hits) / 4


def test_a_files_generation_task_reports_exactly_the_metrics_its_protocol_names(micro_pretrained, monkeypatch):
    from nas.train import finetune as finetune_module

    result, tokenizer = micro_pretrained
    monkeypatch.setattr(finetune_module, "_train", lambda *args: None)
    rows = [{"prompt": "Mira is from", "completion": " Oslo.", "choices": [" Oslo.", " Lima."]}] * 2
    for field, examples in (("choices", rows), (None, [{k: v for k, v in x.items() if k != "choices"} for x in rows])):
        files = {"train": ["completions.jsonl"], "choices_field": field}
        task = Task(name="completion", kind="generation", steps=1, data={"source": "files", "files": files})
        scores = finetune(task, TaskSet(examples, examples), result.model, result.arch, tokenizer, Pretrain(), seed=0)
        assert sorted(scores) == sorted(task.metrics())


def test_classification_learns_an_easy_task(micro_pretrained):
    result, tokenizer = micro_pretrained
    words = ["Oslo", "Lima"]
    examples = [{"text": f"Mira is from {words[i % 2]}.", "label": words[i % 2]} for i in range(64)]
    taskset = TaskSet(examples[:48], examples[48:], labels=["Lima", "Oslo"])
    task = Task(name="easy", kind="classification", steps=40, lr=1e-2, batch_size=8)
    scores = finetune(task, taskset, result.model, result.arch, tokenizer, Pretrain(), seed=0)
    assert scores["accuracy"] == 1.0 and scores["macro_f1"] == 1.0


def test_evaluate_tasks_fine_tunes_every_task_with_its_own_seed(micro_pretrained, micro_protocol):
    from nas.data.tasks import load_task_set

    result, tokenizer = micro_pretrained
    protocol = micro_protocol()
    protocol = protocol.model_copy(update={"tasks": protocol.tasks[1:]})  # qa, answer: indices 0 and 1
    started = []
    scores = evaluate_tasks(protocol, result.model, result.arch, tokenizer, on_task=started.append)
    assert started == ["qa", "answer"]
    span = ("exact_match", "f1", "perplexity")
    qa = [f"qa.{m}" for m in span] + [f"qa.{g}.{m}" for g in ("near", "mid", "far") for m in span]
    metrics = ("perplexity", "exact_match", "choice_accuracy")
    answer = [f"answer.{m}" for m in metrics] + [f"answer.{g}.{m}" for g in ("near", "mid", "far") for m in metrics]
    assert list(scores) == qa + answer
    config = protocol.pretrain
    for index, task in enumerate(protocol.tasks):
        taskset = load_task_set(task, protocol.source)
        alone = finetune(task, taskset, result.model, result.arch, tokenizer, config, config.seed + index + 1)
        assert {f"{task.name}.{k}": v for k, v in alone.items()}.items() <= scores.items()


@pytest.mark.parametrize("family", ["llama", "gpt2", "bloom"])
def test_freeze_below_trains_only_the_top_layers_and_the_head(family):
    import transformers

    from nas.arch import ArchConfig

    arch = ArchConfig.model_validate(
        {"vocab_size": 64, "max_seq_len": 16, "n_layers": 3, "d_model": 16, "n_heads": 2, "family": family}
    )
    model = transformers.AutoModelForQuestionAnswering.from_config(arch.to_hf_config(pad_token_id=0, eos_token_id=1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    freeze_below(model, 1)
    out = model(input_ids=torch.randint(2, 64, (2, 12)))
    (out.start_logits.sum() + out.end_logits.sum()).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    layers = {n.split(".")[2] for n in changed if ".layers." in n or ".h." in n}
    assert layers == {"2"}  # the top layer only; the embeddings and layers 0 and 1 are frozen
    assert any(n.startswith("qa_outputs") for n in changed)
    assert not any("embed" in n or "wte" in n or "wpe" in n for n in changed), changed
    assert all(p.grad is None for n, p in model.named_parameters() if ".0." in n)  # no backward below the top
    freeze_below(model, 10)  # more than the model has: every layer trains
    assert all(p.requires_grad for n, p in model.named_parameters() if ".0." in n)


def test_qa_learns_an_easy_task_and_its_span_perplexity_falls_below_a_uniform_guess(micro_pretrained):
    """The answer is always the story's last word: fine-tuning finds it, and the gold span's perplexity (a
    softmax over the context's tokens only) ends far below the uniform guess's, which an untrained head scores."""
    from nas.train.baselines import task_baselines

    result, tokenizer = micro_pretrained
    cities = ["Oslo", "Lima", "Rome", "Kyiv"]
    examples = []
    for i in range(64):
        context = f"Tomas keeps a red kite. Mira is from {cities[i % 4]}"
        answer = {"text": [cities[i % 4]], "answer_start": [context.rindex(cities[i % 4])]}
        examples.append({"question": "Where is Mira from?", "context": context, "answers": answer})
    taskset = TaskSet(examples[:48], examples[48:])
    task = Task(name="easy", kind="qa", steps=40, lr=1e-2, batch_size=8)
    uniform = task_baselines(task, taskset, tokenizer)["perplexity"].value
    untrained = finetune(
        task.model_copy(update={"steps": 1, "lr": 1e-9}),
        taskset,
        result.model,
        result.arch,
        tokenizer,
        Pretrain(),
        seed=0,
    )
    trained = finetune(task, taskset, result.model, result.arch, tokenizer, Pretrain(), seed=0)
    assert untrained["perplexity"] == pytest.approx(uniform, rel=0.2)
    assert trained["f1"] == 1.0 and trained["perplexity"] < 1.5 < uniform / 4


def test_qa_span_perplexity_is_nan_where_every_held_out_answer_is_cut_off(micro_pretrained):
    """Answers past max_length cannot be scored as spans: the perplexity is NaN, EM and F1 are still reported."""
    result, tokenizer = micro_pretrained
    short = "Mira is from Oslo"
    long = "Tomas keeps a red kite. " * 6 + "Mira is from Oslo"
    train = [{"question": "Where?", "context": short, "answers": {"text": ["Oslo"], "answer_start": [13]}}] * 8
    evals = [{"question": "Where?", "context": long, "answers": {"text": ["Oslo"], "answer_start": [len(long) - 4]}}]
    task = Task(name="cut", kind="qa", steps=2, batch_size=4, max_length=24)
    scores = finetune(task, TaskSet(train, evals), result.model, result.arch, tokenizer, Pretrain(), seed=0)
    assert math.isnan(scores["perplexity"]) and scores["f1"] == 0.0 and set(scores) == set(task.metrics())


def test_repeats_report_the_mean_of_runs_with_their_own_seeds(micro_pretrained):
    from nas.data.tasks import load_task_set
    from nas.train.finetune import REPEAT_SEED_STRIDE

    result, tokenizer = micro_pretrained
    task = Task(name="qa", kind="qa", steps=3, batch_size=4, data={"builtin": {"seed": 2, "train": 16, "eval": 6}})
    taskset = load_task_set(task)
    runs = [
        finetune(task, taskset, result.model, result.arch, tokenizer, Pretrain(), seed=5 + REPEAT_SEED_STRIDE * k)
        for k in range(3)
    ]
    assert runs[0] != runs[1]  # the seeds differ, so do the runs
    mean = finetune(
        task.model_copy(update={"repeats": 3}), taskset, result.model, result.arch, tokenizer, Pretrain(), seed=5
    )
    assert mean == pytest.approx({name: sum(r[name] for r in runs) / 3 for name in runs[0]}, nan_ok=True)


def test_a_task_fine_tuning_only_its_head_keeps_the_body(micro_pretrained):
    from nas.data.tasks import load_task_set

    result, tokenizer = micro_pretrained
    body = {n: p.detach().clone() for n, p in result.model.base_model.named_parameters()}
    task = Task(name="qa", kind="qa", steps=4, batch_size=4, data={"builtin": {"seed": 2, "train": 16, "eval": 6}})
    probe = task.model_copy(update={"train_layers": 0})
    taskset = load_task_set(task)
    full = finetune(task, taskset, result.model, result.arch, tokenizer, Pretrain(), seed=1)
    head = finetune(probe, taskset, result.model, result.arch, tokenizer, Pretrain(), seed=1)
    assert set(head) == set(full) and 0 <= head["f1"] <= 1
    assert all(torch.equal(p, body[n]) for n, p in result.model.base_model.named_parameters())  # a copy is tuned


def test_length_grouped_batches_pad_less_and_keep_plain_draws_at_grouping_one():
    import numpy as np

    from nas.train.finetune import length_grouped_batches

    lengths = [int(x) for x in np.random.default_rng(0).integers(20, 250, size=200)]
    plain = length_grouped_batches(lengths, 8, 30, 1, seed=3)
    rng = np.random.default_rng(3)  # grouping 1: exactly the plain seeded draws
    assert all((b == rng.choice(200, size=8, replace=False)).all() for b in plain)
    grouped = length_grouped_batches(lengths, 8, 30, 4, seed=3)
    assert len(grouped) == 30 and all(len(b) == 8 and len(set(b.tolist())) == 8 for b in grouped)
    for first in range(0, 28, 4):  # a group's 4 batches hold 32 distinct examples
        assert len({int(i) for b in grouped[first : first + 4] for i in b}) == 32

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths[i] for b in batches for i in b)

    assert padded(grouped) < 1.25 < 1.5 < padded(plain)
    few = length_grouped_batches(lengths[:10], 8, 5, 4, seed=0)  # too few for a group: one batch at a time
    assert len(few) == 5 and all(len(set(b.tolist())) == 8 for b in few)


def test_evaluation_in_length_order_maps_results_back_to_their_rows(micro_pretrained):
    from nas.train.finetune import by_length, generation_rows

    assert sorted(i for b in by_length([5, 1, 4, 1, 9], 2) for i in b) == [0, 1, 2, 3, 4]
    assert by_length([5, 1, 4, 1, 9], 2) == [[1, 3], [2, 0], [4]]
    result, tokenizer = micro_pretrained
    gen = torch.Generator().manual_seed(0)
    rows = [
        ([int(t) for t in torch.randint(2, tokenizer.vocab_size, (4 + (7 * i) % 13,), generator=gen)], 2)
        for i in range(9)
    ]
    model = result.model.eval()
    with torch.no_grad():  # each row's completion NLL, computed alone and in input order
        direct = []
        for ids, n in rows:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits[-n:], torch.tensor(ids[-n:]), reduction="sum")
            direct.append(float(nll))
    batched = generation_rows(model, rows, tokenizer.pad_token_id, 4, Pretrain())
    assert [r[0] for r in batched] == pytest.approx(direct, rel=1e-4) and all(r[1] == 2 for r in batched)
    assert len({round(v, 3) for v in direct}) == len(rows)
