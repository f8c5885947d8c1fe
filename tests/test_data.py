import json
import time

import numpy as np
import pytest

from nas.data import tokens as tokens_module
from nas.data.corpus import clean, load_documents, split
from nas.data.tokens import EOS, PAD, prepare_tokens, train_tokenizer
from nas.errors import NasInputError
from nas.protocol import Cleaning, DataConfig, Validation, parse_protocol


def test_cleaning_normalises_dedups_and_filters():
    texts = ["ﬁne  day", "fine  day", "  abc ", "x" * 50, "Caf\u0065\u0301", "Café"]
    cleaned = clean(texts, Cleaning(normalize="nfkc", dedup=True, min_chars=4, max_chars=20))
    assert cleaned == ["fine  day", "Café"]  # NFKC folds the ligature and the combining accent
    assert clean(texts, Cleaning(normalize="none", dedup=False, min_chars=0)) == [t.strip() for t in texts]
    assert clean(["A b", "a B"], Cleaning(lowercase=True)) == ["a b"]


def test_split_is_seeded_and_disjoint():
    docs = [f"doc {i}" for i in range(100)]
    train, val = split(docs, Validation(fraction=0.1, seed=3))
    assert len(val) == 10 and len(train) == 90 and not set(train) & set(val)
    assert split(docs, Validation(fraction=0.1, seed=3)) == (train, val)
    assert split(docs, Validation(fraction=0.1, seed=4))[1] != val
    with pytest.raises(ValueError, match="at least 2 documents"):
        split(["one"], Validation())


@pytest.mark.parametrize("fmt", ["text", "jsonl", "csv", "parquet"])
def test_files_source_formats(fmt, tmp_path):
    docs = ["First document here.", "Second one, longer.", "Third."]
    if fmt == "text":
        path = tmp_path / "c.txt"
        path.write_text("\n\n".join(docs) + "\n")
    elif fmt == "jsonl":
        path = tmp_path / "c.jsonl"
        path.write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    else:
        import pandas as pd

        path = tmp_path / f"c.{fmt}"
        frame = pd.DataFrame({"body": docs})
        frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    field = "text" if fmt == "text" else "body"
    data = DataConfig(source="files", files={"paths": [str(path)], "text_field": field})
    assert [d.strip() for d in load_documents(data)] == docs


def test_files_source_errors_name_the_key(tmp_path):
    missing = DataConfig(source="files", files={"paths": [str(tmp_path / "none.txt")]})
    with pytest.raises(NasInputError, match="data.files.paths: no such file"):
        load_documents(missing, "p.yaml")
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "x"}\n')
    wrong_field = DataConfig(source="files", files={"paths": [str(path)]})
    with pytest.raises(NasInputError, match="p.yaml: data.files.text_field: no field 'text' in the data; fields: body"):
        load_documents(wrong_field, "p.yaml")


def test_hub_source_offline_fails_at_once_with_advice(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = DataConfig(source="hub", hub={"name": "nobody/no-such-corpus"})
    started = time.perf_counter()
    with pytest.raises(NasInputError) as info:
        load_documents(data, "gpu.yaml")
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert message.startswith("gpu.yaml: data.hub.name: 'nobody/no-such-corpus'")
    assert "HF_DATASETS_OFFLINE" in message and "data.source: files" in message


def test_byte_level_bpe_tokenizer():
    tokenizer = train_tokenizer(["Mira is a baker from Oslo."] * 20 + ["Zoë naïve café ✓"], vocab_size=300)
    assert tokenizer.eos_token == EOS and tokenizer.pad_token == PAD
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    text = "Unseen wörds ✓ round-trip"
    assert tokenizer.decode(tokenizer(text).input_ids) == text  # byte-level: nothing is unknown
    assert len(tokenizer("Mira is a baker").input_ids) < len("Mira is a baker")


def test_token_cache_is_built_once_and_memory_mapped(tmp_path, monkeypatch):
    text = "data: {builtin: {documents: 120}}\ntokenizer: {vocab_size: 400}\ncache_dir: " + str(tmp_path) + "\n"
    protocol = parse_protocol(text)
    first = prepare_tokens(protocol)
    assert first.built and first.folder.parent == tmp_path / "tokens"
    assert isinstance(first.train, np.memmap) and len(first.train) > len(first.val) > 0
    assert (first.train == first.eos_id).sum() > 100  # one EOS per document

    tokens_module._MEMO.clear()  # as a new worker process would

    def no_work(*args, **kwargs):
        raise AssertionError("the corpus was read or tokenised again")

    monkeypatch.setattr(tokens_module, "train_tokenizer", no_work)
    monkeypatch.setattr(tokens_module, "encode_documents", no_work)
    monkeypatch.setattr("nas.data.corpus.load_documents", no_work)
    started = time.perf_counter()
    second = prepare_tokens(protocol)
    assert time.perf_counter() - started < 2
    assert not second.built and second.key == first.key
    assert np.array_equal(second.train, first.train) and second.vocab_size == first.vocab_size

    other = parse_protocol(text.replace("vocab_size: 400", "vocab_size: 420"))
    tokens_module._MEMO.clear()
    with pytest.raises(AssertionError, match="read or tokenised again"):
        prepare_tokens(other)  # another tokenizer is another key


def test_tokenizer_from_a_local_folder(tmp_path):
    folder = tmp_path / "tok"
    saved = train_tokenizer(["hello world, hello there"] * 10, vocab_size=300)
    saved.save_pretrained(folder)
    text = f"data: {{builtin: {{documents: 40}}}}\ntokenizer: {{kind: path, path: {folder}}}\ncache_dir: {tmp_path}\n"
    data = prepare_tokens(parse_protocol(text))
    assert data.vocab_size == len(saved) and data.tokenizer.decode(data.train[:5].tolist())
    bad = parse_protocol(text.replace(str(folder), str(tmp_path / "none")), source="p.yaml")
    with pytest.raises(NasInputError, match="p.yaml: tokenizer.path: no such folder"):
        prepare_tokens(bad)
