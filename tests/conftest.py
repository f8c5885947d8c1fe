"""Shared fixtures and helpers (plain helpers are imported: ``from tests.conftest import run``).

Tests never touch the network: hub access is forced offline here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("COLUMNS", "250")  # rich wraps at the terminal width: long tmp paths would break lines

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
    "confirm=null",  # cpu-tiny confirms its best 2: a micro search counts only its --n-trials (test_confirm sets it)
    # cpu-tiny optimises the prediction at its target from WSD cool-downs; the micro protocol measures the trial's
    # own held-out loss under a cosine schedule, as cpu-tiny did before (test_default_objective runs the shipped one)
    "pretrain.schedule={kind: cosine, warmup_fraction: 0.05, min_lr_ratio: 0.1}",
    "target={}",
    "objectives={val_loss: minimize}",
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
        for k in (
            "enabled=true",  # cpu-tiny runs only qa; the micro protocol runs all three kinds
            "steps=6",
            "max_length=160",
            "batch_size=4",
            "data.builtin.train=32",
            "data.builtin.eval=16",
        )
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


# ---- a micro search, run as a user runs it ------------------------------------------------------
MICRO_SPACE = """\
name: micro
parameters:
  vocab_size: 512
  max_seq_len: 64
  n_layers: {type: int, low: 1, high: 2}
  n_heads: {type: choice, values: [1, 2]}
  head_dim: 16
  ffn_mult: {type: choice, values: [1, 2, 3]}
  attention: {type: choice, values: [full, sliding]}
  window: {type: choice, values: [8, 16], when: "attention == 'sliding'"}
derived:
  d_model: n_heads * head_dim
  ffn_dim: ffn_mult * d_model
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch, micro_cache: Path) -> Path:
    """A temporary working directory holding micro.yaml (MICRO_SPACE); runs/ goes here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "micro.yaml").write_text(MICRO_SPACE)
    return tmp_path


def micro_sets(cache: Path, *extra: str, tasks: bool = False) -> list[str]:
    """`--space micro.yaml` and the `--set` flags of the micro protocol (no tasks unless ``tasks``)."""
    items = [f"cache_dir={cache}", *MICRO_OVERRIDES, *([] if tasks else ["tasks=[]"]), *extra]
    return ["--space", "micro.yaml", *[arg for item in items for arg in ("--set", item)]]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """`nas ARGV` in-process: (exit code, stdout, stderr)."""
    from nas.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def cli_search(capsys, study: str, n_trials: int, *extra: str, pruner: str = "none") -> tuple[int, str, str]:
    """`nas search --study STUDY --n-trials N --quiet --pruner PRUNER *extra`, run in-process."""
    argv = ["search", "--study", study, "--n-trials", str(n_trials), "--quiet", "--pruner", pruner, *extra]
    return run(argv, capsys)


def nas_process(*args: str, cwd: Path) -> subprocess.Popen:
    """`python -m nas ARGS` in the background, stdout and stderr piped together. Its SIGINT is the default
    one even where the tests run as a background job (``nohup ... &`` ignores SIGINT, and children inherit
    that), so a test's Ctrl-C reaches it as a user's would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "nas", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def load_study(name: str, storage: str | None = None, root: Path = Path(".")):
    """A study of ``storage``, or of ``root``/runs/NAME/study.db (open_storage retries while another
    process creates the tables)."""
    import optuna

    from nas.search import open_storage

    url = storage or f"sqlite:///{root}/runs/{name}/study.db"
    return optuna.load_study(study_name=name, storage=open_storage(url))


# ---- database servers, where reachable ------------------------------------------------------------
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def postgres_reachable() -> bool:
    return _port_open(5432)


def mysql_reachable() -> bool:
    import importlib.util

    return importlib.util.find_spec("pymysql") is not None and _port_open(3306)


needs_postgres = pytest.mark.skipif(not postgres_reachable(), reason="no PostgreSQL at 127.0.0.1:5432")
needs_mysql = pytest.mark.skipif(not mysql_reachable(), reason="no MySQL/MariaDB at 127.0.0.1:3306 or no pymysql")
