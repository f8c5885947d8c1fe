"""Fine-tuning task sets: train and held-out examples for classification, extractive QA and generation.

Examples are plain dicts: classification ``{"text", "label"}``; qa (SQuAD) ``{"id", "title",
"context", "question", "answers": {"text": [...], "answer_start": [...]}}``; generation
``{"prompt", "completion"}``, with ``"choices"`` (candidate completions, the completion among them) where the
data gives them.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.data.corpus import infer_format, load_table
from nas.errors import NasInputError
from nas.protocol import FilesTaskData, Task
from nas.userfiles import compile_line_pattern, expand_paths, match_lines, read_text

__all__ = ["TaskSet", "load_task_set", "read_squad"]


@dataclass
class TaskSet:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    labels: list[str] | None = None  # classification: label names, index = class id

    @property
    def has_choices(self) -> bool:
        """Generation: every held-out example lists candidate completions (scored as multiple choice)."""
        return all("choices" in x for x in self.eval)


def load_task_set(task: Task, source: str = "<protocol>") -> TaskSet:
    """The train and held-out examples of ``task``; problems name the key ``tasks.<name>.data...`` (a task is
    addressed by name, as in ``--set``)."""
    key = f"tasks.{task.name}.data"
    if task.data.source == "builtin":
        train, eval_ = _builtin(task)
    else:
        assert task.data.files is not None
        train, eval_ = _files(task, task.data.files, source, f"{key}.files")
    if not train or not eval_:
        raise NasInputError(
            source, [(key, f"task '{task.name}' needs train and eval examples, got {len(train)}/{len(eval_)}")]
        )
    labels = None
    if task.kind == "classification":
        labels = sorted({str(e["label"]) for e in train} | {str(e["label"]) for e in eval_})
        if len(labels) < 2:
            raise NasInputError(source, [(key, f"task '{task.name}' needs at least 2 labels, got {labels}")])
    return TaskSet(train, eval_, labels)


def _builtin(task: Task) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from nas.data import builtin

    make = {
        "classification": builtin.classification_examples,
        "qa": builtin.qa_examples,
        "generation": builtin.generation_examples,
    }[task.kind]
    spec = task.data.builtin
    # Held-out examples come from another seed: other stories, not other questions on the same ones.
    return make(spec.seed, spec.train, spec.grades), make(spec.seed + 1_000_003, spec.eval, spec.grades)


def _files(task: Task, files: FilesTaskData, source: str, key: str) -> tuple[list[dict], list[dict]]:
    train = _read(task, files, files.train, source, f"{key}.train")
    if files.eval:
        eval_ = _read(task, files, files.eval, source, f"{key}.eval")
    else:
        train, eval_ = _hold_out(train, files)
    if files.max_train:
        train = train[: files.max_train]
    if files.max_eval:
        eval_ = eval_[: files.max_eval]
    return train, eval_


def _hold_out(examples: list[dict], files: FilesTaskData) -> tuple[list[dict], list[dict]]:
    """A seeded split; with split_by: article, every example of one title lands on the same side."""
    rng = random.Random(files.seed)
    if files.split_by == "article":
        titles = sorted({str(e.get("title", "")) for e in examples})
        rng.shuffle(titles)
        n_eval = max(1, round(len(titles) * files.eval_fraction))
        held_titles = set(titles[:n_eval])
        return [e for e in examples if str(e.get("title", "")) not in held_titles], [
            e for e in examples if str(e.get("title", "")) in held_titles
        ]
    order = list(range(len(examples)))
    rng.shuffle(order)
    n_eval = max(1, round(len(examples) * files.eval_fraction))
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def _read(task: Task, files: FilesTaskData, paths: list[str], source: str, key: str) -> list[dict]:
    """Examples from ``paths`` (glob patterns expanded); ``key`` is the protocol key naming them (...files.train
    or ...files.eval)."""
    paths = expand_paths(paths, source, key)
    section = key.rsplit(".", 1)[0]
    squad = task.kind == "qa" and Path(paths[0]).suffix.lower() == ".json"
    fmt = files.format or ("squad" if squad else infer_format(paths[0], None))
    if fmt == "squad":
        return [example for path in paths for example in read_squad(path, source, key, files.encoding)]
    if task.kind == "classification" and fmt == "text":
        return _read_labeled_lines(files, paths, source, key)
    fields = {
        "classification": {"text": files.text_field, "label": files.label_field},
        "generation": {"prompt": files.prompt_field, "completion": files.completion_field},
        "qa": {"context": "context", "question": "question", "answers": "answers"},
    }[task.kind]
    if task.kind == "generation" and files.choices_field is not None:
        fields["choices"] = files.choices_field
    # Each file is read on its own, so that a problem names the file and its row.
    out, problems = [], []
    for path in paths:
        rows = _rows(load_table([path], fmt, source, key, encoding=files.encoding), fields, path, source, section)
        found = (_row_problem(row, fields, f"row {i} of {path}", section, key) for i, row in enumerate(rows, start=1))
        problems += [problem for problem in found if problem]
        out += rows
    if problems:
        more = [(problems[4][0], f"... and {len(problems) - 5} more rows like these")] if len(problems) > 5 else []
        raise NasInputError(source, problems[:5] + more)
    return out


def _rows(table: Any, fields: dict[str, str], path: str, source: str, section: str) -> list[dict]:
    """The examples of a `datasets` table: ``{name: row[field]}`` for each of ``fields``, and the row's title."""
    columns = table.column_names
    for name, field in fields.items():
        if field not in columns:
            problem = f"no field '{field}' in {path}; fields: {', '.join(columns)}"
            raise NasInputError(source, [(f"{section}.{name}_field", problem)])
    rows = table.to_list()
    return [{name: row[field] for name, field in fields.items()} | {"title": row.get("title", "")} for row in rows]


def _shown(value: Any) -> str:
    """A value of a data file as a problem names it: ``null``, or its type and (short) repr."""
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


TEXT_NAMES = ("text", "prompt", "completion", "context", "question")
QA_NAMES = ("context", "question", "answers")  # fixed field names, under the files key (no *_field key)


def _row_problem(row: dict, fields: dict[str, str], where: str, section: str, key: str) -> tuple[str, str] | None:
    """The first thing wrong with the values of one example read from a table (``fields``: name -> the file's
    field), with the protocol key that names its field (``key`` for qa's fixed fields), else None."""
    for name, field in fields.items():
        if problem := _value_problem(name, field, row):
            return (key if name in QA_NAMES else f"{section}.{name}_field", f"{where}: {problem}")
    return None


def _value_problem(name: str, field: str, row: dict) -> str | None:
    """What is wrong with ``row[name]`` (the file's ``field``): texts must be strings, a label a string or a
    number, qa answers SQuAD's ``{text: [...], answer_start: [...]}`` found in the context, candidate
    completions distinct strings holding the completion."""
    value = row[name]
    if name in TEXT_NAMES and not isinstance(value, str):
        return f"'{field}' must be a string, got {_shown(value)}"
    if name == "label" and not (isinstance(value, str) or (isinstance(value, int | float) and math.isfinite(value))):
        return f"'{field}' must be a string or a number, got {_shown(value)}"
    if name == "answers":
        return _answers_problem(value, row["context"])
    if name == "choices":
        return _choices_problem(row)
    return None


def _answers_problem(answers: Any, context: Any) -> str | None:
    """What is wrong with a qa example's answers: SQuAD's ``{text: [...], answer_start: [...]}``, each answer a
    string found at its offset in the context."""
    shape = "'answers' must be a mapping {text: [strings], answer_start: [offsets]}"
    if not isinstance(answers, dict) or not all(isinstance(answers.get(k), list) for k in ("text", "answer_start")):
        return f"{shape}, got {_shown(answers)}"
    texts, starts = answers["text"], answers["answer_start"]
    if len(texts) != len(starts):
        return f"{shape}: {len(texts)} texts but {len(starts)} offsets"
    for text, start in zip(texts, starts, strict=True):
        if not isinstance(text, str):
            return f"{shape}: an answer text is {_shown(text)}"
        at_offset = isinstance(start, int) and isinstance(context, str) and context[start : start + len(text)] == text
        if not at_offset:
            return f"the answer {text!r} is not at answer_start {start!r} of its context"
    return None


def _choices_problem(example: dict) -> str | None:
    """What is wrong with an example's candidate completions: they must be distinct strings, in a list that holds
    the example's completion."""
    choices = example["choices"]
    if choices is None:
        return "has no choices"
    if not isinstance(choices, list):
        return f"the choices must be a list of strings, got {type(choices).__name__}"
    if strange := [c for c in choices if not isinstance(c, str)]:
        return f"the choices must be strings, got {_shown(strange[0])}"
    if len(set(choices)) < len(choices):
        return f"the choices repeat {next(c for c in choices if choices.count(c) > 1)!r}"
    if example["completion"] not in choices:
        return f"the completion {example['completion']!r} is not among its choices"
    return None


def _read_labeled_lines(files: FilesTaskData, paths: list[str], source: str, key: str) -> list[dict]:
    where = key.rsplit(".", 1)[0] + ".line_pattern"
    if not files.line_pattern:
        example = "'^(?P<label>\\S+) (?P<text>.*)$'"
        problem = f"text files for classification need a line_pattern with named groups text and label, e.g. {example}"
        raise NasInputError(source, [(where, problem)])
    try:
        pattern = compile_line_pattern(files.line_pattern, ("text", "label"))
    except ValueError as exc:
        raise NasInputError(source, [(where, str(exc))]) from None
    out = []
    for path in paths:
        lines = read_text(path, source, key, files.encoding).splitlines()
        for match in match_lines(pattern, lines, path, source, where):
            if match:
                out.append({"text": match["text"], "label": match["label"]})
    return out


def read_squad(
    path: str, source: str = "<protocol>", key: str = "files", encoding: str = "utf-8"
) -> list[dict[str, Any]]:
    """Flatten a SQuAD v1.1 JSON file into one example per question (title = article title); every answer's
    offset is checked against its context."""
    text = read_text(path, source, key, encoding)
    try:
        articles = json.loads(text)["data"]
        out = []
        for article in articles:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = {
                        "text": [str(a["text"]) for a in qa["answers"]],
                        "answer_start": [a["answer_start"] for a in qa["answers"]],
                    }
                    for answer, start in zip(answers["text"], answers["answer_start"], strict=True):
                        if not (isinstance(start, int) and context[start : start + len(answer)] == answer):
                            raise ValueError(
                                f"question {qa['id']!r}: answer {answer!r} is not at answer_start {start!r} "
                                "of its context"
                            )
                    out.append(
                        {
                            "id": qa["id"],
                            "title": article.get("title", ""),
                            "context": str(context),
                            "question": str(qa["question"]),
                            "answers": answers,
                        }
                    )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
        raise NasInputError(source, [(key, f"{path} is not SQuAD v1.1 JSON ({what})")]) from None
    return out
