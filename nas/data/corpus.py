"""The pretraining corpus: sources (builtin, files, hub), cleaning, and the held-out split."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import unicodedata
from pathlib import Path
from typing import Any, Literal

from nas.errors import NasInputError
from nas.protocol import Cleaning, DataConfig, Validation
from nas.userfiles import check_decodes, check_file, expand_paths

__all__ = ["corpus_identity", "load_documents", "clean", "split", "load_table", "infer_format"]

_SUFFIX_FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".json": "json",
    ".jsonl": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}


def corpus_identity(data: DataConfig) -> dict[str, Any]:
    """What identifies the corpus without reading it (for cache keys): the source and its files' stats."""
    if data.source == "builtin":
        from nas.data.builtin import GENERATOR_VERSION

        return {"builtin": data.builtin.model_dump(), "version": GENERATOR_VERSION}
    if data.source == "files":
        assert data.files is not None
        stats = []
        for path in expand_paths(data.files.paths, key="data.files.paths"):
            p = Path(path).resolve()
            st = p.stat() if p.is_file() else None
            stats.append([str(p), st.st_size if st else None, st.st_mtime_ns if st else None])
        return {"files": data.files.model_dump(), "stats": stats}
    assert data.hub is not None
    return {"hub": data.hub.model_dump()}


def infer_format(path: str, given: str | None) -> str:
    if given:
        return given
    return _SUFFIX_FORMATS.get(Path(path).suffix.lower(), "text")


def load_table(
    paths: list[str], fmt: str, source: str, key: str, sample_by: str = "line", encoding: str = "utf-8"
) -> Any:
    """A `datasets.Dataset` from local files; a missing file, or one that is not ``encoding`` text, is a
    NasInputError naming ``key``."""
    for path in paths:
        if fmt == "parquet":
            check_file(path, source, key)
        else:
            check_decodes(path, source, key, encoding)
    import datasets

    datasets.disable_progress_bars()
    builder = {"jsonl": "json"}.get(fmt, fmt)
    kwargs: dict[str, Any] = {} if builder == "parquet" else {"encoding": encoding}
    if builder == "text":
        kwargs["sample_by"] = sample_by
    logger = logging.getLogger("datasets")  # it logs a parse error before raising it: one message is ours
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return datasets.load_dataset(builder, data_files=list(paths), split="train", **kwargs)
    except Exception as exc:  # a malformed file: say which and why
        raise NasInputError(source, [(key, f"cannot read {', '.join(paths)} as {fmt}: {exc}")]) from None
    finally:
        logger.setLevel(level)


def _column(table: Any, field: str, source: str, key: str) -> list[Any]:
    if field not in table.column_names:
        raise NasInputError(source, [(key, f"no field '{field}' in the data; fields: {', '.join(table.column_names)}")])
    return list(table[field])


def load_documents(data: DataConfig, source: str = "<protocol>") -> list[str]:
    """The raw documents of the configured source."""
    if data.source == "builtin":
        from nas.data.builtin import pretraining_corpus

        return pretraining_corpus(data.builtin.seed, data.builtin.documents)
    if data.source == "files":
        files = data.files
        assert files is not None
        paths = expand_paths(files.paths, source, "data.files.paths")
        fmt = infer_format(paths[0], files.format)
        table = load_table(paths, fmt, source, "data.files.paths", files.sample_by, files.encoding)
        return [str(t) for t in _column(table, files.text_field, source, "data.files.text_field") if t is not None]
    return _load_hub(data, source)


def _load_hub(data: DataConfig, source: str) -> list[str]:
    hub = data.hub
    assert hub is not None
    offline = any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    )
    advice = "or download it where there is a network and use data.source: files with data.files.paths"
    import datasets

    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(hub.name, hub.config, split=hub.split, revision=hub.revision)
    except Exception as exc:
        if offline:
            reason = (
                f"'{hub.name}' is not in the local cache and HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set, "
                f"so the Hub is not asked; unset it on a machine with a network, {advice}"
            )
        else:
            reason = f"cannot load '{hub.name}' from the Hugging Face Hub ({type(exc).__name__}: {exc}); {advice}"
        raise NasInputError(source, [("data.hub.name", reason)]) from None
    return [str(t) for t in _column(table, hub.text_field, source, "data.hub.text_field") if t is not None]


def clean(texts: list[str], cleaning: Cleaning) -> list[str]:
    """Normalise, filter by length and drop exact duplicates (keeping the first)."""
    out, seen = [], set()
    forms: dict[str, Literal["NFC", "NFKC"]] = {"nfc": "NFC", "nfkc": "NFKC"}
    form = forms.get(cleaning.normalize)
    for text in texts:
        if form:
            text = unicodedata.normalize(form, text)
        if cleaning.lowercase:
            text = text.lower()
        text = text.strip()
        if len(text) < max(cleaning.min_chars, 1):
            continue
        if cleaning.max_chars is not None and len(text) > cleaning.max_chars:
            continue
        if cleaning.dedup:
            digest = hashlib.sha1(text.encode()).digest()
            if digest in seen:
                continue
            seen.add(digest)
        out.append(text)
    return out


def split(texts: list[str], validation: Validation) -> tuple[list[str], list[str]]:
    """A seeded shuffle of documents into (train, validation); both non-empty."""
    if len(texts) < 2:
        raise ValueError(f"need at least 2 documents after cleaning to hold one out, got {len(texts)}")
    order = list(range(len(texts)))
    random.Random(validation.seed).shuffle(order)
    n_val = min(max(1, round(len(texts) * validation.fraction)), len(texts) - 1)
    val = sorted(order[:n_val])
    val_set = set(val)
    return [texts[i] for i in range(len(texts)) if i not in val_set], [texts[i] for i in val]
