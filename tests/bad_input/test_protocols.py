"""Bad trial protocols, --set values and data files: every case ends in exit 2 naming the file and key, no
traceback, within 10 s (issue 15). Data files are read before any training (nas.preflight), so a bad
task file costs seconds, not one pretraining per trial."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from nas.resources import resolve
from tests.bad_input.harness import Case, check
from tests.bad_input.test_spaces import BOMB

CPU_TINY = resolve("trials", "cpu-tiny").read_text()


def _with(old: str, new: str) -> str:
    assert old in CPU_TINY, old
    return CPU_TINY.replace(old, new)


# ---- the file itself: `nas protocols validate FILE` and `nas protocols show FILE` ------------------
FILES: list[tuple[str, str | bytes, str]] = [
    ("alias bomb", BOMB, "YAML expands to more than"),
    (
        "alias bomb under a key",
        CPU_TINY + "extra:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines()),
        "YAML expands to more than",
    ),
    ("recursive alias", "pretrain: &p\n  x: *p\n", "YAML alias refers to a collection that contains it"),
    ("deep flow", "pretrain: " + "[" * 3000 + "]" * 3000, "YAML nested more than 64 levels deep"),
    ("deep mapping", "pretrain: " + "{a: " * 80 + "1" + "}" * 80, "YAML nested more than"),
    ("latin-1", _with("description: >", "description: > café").encode("latin-1"), "not utf-8 text: byte"),
    ("utf-16", CPU_TINY.encode("utf-16"), "it looks like UTF-16"),
    ("gzip", gzip.compress(CPU_TINY.encode()), "it looks gzip-compressed"),
    ("binary", bytes(range(256)) * 3, "not utf-8 text"),
    ("not a mapping", "- 1\n", "must be a YAML mapping"),
    ("not YAML", "pretrain: {seq_len: [1\n", "not valid YAML at line"),
    ("inf budget", _with("budget: {tokens: 300000}", "budget: {tokens: .inf}"), "pretrain.budget.tokens"),
    ("inf lr", _with("lr: 3.0e-3, betas", "lr: .inf, betas"), "pretrain.optimizer.lr: Input should be a finite"),
    ("nan lr", _with("lr: 3.0e-3, betas", "lr: .nan, betas"), "pretrain.optimizer.lr: Input should be a finite"),
    ("beta 1", _with("betas: [0.9, 0.95]", "betas: [0.9, 1.0]"), "pretrain.optimizer.betas: each beta must lie in"),
    ("beta negative", _with("betas: [0.9, 0.95]", "betas: [-0.1, 0.95]"), "pretrain.optimizer.betas: each beta"),
    ("beta nan", _with("betas: [0.9, 0.95]", "betas: [.nan, 0.95]"), "pretrain.optimizer.betas"),
    ("betas three", _with("betas: [0.9, 0.95]", "betas: [0.9, 0.95, 0.99]"), "pretrain.optimizer.betas"),
    ("tokens true", _with("budget: {tokens: 300000}", "budget: {tokens: true}"), "expected a number, got true"),
    (
        "objective weight nan",
        _with("predicted_val_loss: minimize", "score: {direction: minimize, weights: {val_loss: .nan}}"),
        "objectives.score",
    ),
]


def _file_cases() -> dict[str, Case]:
    cases = {}
    for name, content, fragment in FILES:
        for verb in (("trials", "validate"), ("trials", "show")):
            kwargs = {"data": content} if isinstance(content, bytes) else {"text": content}
            cases[f"{verb[1]}: {name}"] = Case((*verb, "{path}"), ("{path}", fragment), name="protocol.yaml", **kwargs)
    return cases


# ---- values: `nas protocols show cpu-tiny --set KEY=VALUE` ----------------------------------------
SETS: list[tuple[str, str]] = [
    ("pretrain.budget.tokens=.inf", "pretrain.budget.tokens"),
    ("pretrain.budget.tokens=true", "pretrain.budget.tokens: expected a number, got true"),
    ("pretrain.budget.tokens=0", "pretrain.budget.tokens"),
    ("pretrain.budget.tokens=-5", "pretrain.budget.tokens"),
    ("pretrain.budget.tokens=1" + "0" * 30, "pretrain.budget.tokens: Input should be less than or equal"),
    ("pretrain.budget.tokens=lots", "pretrain.budget.tokens"),
    ("pretrain.budget.tokens=[1]", "pretrain.budget.tokens"),
    ("pretrain.budget.tokens={a: 1}", "pretrain.budget.tokens"),
    ("pretrain.budget={tokens: 1, flops: 2}", "pretrain.budget: give exactly one"),
    ("pretrain.budget={flops: .inf}", "pretrain.budget.flops"),
    ("pretrain.budget={flops: 1.0e99}", "pretrain.budget.flops: Input should be less than or equal"),
    ("pretrain.budget={seconds: .nan}", "pretrain.budget.seconds"),
    ("pretrain.budget={seconds: -1}", "pretrain.budget.seconds"),
    ("pretrain.budget={seconds: true}", "pretrain.budget.seconds: expected a number"),
    ("pretrain.optimizer.lr=.inf", "pretrain.optimizer.lr: Input should be a finite number"),
    ("pretrain.optimizer.lr=-.inf", "pretrain.optimizer.lr"),
    ("pretrain.optimizer.lr=.nan", "pretrain.optimizer.lr: Input should be a finite number"),
    ("pretrain.optimizer.lr=0", "pretrain.optimizer.lr"),
    ("pretrain.optimizer.lr=1.0e9", "pretrain.optimizer.lr: Input should be less than or equal to 10"),
    ("pretrain.optimizer.lr=true", "pretrain.optimizer.lr: expected a number, got true"),
    ("pretrain.optimizer.betas=[0.9, 1.5]", "pretrain.optimizer.betas: each beta must lie in [0, 1)"),
    ("pretrain.optimizer.betas=[1, 1]", "pretrain.optimizer.betas: each beta must lie in [0, 1)"),
    ("pretrain.optimizer.betas=[0.9]", "pretrain.optimizer.betas"),
    ("pretrain.optimizer.betas=[.nan, .nan]", "pretrain.optimizer.betas"),
    ("pretrain.optimizer.betas=[true, false]", "pretrain.optimizer.betas"),
    ("pretrain.optimizer.eps=.inf", "pretrain.optimizer.eps"),
    ("pretrain.optimizer.eps=5", "pretrain.optimizer.eps: Input should be less than or equal to 1"),
    ("pretrain.optimizer.weight_decay=.inf", "pretrain.optimizer.weight_decay"),
    ("pretrain.optimizer.weight_decay=-1", "pretrain.optimizer.weight_decay"),
    ("pretrain.schedule.warmup_fraction=.nan", "pretrain.schedule.warmup_fraction"),
    ("pretrain.schedule.warmup_fraction=1.5", "pretrain.schedule.warmup_fraction"),
    ("pretrain.schedule.min_lr_ratio=.inf", "pretrain.schedule.min_lr_ratio"),
    ("pretrain.schedule={kind: cosine, cooldowns: [0.5]}", "pretrain.schedule: cooldowns need kind: wsd"),
    ("pretrain.schedule.kind=cosinus", "pretrain.schedule.kind"),
    ("pretrain.seq_len=true", "pretrain.seq_len: expected a number"),
    ("pretrain.seq_len=0", "pretrain.seq_len"),
    ("pretrain.seq_len=1" + "0" * 20, "pretrain.seq_len: Input should be less than or equal"),
    ("pretrain.seq_len=100", "pretrain: batch_tokens=2048 must be a multiple of seq_len=100"),
    ("pretrain.batch_tokens=.inf", "pretrain.batch_tokens"),
    ("pretrain.micro_batch_size=0", "pretrain.micro_batch_size"),
    ("pretrain.grad_clip=.nan", "pretrain.grad_clip"),
    ("pretrain.grad_clip=-1", "pretrain.grad_clip"),
    ("pretrain.seed=-1", "pretrain.seed: Input should be greater than or equal to 0"),
    ("pretrain.seed=" + str(2**32), "pretrain.seed: Input should be less than or equal to 4294967295"),
    ("pretrain.seed=true", "pretrain.seed: expected a number"),
    ("pretrain.seed=1.5", "pretrain.seed"),
    ("pretrain.eval_every=0", "pretrain.eval_every"),
    ("pretrain.eval_tokens=.inf", "pretrain.eval_tokens"),
    ("pretrain.device=tpu", "pretrain.device"),
    ("pretrain.dtype=float8", "pretrain.dtype"),
    ("pretrain.compile=maybe", "pretrain.compile"),
    ("pretrain.nonsense=1", "pretrain.nonsense: unknown key 'nonsense'"),
    ("pretrain.budget.tokens.x=1", "pretrain.budget.tokens: is a value"),
    ("latency.repeats=1", "latency.repeats"),
    ("latency.new_tokens=.inf", "latency.new_tokens"),
    ("tokenizer.vocab_size=10", "tokenizer.vocab_size"),
    ("tokenizer.vocab_size=true", "tokenizer.vocab_size: expected a number"),
    ("tokenizer.kind=path", "tokenizer: kind 'path' needs 'path'"),
    ("data.source=files", "data: source 'files' needs a 'files' section"),
    ("data.source=hub", "data: source 'hub' needs a 'hub' section"),
    ("data.builtin.documents=5", "data.builtin.documents"),
    ("data.builtin.documents=.inf", "data.builtin.documents"),
    ("data.builtin.seed=-3", "data.builtin.seed"),
    ("data.validation.fraction=0", "data.validation.fraction"),
    ("data.validation.fraction=.nan", "data.validation.fraction"),
    ("data.cleaning.min_chars=-1", "data.cleaning.min_chars"),
    ("data.cleaning.normalize=nfkd", "data.cleaning.normalize"),
    ("target.tokens=.inf", "target.tokens"),
    ("target.flops=.nan", "target.flops"),
    ("target.tokens_per_param=.inf", "target.tokens_per_param"),
    ("target={tokens: 5, flops: 5}", "target: give tokens or flops, not both"),
    ("target.prediction=trend", "target.prediction"),
    ("target.own_weight=1.5", "target.own_weight"),
    ("target.own_weight=.nan", "target.own_weight"),
    ("target.reach_penalty=-0.1", "target.reach_penalty"),
    ("target.reach_penalty=[0.1]", "target.reach_penalty"),
    ("pretrain.rungs=[2, 5]", "pretrain: rungs: give increasing multiples of the budget starting at 1"),
    ("pretrain.rungs=[1, .nan]", "pretrain.rungs.1"),
    ("pretrain.rungs=[1, 1e6]", "pretrain: rungs: the top rung may be at most 1000"),
    ("pretrain.rungs=5", "pretrain.rungs"),
    ("target.rung_weights=[0, 1]", "target.rung_weights: give one weight per rung (no pretrain.rungs)"),
    ("target.rung_weights=[0, 2]", "target: rung_weights: each weight must lie in [0, 1]"),
    ("task_gate={quantile: 0}", "task_gate.quantile"),
    ("task_gate={quantile: 0.5, min_trials: -1}", "task_gate.min_trials"),
    ("task_gate={min_trials: 3}", "task_gate.quantile"),
    ("tasks.qa.steps=0", "tasks.1.steps"),
    ("tasks.qa.steps=true", "tasks.1.steps: expected a number"),
    ("tasks.qa.steps=1" + "0" * 20, "tasks.1.steps: Input should be less than or equal"),
    ("tasks.qa.lr=.inf", "tasks.1.lr: Input should be a finite number"),
    ("tasks.qa.lr=1000", "tasks.1.lr: Input should be less than or equal to 10"),
    ("tasks.qa.weight_decay=.nan", "tasks.1.weight_decay"),
    ("tasks.qa.batch_size=0", "tasks.1.batch_size"),
    ("tasks.qa.repeats=0", "tasks.1.repeats"),
    ("tasks.qa.repeats=65", "tasks.1.repeats: Input should be less than or equal to 64"),
    ("tasks.qa.max_length=2", "tasks.1.max_length"),
    ("tasks.qa.kind=regression", "tasks.1.kind"),
    ("tasks.qa.enabled=perhaps", "tasks.1.enabled"),
    ("tasks.qa.data.builtin.train=0", "tasks.1.data.builtin.train"),
    ("tasks.qa.data.builtin.grades=[near, near]", "grades: each grade once"),
    ("tasks.qa.data.builtin.grades=[close]", "tasks.1.data.builtin.grades"),
    ("tasks.qa.data.source=files", "source 'files' needs a 'files' section"),
    (
        "tasks.qa.data={source: files, files: {train: [x.json], choices_field: c}}",
        "tasks.1: data.files.choices_field: only a generation task has candidate completions, not qa",
    ),
    ("tasks.nope.steps=3", "tasks.nope: no item 'nope'"),
    ("tasks.qa=3", "tasks.qa: name a key inside the list item"),
    ("objectives.predicted_val_loss.direction=up", "objectives.predicted_val_loss: is a value"),
    ("objectives.score={direction: maximize, weights: {val_loss: .inf}}", "objectives.score.weights.val_loss"),
    ("objectives.score={direction: maximize, weights: {val_loss: .nan}}", "objectives.score.weights.val_loss"),
    ("objectives.score={direction: maximize, weights: {val_loss: true}}", "objectives.score.weights.val_loss"),
    ("x=" + BOMB.splitlines()[0].split(": ", 1)[1], "--set: x: unknown key 'x'"),
    ("pretrain.budget=" + "[" * 500 + "]" * 500, "YAML nested more than 64 levels deep"),
    ("pretrain.budget={a: &a [1,1,1,1,1,1,1,1,1,1], b: " + "[*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]" + "}", "pretrain.budget"),
    ("nokey", "--set: 'nokey': expected key.path=value"),
    ("=3", "--set: '=3': expected key.path=value"),
]


def _set_cases() -> dict[str, Case]:
    return {
        f"--set {item[:60]}": Case(("trials", "show", "cpu-tiny", "--set", item), (fragment,))
        for item, fragment in SETS
    }


# ---- --set into a file whose values are of unexpected types: `nas protocols show/run FILE --set KEY=VALUE` ----
TASKS_AT = CPU_TINY.index("tasks:\n")
OBJECTIVES_AT = CPU_TINY.index("objectives:\n")


def _tasks(text: str) -> str:
    """cpu-tiny with its task list replaced by ``text`` (YAML)."""
    return CPU_TINY[:TASKS_AT] + f"tasks: {text}\n" + CPU_TINY[OBJECTIVES_AT:]


# (id, file text, --set item, fragments)
FILE_SETS: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "a date in the file",
        _with("  seed: 0\n", "  seed: 2024-01-01\n"),
        "pretrain.eval_every=5",
        ("{path}: pretrain.seed: Input should be a valid integer (got datetime.date(2024, 1, 1))",),
    ),
    (
        "a date in a task",
        _with("    steps: 100\n", "    steps: 2024-01-01\n"),
        "tasks.qa.lr=1e-3",
        ("{path}: tasks.1.steps: Input should be a valid integer",),
    ),
    (
        "a timestamp in the file",
        _with("cache_dir: runs/cache\n", "cache_dir: 2024-01-01 10:00:00\n"),
        "pretrain.seed=3",
        ("{path}: cache_dir: Input should be a valid string",),
    ),
    ("a task a number, by index", _tasks("[3]"), "tasks.0.steps=5", ("--set: tasks.0: is a value (3), not a section",)),
    ("a task a string, by index", _tasks("[qa]"), "tasks.0.steps=5", ("--set: tasks.0: is a value ('qa')",)),
    ("a task null, by index", _tasks("[null]"), "tasks.0.steps=5", ("--set: tasks.0: is a value (None)",)),
    (
        "a task a number, by name",
        _tasks("[3]"),
        "tasks.qa.steps=5",
        ("--set: tasks.qa: no item 'qa' (item 0 is 3, not a mapping with a name)",),
    ),
    (
        "a task a string, by name",
        _tasks("[qa]"),
        "tasks.qa.steps=5",
        ("--set: tasks.qa: no item 'qa' (item 0 is 'qa', not a mapping with a name)",),
    ),
]


def _file_set_cases() -> dict[str, Case]:
    cases = {}
    for name, text, item, fragments in FILE_SETS:
        for verb in ("show", "run"):
            argv = ("trials", verb, "{path}", "--set", item)
            cases[f"{verb} --set: {name}"] = Case(argv, fragments, text=text, name="protocol.yaml")
    return cases


# ---- a cache_dir that is, or lies under, a file: refused before the corpus is read ----------------------
def _cache_cases() -> dict[str, Case]:
    cases = {}
    for label, cache, fragment in (
        ("under a file", "{path}/cache", "cache_dir: {path}/cache: lies under {path}, which is a file"),
        ("a file", "{path}", "cache_dir: {path}: is a file, not a folder"),
        ("a name too long", "{tmp}/" + "c" * 300, "cache_dir: {tmp}/ccc"),
    ):
        for verb in (
            ("trials", "run", "cpu-tiny"),
            ("search", "--study", "s", "--runs-dir", "{tmp}/runs", "--n-trials", "1", "--quiet"),
        ):
            argv = (*verb, "--set", f"cache_dir={cache}")
            cases[f"{verb[0]}: cache_dir {label}"] = Case(argv, (fragment,), text="a file\n", name="afile")
    return cases


# ---- data files: `nas protocols validate FILE --data` and `nas protocols run FILE` ------------------
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly vex the jolly king".split()


def _good_data(tmp: Path) -> None:
    paragraphs = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(60)) + f" {i}." for i in range(400)]
    (tmp / "corpus.txt").write_text("\n\n".join(paragraphs))
    (tmp / "sentiment.txt").write_text(
        "".join(f"{'pos' if i % 2 else 'neg'} a sentence number {i}\n" for i in range(40))
    )
    context = "Ada lives in Oslo and works as a baker."
    squad = {
        "data": [
            {
                "title": f"t{i}",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": f"q{i}",
                                "question": "Where does Ada live?",
                                "answers": [{"text": "Oslo", "answer_start": 13}],
                            }
                        ],
                    }
                ],
            }
            for i in range(10)
        ]
    }
    (tmp / "squad.json").write_text(json.dumps(squad))
    (tmp / "completions.jsonl").write_text(
        "".join(
            json.dumps({"prompt": f"Count {i}:", "completion": f" {i + 1}", "choices": [f" {i + 1}", f" {i + 2}"]})
            + "\n"
            for i in range(30)
        )
    )


PROTOCOL = """\
name: files-test
cache_dir: {tmp}/cache
data:
  source: files
  files: {paths: [CORPUS], sample_by: paragraph}
  cleaning: {min_chars: 1}
tokenizer: {vocab_size: 300}
pretrain: {seq_len: 16, batch_tokens: 64, budget: {tokens: 256}, eval_tokens: 32, eval_every: 2}
tasks:
  - name: sentiment
    kind: classification
    data: {source: files, files: {train: [SENTIMENT], line_pattern: 'PATTERN'}}
    steps: 1
  - name: squad
    kind: qa
    data: {source: files, files: {train: [SQUAD], split_by: article}}
    steps: 1
  - name: completion
    kind: generation
    data: {source: files, files: {train: [COMPLETIONS], choices_field: choices}}
    steps: 1
"""
GOOD = {
    "CORPUS": "{tmp}/corpus.txt",
    "SENTIMENT": "{tmp}/sentiment.txt",
    "PATTERN": r"^(?P<label>\S+) (?P<text>.+)$",
    "SQUAD": "{tmp}/squad.json",
    "COMPLETIONS": "{tmp}/completions.jsonl",
}


def _protocol(**changes: str) -> str:
    text = PROTOCOL
    for key, value in {**GOOD, **changes}.items():
        text = text.replace(key, value)
    return text


def _damage(name: str, content: bytes) -> object:
    def setup(tmp: Path) -> None:
        _good_data(tmp)
        (tmp / name).write_bytes(content)

    return setup


SQUAD_BAD_OFFSET = json.dumps(
    {
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "Ada lives in Oslo.",
                        "qas": [{"id": "q1", "question": "Where?", "answers": [{"text": "Oslo", "answer_start": 3}]}],
                    }
                ],
            }
        ]
    }
).encode()
ROW = {"prompt": "a", "completion": "b", "choices": ["b"]}  # a good generation row
QA_ROW = {"context": "Ada lives in Oslo.", "question": "Where?", "answers": {"text": ["Oslo"], "answer_start": [13]}}


def _jsonl(*rows: dict) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


SQUAD_OFFSET_STRING = SQUAD_BAD_OFFSET.replace(b'"answer_start": 3', b'"answer_start": "13"')
# (id, protocol changes, setup or None, fragments)
DATA: list[tuple[str, dict[str, str], object, tuple[str, ...]]] = [
    ("corpus missing", {"CORPUS": "{tmp}/none.txt"}, _good_data, ("data.files.paths: no such file",)),
    (
        "corpus pattern matches nothing",
        {"CORPUS": "{tmp}/books/*.txt"},
        _good_data,
        ("data.files.paths: {tmp}/books/*.txt: no file matches this pattern",),
    ),
    (
        "corpus latin-1",
        {},
        _damage("corpus.txt", "café au lait\n\n".encode("latin-1") * 50),
        ("data.files.paths: {tmp}/corpus.txt: not utf-8 text: byte 3",),
    ),
    (
        "corpus utf-16",
        {},
        _damage("corpus.txt", ("hello world\n\n" * 50).encode("utf-16")),
        ("data.files.paths", "it looks like UTF-16"),
    ),
    ("corpus gzip", {}, _damage("corpus.txt", gzip.compress(b"hello world\n\n" * 50)), ("it looks gzip-compressed",)),
    ("corpus binary", {}, _damage("corpus.txt", bytes(range(256)) * 50), ("data.files.paths", "not utf-8 text")),
    (
        "corpus too short",
        {},
        _damage("corpus.txt", b"one two.\n\nthree four.\n\nfive six.\n"),
        ("split holds", "fewer than one sequence"),
    ),
    ("corpus a folder", {"CORPUS": "{tmp}"}, _good_data, ("data.files.paths", "is a folder, not a file")),
    ("corpus name too long", {"CORPUS": "{tmp}/" + "x" * 300}, _good_data, ("file name too long",)),
    (
        "corpus unknown encoding",
        {"sample_by: paragraph}": "sample_by: paragraph, encoding: klingon}"},
        _good_data,
        ("data.files.encoding: unknown encoding 'klingon'",),
    ),
    (
        "sentiment missing",
        {"SENTIMENT": "{tmp}/none.txt"},
        _good_data,
        ("tasks.sentiment.data.files.train: no such file",),
    ),
    (
        "sentiment latin-1",
        {},
        _damage("sentiment.txt", "pos très bien\nneg mal\n".encode("latin-1") * 20),
        ("tasks.sentiment.data.files.train: {tmp}/sentiment.txt: not utf-8 text: byte 6", "`encoding` key"),
    ),
    (
        "sentiment utf-16",
        {},
        _damage("sentiment.txt", "pos good\nneg bad\n".encode("utf-16") * 10),
        ("tasks.sentiment.data.files.train", "UTF-16"),
    ),
    ("sentiment one label", {}, _damage("sentiment.txt", b"pos good\n" * 20), ("needs at least 2 labels",)),
    ("sentiment no match", {}, _damage("sentiment.txt", b"nolabelhere\n" * 20), ("tasks.sentiment.data",)),
    (
        "pattern does not compile",
        {"PATTERN": "^(?P<label>\\S+"},
        _good_data,
        ("tasks.0.data.files.line_pattern: not a valid regular expression",),
    ),
    (
        "pattern without groups",
        {"PATTERN": "^(\\S+) (.+)$"},
        _good_data,
        ("tasks.0.data.files.line_pattern: needs named groups",),
    ),
    ("pattern without label", {"PATTERN": "^(?P<text>.+)$"}, _good_data, ("missing: label",)),
    ("squad missing", {"SQUAD": "{tmp}/none.json"}, _good_data, ("tasks.squad.data.files.train: no such file",)),
    (
        "squad not JSON",
        {},
        _damage("squad.json", b"{not json"),
        ("tasks.squad.data.files.train", "is not SQuAD v1.1 JSON"),
    ),
    ("squad wrong shape", {}, _damage("squad.json", b'{"data": [{"title": "x"}]}'), ("is not SQuAD v1.1 JSON",)),
    ("squad a list", {}, _damage("squad.json", b"[1, 2]"), ("is not SQuAD v1.1 JSON",)),
    ("squad bad offset", {}, _damage("squad.json", SQUAD_BAD_OFFSET), ("answer 'Oslo' is not at answer_start 3",)),
    ("squad offset a string", {}, _damage("squad.json", SQUAD_OFFSET_STRING), ("is not at answer_start '13'",)),
    (
        "squad latin-1",
        {},
        _damage("squad.json", SQUAD_BAD_OFFSET.replace(b"Ada", "Adé".encode("latin-1"))),
        ("tasks.squad.data.files.train", "not utf-8 text"),
    ),
    ("squad deep JSON", {}, _damage("squad.json", b"[" * 100000 + b"]" * 100000), ("is not SQuAD v1.1 JSON",)),
    (
        "completions missing",
        {"COMPLETIONS": "{tmp}/none.jsonl"},
        _good_data,
        ("tasks.completion.data.files.train: no such file",),
    ),
    ("completions not JSON", {}, _damage("completions.jsonl", b"{oops\n" * 5), ("tasks.completion.data.files.train",)),
    (
        "completions wrong field",
        {},
        _damage("completions.jsonl", b'{"q": 1, "a": 2}\n' * 5),
        ("tasks.completion.data.files.prompt_field: no field 'prompt'",),
    ),
    (
        "completions without choices",
        {},
        _damage("completions.jsonl", b'{"prompt": "a", "completion": "b"}\n' * 5),
        ("tasks.completion.data.files.choices_field: no field 'choices'",),
    ),
    (
        "choices not a list",
        {},
        _damage("completions.jsonl", b'{"prompt": "a", "completion": "b", "choices": "b"}\n' * 5),
        ("tasks.completion.data.files.choices_field: row 1 of", "must be a list of strings, got str"),
    ),
    (
        "a row without choices",
        {},
        _damage(
            "completions.jsonl",
            b'{"prompt": "a", "completion": "b", "choices": ["b"]}\n{"prompt": "a", "completion": "b"}\n',
        ),
        ("tasks.completion.data.files.choices_field: row 2 of", "has no choices"),
    ),
    (
        "choices not strings",
        {},
        _damage("completions.jsonl", b'{"prompt": "a", "completion": "b", "choices": ["b", 3]}\n' * 5),
        ("must be strings, got int 3",),
    ),
    (
        "choices repeated",
        {},
        _damage("completions.jsonl", b'{"prompt": "a", "completion": "b", "choices": ["b", "c", "c"]}\n' * 7),
        ("the choices repeat 'c'", "... and 2 more rows like these"),
    ),
    (
        "a bad row in the second file",
        {"COMPLETIONS": "{tmp}/completions.jsonl, {tmp}/more.jsonl"},
        _damage(
            "more.jsonl",
            b'{"prompt": "a", "completion": "b", "choices": ["b"]}\n' * 2
            + b'{"prompt": "a", "completion": "b", "choices": ["c"]}\n',
        ),
        ("choices_field: row 3 of", "more.jsonl: the completion 'b' is not among its choices"),
    ),
    (
        "completion not among the choices",
        {},
        _damage("completions.jsonl", b'{"prompt": "a", "completion": " b", "choices": [" c", " d"]}\n' * 5),
        ("tasks.completion.data.files.choices_field: row 1 of", "completion ' b' is not among its choices"),
    ),
    # a value of the wrong type in a row: refused naming the file, the row and the field's key
    (
        "a prompt null",
        {},
        _damage("completions.jsonl", _jsonl(ROW, {**ROW, "prompt": None})),
        ("tasks.completion.data.files.prompt_field: row 2 of {tmp}/completions.jsonl: 'prompt' must be a string",),
    ),
    (
        "a completion null",
        {},
        _damage("completions.jsonl", _jsonl(*[{**ROW, "completion": None}] * 3)),
        ("tasks.completion.data.files.completion_field: row 1 of", "'completion' must be a string, got null"),
    ),
    (
        "a completion a number",
        {},
        _damage("completions.jsonl", _jsonl(*[{**ROW, "completion": 3, "choices": ["3"]}] * 7)),
        ("completion_field: row 1 of", "'completion' must be a string, got int 3", "... and 2 more rows like these"),
    ),
    (
        "a prompt a list",
        {},
        _damage("completions.jsonl", _jsonl({**ROW, "prompt": ["a"]})),
        ("prompt_field: row 1 of", "'prompt' must be a string, got list ['a']"),
    ),
    (
        "a label null",
        {"SENTIMENT": "{tmp}/sentiment.jsonl"},
        _damage("sentiment.jsonl", _jsonl(*[{"text": "good", "label": "pos"}, {"text": "bad", "label": None}] * 5)),
        ("tasks.sentiment.data.files.label_field: row 2 of", "'label' must be a string or a number, got null"),
    ),
    (
        "a text null",
        {"SENTIMENT": "{tmp}/sentiment.jsonl"},
        _damage("sentiment.jsonl", _jsonl(*[{"text": None, "label": "pos"}, {"text": "bad", "label": "neg"}] * 5)),
        ("tasks.sentiment.data.files.text_field: row 1 of", "'text' must be a string, got null"),
    ),
    (
        "qa answers a list",
        {"SQUAD": "{tmp}/squad.jsonl"},
        _damage("squad.jsonl", _jsonl(*[{**QA_ROW, "answers": [{"text": "Oslo", "answer_start": 13}]}] * 4)),
        ("tasks.squad.data.files.train: row 1 of {tmp}/squad.jsonl: 'answers' must be a mapping",),
    ),
    (
        "qa context null",
        {"SQUAD": "{tmp}/squad.jsonl"},
        _damage("squad.jsonl", _jsonl(*[{**QA_ROW, "context": None}] * 4)),
        ("tasks.squad.data.files.train: row 1 of", "'context' must be a string, got null"),
    ),
    (
        "qa answer off its offset",
        {"SQUAD": "{tmp}/squad.jsonl"},
        _damage("squad.jsonl", _jsonl(*[{**QA_ROW, "answers": {"text": ["Oslo"], "answer_start": [2]}}] * 4)),
        ("tasks.squad.data.files.train: row 1 of", "the answer 'Oslo' is not at answer_start 2 of its context"),
    ),
    (
        "completions latin-1",
        {},
        _damage("completions.jsonl", '{"prompt": "é", "completion": "x"}\n'.encode("latin-1")),
        ("tasks.completion.data.files.train", "not utf-8 text"),
    ),
]


def _data_cases() -> dict[str, Case]:
    cases = {}
    for name, changes, setup, fragments in DATA:
        text = _protocol(**changes)
        for verb in (
            ("trials", "validate", "{path}", "--data"),
            ("trials", "run", "{path}"),
            ("search", "--trial", "{path}", "--study", "s", "--runs-dir", "{tmp}/runs", "--n-trials", "1", "--quiet"),
        ):
            cases[f"{verb[0] if verb[0] == 'search' else verb[1]}: {name}"] = Case(
                verb, fragments, text=text, name="protocol.yaml", setup=setup
            )  # type: ignore[arg-type]
    return cases


CASES = {**_file_cases(), **_set_cases(), **_file_set_cases(), **_cache_cases(), **_data_cases()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_protocol(case, tmp_path, capsys):
    check(CASES[case], tmp_path, capsys)


def test_good_files_protocol_passes_the_data_check(tmp_path, capsys):
    """The data cases above damage one file each of this protocol, which passes as it is."""
    from tests.conftest import run

    _good_data(tmp_path)
    path = tmp_path / "protocol.yaml"
    path.write_text(_protocol().replace("{tmp}", str(tmp_path)))
    code, out, err = run(["trials", "validate", str(path), "--data"], capsys)
    assert code == 0, err
    assert f"ok {path}" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (("trials", "validate", "/nonexistent/p.yaml"), "no such file"),
        (("trials", "validate", "p" * 300 + ".yaml"), "file name too long"),
        (("trials", "show", "cpu-tiyn"), "did you mean 'cpu-tiny'"),
        (("trials", "run", "cpu-tiny", "--seed", "-1"), "--seed"),
        (("trials", "run", "cpu-tiny", "--seed", str(2**40)), "--seed"),
        (
            ("trials", "run", "cpu-tiny", "--set", "pretrain.seq_len=1024"),
            "pretrain.seq_len: 1024 exceeds max_seq_len 256",
        ),
        (("trials", "run", "cpu-tiny", "--arch", "{tmp}/none"), "none"),
    ],
)
def test_bad_protocol_arguments(argv, fragment, tmp_path, capsys):
    check(Case(argv, (fragment,)), tmp_path, capsys)
