"""One real trial on real data (Tiny Shakespeare, SST-2, XQuAD) through the `files` sources, end to end.

The data live outside the repository, in ``../shared/data`` (see its README.md); where that folder
is absent these tests skip. The protocol is the shipped ``trials/text-files.yaml`` pointed at the
shared files with ``--set`` style overrides and shrunk to a micro budget (seconds on 2 CPU cores).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nas.arch import ArchConfig
from nas.data.tasks import TaskSet, load_task_set
from nas.protocol import KIND_METRICS, TRIAL_METRICS, Task, TrialProtocol, load_protocol

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
SST2_TRAIN = DATA / "sst2_sentences" / "stsa.binary.train"
SST2_DEV = DATA / "sst2_sentences" / "stsa.binary.dev"
XQUAD = DATA / "xquad_en" / "xquad.en.json"
FILES = (SHAKESPEARE, SST2_TRAIN, SST2_DEV, XQUAD)
MISSING = [str(p) for p in FILES if not p.is_file()]

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(
        bool(MISSING), reason=f"shared data sets not found (expected under {DATA}): missing {', '.join(MISSING)}"
    ),
]

# Uncapped counts of the real files (the README's and SOURCE.txt's numbers).
SST2_TRAIN_LINES, SST2_DEV_LINES = 6920, 872
XQUAD_ARTICLES, XQUAD_QUESTIONS = 48, 1190
CAPS = {"sentiment": (256, 64), "squad": (96, 32), "completion": (128, 32)}  # (max_train, max_eval)
TASK_STEPS = 10


def _write_completions(path: Path, n: int = 400) -> int:
    """A prompt/completion JSONL from Tiny Shakespeare lines: the first 3 words, then the rest of the line."""
    rows = []
    for line in SHAKESPEARE.read_text().splitlines():
        words = line.split()
        if len(words) >= 6 and not line.rstrip().endswith(":"):
            rows.append({"prompt": " ".join(words[:3]), "completion": " " + " ".join(words[3:])})
        if len(rows) == n:
            break
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def _list(*paths: Path) -> str:
    return json.dumps([str(p) for p in paths])  # a JSON list is a YAML flow list; safe for any path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shared_data")
    _write_completions(folder / "completions.jsonl")
    return folder


def shared_protocol(workdir: Path) -> TrialProtocol:
    """text-files.yaml pointed at the shared data (and at workdir's completions.jsonl), on a micro budget."""
    overrides = [
        f"cache_dir={workdir / 'cache'}",
        f"data.files.paths={_list(SHAKESPEARE)}",
        "pretrain.budget.tokens=20000",  # 10 steps of 2048 tokens
        "pretrain.optimizer.lr=1.0e-2",  # 10 steps at the default 3e-3 move the loss by only ~0.6 nats
        "pretrain.eval_every=5",
        "pretrain.eval_tokens=4096",
        f"tasks.sentiment.data.files.train={_list(SST2_TRAIN)}",
        f"tasks.sentiment.data.files.eval={_list(SST2_DEV)}",
        f"tasks.squad.data.files.train={_list(XQUAD)}",
        f"tasks.completion.data.files.train={_list(workdir / 'completions.jsonl')}",
    ]
    for name, (max_train, max_eval) in CAPS.items():
        overrides += [
            f"tasks.{name}.steps={TASK_STEPS}",
            f"tasks.{name}.data.files.max_train={max_train}",
            f"tasks.{name}.data.files.max_eval={max_eval}",
        ]
    return load_protocol("text-files", overrides=overrides)


@pytest.fixture(scope="module")
def protocol(workdir: Path) -> TrialProtocol:
    return shared_protocol(workdir)


def _task(protocol: TrialProtocol, name: str) -> tuple[Task, int]:
    index = next(i for i, t in enumerate(protocol.tasks) if t.name == name)
    return protocol.tasks[index], index


def _uncapped(task: Task) -> Task:
    assert task.data.files is not None
    files = task.data.files.model_copy(update={"max_train": None, "max_eval": None})
    return task.model_copy(update={"data": task.data.model_copy(update={"files": files})})


def _load(protocol: TrialProtocol, name: str, capped: bool = True) -> TaskSet:
    task, index = _task(protocol, name)
    return load_task_set(task if capped else _uncapped(task), protocol.source)


def test_protocol_points_at_the_shared_files(protocol: TrialProtocol, workdir: Path):
    assert protocol.name == "text-files"
    assert protocol.data.source == "files" and protocol.data.files is not None
    assert protocol.data.files.paths == [str(SHAKESPEARE)]
    assert protocol.data.files.sample_by == "paragraph"
    assert protocol.pretrain.budget.tokens == 20000
    assert [t.name for t in protocol.tasks] == ["sentiment", "squad", "completion"]
    sentiment, squad = _task(protocol, "sentiment")[0].data.files, _task(protocol, "squad")[0].data.files
    assert sentiment is not None and sentiment.train == [str(SST2_TRAIN)] and sentiment.eval == [str(SST2_DEV)]
    assert squad is not None and squad.train == [str(XQUAD)] and squad.split_by == "article"
    assert Path(protocol.cache_dir) == workdir / "cache"
    for task in protocol.tasks:
        assert task.steps == TASK_STEPS
        assert task.data.files is not None
        assert (task.data.files.max_train, task.data.files.max_eval) == CAPS[task.name]


def test_sst2_labels_are_parsed_from_the_lines(protocol: TrialProtocol):
    full = _load(protocol, "sentiment", capped=False)
    assert full.labels == ["0", "1"]
    assert (len(full.train), len(full.eval)) == (SST2_TRAIN_LINES, SST2_DEV_LINES)
    first = SST2_TRAIN.read_text().splitlines()[0]
    assert full.train[0] == {"label": first[0], "text": first[2:]}
    assert all(e["label"] in ("0", "1") and e["text"] and not e["text"][0].isspace() for e in full.train + full.eval)
    positives = sum(e["label"] == "1" for e in full.train)
    assert positives == 3610  # SOURCE.txt: 3610 pos / 3310 neg
    capped = _load(protocol, "sentiment")
    assert capped.labels == ["0", "1"]
    assert (len(capped.train), len(capped.eval)) == CAPS["sentiment"]
    assert capped.train == full.train[: CAPS["sentiment"][0]]


def test_xquad_is_split_by_article(protocol: TrialProtocol):
    full = _load(protocol, "squad", capped=False)
    assert full.labels is None
    assert len(full.train) + len(full.eval) == XQUAD_QUESTIONS
    train_titles = {e["title"] for e in full.train}
    eval_titles = {e["title"] for e in full.eval}
    assert not train_titles & eval_titles, f"articles on both sides: {sorted(train_titles & eval_titles)}"
    assert len(train_titles | eval_titles) == XQUAD_ARTICLES
    assert len(eval_titles) == round(XQUAD_ARTICLES * 0.2)  # eval_fraction: 0.2 of the articles
    assert len({e["id"] for e in full.train + full.eval}) == XQUAD_QUESTIONS
    for example in full.train[:50] + full.eval[:50]:
        (text,), (start,) = example["answers"]["text"], example["answers"]["answer_start"]
        assert example["context"][start : start + len(text)] == text
    capped = _load(protocol, "squad")
    assert (len(capped.train), len(capped.eval)) == CAPS["squad"]
    assert not {e["title"] for e in capped.train} & {e["title"] for e in capped.eval}


def test_completions_are_held_out_from_the_jsonl(protocol: TrialProtocol, workdir: Path):
    full = _load(protocol, "completion", capped=False)
    n = len((workdir / "completions.jsonl").read_text().splitlines())
    assert len(full.train) + len(full.eval) == n
    assert len(full.eval) == round(n * 0.2)
    assert all(set(e) >= {"prompt", "completion"} and e["prompt"] and e["completion"] for e in full.train)
    capped = _load(protocol, "completion")
    assert (len(capped.train), len(capped.eval)) == CAPS["completion"]


def test_real_trial_end_to_end(protocol: TrialProtocol, monkeypatch: pytest.MonkeyPatch):
    from nas.trial import run_trial

    # The in-process token memo is keyed without cache_dir: start empty so that this trial builds its cache here.
    monkeypatch.setattr("nas.data.tokens._MEMO", {})

    arch = ArchConfig(vocab_size=2048, max_seq_len=256, n_layers=2, d_model=64, n_heads=4)
    stages: list[str] = []
    result = run_trial(arch, protocol, on_stage=stages.append)

    assert result.status == "complete", result.cause
    assert result.cause is None
    assert stages == ["data", "pretrain", "latency"] + [f"finetune {t.name}" for t in protocol.tasks]

    # Pretraining learned something about Shakespeare: held-out loss well below the untrained start.
    curve = result.curve
    assert [p.step for p in curve] == [0, 5, 10]
    assert all(math.isfinite(p.val_loss) for p in curve)
    assert curve[0].val_loss > math.log(2048) - 1.0  # roughly uniform over the vocabulary
    losses = [p.val_loss for p in curve]
    assert losses == sorted(losses, reverse=True), losses
    assert losses[-1] < losses[0] - 0.8, losses  # measured: 7.65 -> 6.40 nats
    metrics = result.metrics
    assert metrics["val_loss"] == curve[-1].val_loss
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert metrics["tokens_trained"] == 20480  # ceil(20000 / 2048) steps of 2048 tokens

    # Every metric the protocol promises is there, and in range.
    missing = set(protocol.metric_names()) - set(metrics)
    assert not missing, f"missing metrics: {sorted(missing)}"
    for name in TRIAL_METRICS:
        assert math.isfinite(metrics[name]) and metrics[name] > 0, (name, metrics[name])
    for task in protocol.tasks:
        for metric in KIND_METRICS[task.kind]:
            value = metrics[f"{task.name}.{metric}"]
            if metric == "perplexity":
                assert math.isfinite(value) and value > 1, (task.name, metric, value)
            else:
                assert 0.0 <= value <= 1.0, (task.name, metric, value)
    for metric in ("precision", "recall", "macro_f1"):
        assert 0.0 <= metrics[f"sentiment.{metric}"] <= 1.0
    assert protocol.objective_values(metrics) == [metrics["val_loss"]]

    # The token cache was written under cache_dir, once, whole.
    cache = Path(protocol.cache_dir) / "tokens"
    assert cache.is_dir()
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1, entries
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["vocab_size"] == 2048
    assert meta["train"]["documents"] > 1000 and meta["val"]["documents"] > 50  # paragraphs, not one document
    assert meta["train"]["tokens"] > 100_000 and meta["val"]["tokens"] > protocol.pretrain.eval_tokens
    for split in ("train", "val"):
        size = (entries[0] / f"{split}.bin").stat().st_size
        assert size == meta[split]["tokens"] * 2  # uint16 ids
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no half-written temporary folders
