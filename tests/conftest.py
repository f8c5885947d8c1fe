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
