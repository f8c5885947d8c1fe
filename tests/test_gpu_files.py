"""The offline GPU protocol, gpu-files: the shared Gutenberg books through a glob pattern, whole books held
out, a tokenizer trained on them; one micro trial on CPU. Skips where ../shared/data is absent."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nas.arch import ArchConfig
from nas.data.corpus import load_documents
from nas.protocol import load_protocol
from nas.trial import run_trial
from nas.userfiles import expand_paths

ROOT = Path(__file__).resolve().parents[1]
BOOKS = ROOT.parent / "shared" / "data" / "gutenberg"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not BOOKS.is_dir(), reason=f"the shared Gutenberg books are not at {BOOKS}"),
]


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(ROOT)  # the shipped protocol names the books relative to the repository root
    return ROOT


def test_gpu_files_reads_every_book_and_nothing_else(at_root):
    protocol = load_protocol("gpu-files")
    assert protocol.data.files is not None and protocol.data.source == "files"
    books = expand_paths(protocol.data.files.paths, protocol.source, "data.files.paths")
    assert [Path(b).name for b in books] == sorted(p.name for p in BOOKS.glob("*.txt") if p.name != "SOURCE.txt")
    assert len(books) == 20
    optimizer = protocol.pretrain.optimizer  # the width rule at GPT-2 small's width: hidden matrices at 2.5e-4
    assert optimizer.peak_lr(768) == 3e-3
    assert optimizer.peak_lr(768) * optimizer.width_factor(768) == pytest.approx(2.5e-4)


@pytest.mark.parametrize("name", ["gpu-files", "gpu-short"])
def test_the_gpu_protocols_optimise_the_prediction_at_the_target(name):
    protocol = load_protocol(name)
    assert list(protocol.objectives) == ["predicted_val_loss"]
    assert protocol.pretrain.anneals and protocol.pretrain.schedule.cooldowns == [0.25, 0.5]


def test_a_micro_gpu_files_trial_runs_offline_on_cpu(at_root, tmp_path):
    three = str(Path("..") / "shared" / "data" / "gutenberg" / "c*_*.txt")  # Carroll, Conrad, Cooper
    overrides = [
        f"cache_dir={tmp_path}",
        f"data.files.paths=[{three!r}]",
        "tokenizer.vocab_size=1024",
        "pretrain.seq_len=128",
        "pretrain.batch_tokens=1024",
        "pretrain.micro_batch_size=null",
        "pretrain.budget.tokens=8192",
        "pretrain.eval_every=4",
        "pretrain.eval_tokens=2048",
        "pretrain.compile=false",
        "latency.prompt_tokens=32",
        "latency.new_tokens=8",
        *(f"tasks.{t}.enabled=false" for t in ("claims", "qa", "answer")),
    ]
    protocol = load_protocol("gpu-files", overrides=overrides)
    texts = load_documents(protocol.data, protocol.source)
    assert len(texts) == 3  # one document per book (sample_by: document)
    arch = ArchConfig(vocab_size=1024, max_seq_len=128, n_layers=1, d_model=64, n_heads=2)
    result = run_trial(arch, protocol)
    assert result.status == "complete", result.cause
    assert math.isfinite(result.metrics["val_loss"]) and result.metrics["tokens_trained"] == 8192
    assert len(result.annealed) == 3  # two cool-downs (0.25, 0.5) and the run's own end: the prediction's points
