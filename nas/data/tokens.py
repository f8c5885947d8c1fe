"""Tokenizer and token ids, computed once per content key and shared by every trial and worker.

The key hashes what identifies the corpus (source, files' sizes and times, generator version),
the cleaning, the split and the tokenizer settings, so a cached entry is found without reading or
tokenising the corpus again. Entries are written to a temporary folder and renamed into place, so
concurrent workers never see half an entry; ids are memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.errors import NasInputError
from nas.protocol import TokenizerConfig, TrialProtocol
from nas.userfiles import folder_problem

__all__ = ["TokenData", "prepare_tokens", "train_tokenizer", "load_tokenizer", "EOS", "PAD"]

EOS = "<|endoftext|>"
PAD = "<|pad|>"
CACHE_FORMAT = 1
_MEMO: dict[str, TokenData] = {}


@dataclass
class TokenData:
    """Token ids of the train and validation splits, and the tokenizer that made them."""

    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    train: np.ndarray  # memory-mapped 1-D ids, documents joined by EOS
    val: np.ndarray
    key: str
    folder: Path
    built: bool  # False when it came from the cache

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def cache_key(protocol: TrialProtocol) -> str:
    from nas.data.corpus import corpus_identity

    identity = {
        "format": CACHE_FORMAT,
        "corpus": corpus_identity(protocol.data),
        "cleaning": protocol.data.cleaning.model_dump(),
        "validation": protocol.data.validation.model_dump(),
        "tokenizer": _tokenizer_identity(protocol.tokenizer),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _tokenizer_identity(config: TokenizerConfig) -> dict[str, Any]:
    identity = config.model_dump()
    if config.kind == "path" and config.path:
        file = Path(config.path) / "tokenizer.json"
        identity["content"] = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None
    return identity


def prepare_tokens(protocol: TrialProtocol) -> TokenData:
    """Token ids for the protocol's corpus: from the cache when present, else built and cached."""
    key = cache_key(protocol)
    folder = Path(protocol.cache_path) / "tokens" / key
    memo_key = str(folder.resolve())
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    if not _cached(folder):
        # before the corpus is read and the tokenizer trained: a cache_dir that is, or lies under, a file
        if problem := folder_problem(protocol.cache_path) or folder_problem(folder):
            raise NasInputError(protocol.source, [("cache_dir", problem)])
        _build(protocol, folder)
        built = True
    else:
        built = False
    meta = json.loads((folder / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    data = TokenData(
        tokenizer=load_tokenizer(folder),
        train=np.memmap(folder / "train.bin", dtype=dtype, mode="r"),
        val=np.memmap(folder / "val.bin", dtype=dtype, mode="r"),
        key=key,
        folder=folder,
        built=built,
    )
    _MEMO[memo_key] = data
    return data


def _cached(folder: Path) -> bool:
    """Whether ``folder`` holds a finished cache entry (False where the path cannot be looked at)."""
    try:
        return (folder / "meta.json").is_file()
    except OSError:  # a name too long: folder_problem says so
        return False


def _build(protocol: TrialProtocol, folder: Path) -> None:
    from nas.data.corpus import clean, load_documents, split

    documents = clean(load_documents(protocol.data, protocol.source), protocol.data.cleaning)
    try:
        train_docs, val_docs = split(documents, protocol.data.validation)
    except ValueError as exc:
        raise NasInputError(protocol.source, [("data", str(exc))]) from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        if protocol.tokenizer.kind == "train":
            tokenizer = train_tokenizer(train_docs, protocol.tokenizer.vocab_size, protocol.tokenizer.min_frequency)
        else:
            tokenizer = _load_path_tokenizer(protocol)
        tokenizer.save_pretrained(tmp)
        dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.uint32
        counts = {}
        for name, docs in (("train", train_docs), ("val", val_docs)):
            ids = encode_documents(tokenizer, docs)
            np.asarray(ids, dtype=dtype).tofile(tmp / f"{name}.bin")
            counts[name] = {"documents": len(docs), "tokens": len(ids)}
        meta = {"dtype": np.dtype(dtype).name, "vocab_size": len(tokenizer), **counts}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, folder)  # atomic; fails if another worker got there first
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def encode_documents(tokenizer: Any, docs: list[str]) -> list[int]:
    """Ids of the documents, each followed by EOS."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    backend = tokenizer.backend_tokenizer
    for start in range(0, len(docs), 1024):
        for encoding in backend.encode_batch(docs[start : start + 1024], add_special_tokens=False):
            ids.extend(encoding.ids)
            ids.append(eos)
    return ids


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int = 2) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for `transformers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, pad_token=PAD)


def load_tokenizer(folder: str | Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_path_tokenizer(protocol: TrialProtocol) -> Any:
    path = protocol.tokenizer.path
    assert path is not None
    if not Path(path).is_dir():
        raise NasInputError(protocol.source, [("tokenizer.path", f"no such folder: {path}")])
    try:
        tokenizer = load_tokenizer(path)
    except Exception as exc:
        raise NasInputError(protocol.source, [("tokenizer.path", f"not a tokenizer folder: {exc}")]) from None
    if tokenizer.eos_token is None:
        raise NasInputError(protocol.source, [("tokenizer.path", "the tokenizer has no eos_token")])
    return tokenizer
