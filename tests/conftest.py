"""Shared fixtures. Tests never touch the network: hub access is forced offline here."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from nas.resources import shipped_names  # noqa: E402

SHIPPED_SPACES = shipped_names("search_spaces")


@pytest.fixture
def write_space(tmp_path: Path):
    """Write a space YAML to a temporary file and return its path."""

    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


MINIMAL_SPACE = """\
parameters:
  vocab_size: 256
  max_seq_len: 32
  n_layers: {type: int, low: 1, high: 2}
  n_heads: {type: choice, values: [2, 4]}
  head_dim: 8
derived:
  d_model: n_heads * head_dim
"""


MICRO_OVERRIDES = [
    "data.builtin.documents=300",
    "tokenizer.vocab_size=512",
    "pretrain.seq_len=64",
    "pretrain.batch_tokens=512",
    "pretrain.budget.tokens=16384",
    "pretrain.optimizer.lr=1e-2",
    "pretrain.eval_every=8",
    "pretrain.eval_tokens=1024",
    "latency.new_tokens=4",
    *[
        f"tasks.{t}.{k}"
        for t in ("claims", "qa", "answer")
        for k in ("steps=6", "max_length=160", "batch_size=4", "data.builtin.train=32", "data.builtin.eval=16")
    ],
]


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def micro_protocol(micro_cache):
    """cpu-tiny shrunk to seconds: 300 builtin documents, 16k tokens, 6 fine-tuning steps per task."""
    from nas.protocol import load_protocol

    def make(*extra: str):
        return load_protocol("cpu-tiny", [f"cache_dir={micro_cache}", *MICRO_OVERRIDES, *extra])

    return make


@pytest.fixture
def micro_arch():
    from nas.arch import ArchConfig

    return ArchConfig(vocab_size=512, max_seq_len=64, n_layers=2, d_model=32, n_heads=2)


@pytest.fixture(scope="session")
def micro_pretrained(micro_cache):
    """A micro architecture pretrained once (no tasks) on micro cpu-tiny: (result with model, tokenizer)."""
    from nas.arch import ArchConfig
    from nas.data.tokens import prepare_tokens
    from nas.protocol import load_protocol
    from nas.trial import run_trial

    protocol = load_protocol("cpu-tiny", [f"cache_dir={micro_cache}", *MICRO_OVERRIDES])
    arch = ArchConfig(vocab_size=512, max_seq_len=64, n_layers=2, d_model=32, n_heads=2)
    result = run_trial(arch, protocol.model_copy(update={"tasks": []}), keep_model=True)
    return result, prepare_tokens(protocol).tokenizer
