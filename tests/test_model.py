from types import SimpleNamespace

import pytest
import torch

from nas.arch import ArchConfig
from nas.model import build_model, fit_vocab

TOKENIZER = SimpleNamespace(pad_token_id=3, eos_token_id=2)


def _arch(**kw):
    return ArchConfig(**{"vocab_size": 100, "max_seq_len": 32, "n_layers": 1, "d_model": 32, "n_heads": 2, **kw})


def test_fit_vocab_raises_the_vocabulary_to_the_tokenizer():
    arch, notes = fit_vocab(_arch(), vocab_size=512, seq_len=32)
    assert arch.vocab_size == 512 and notes == ["vocab_size raised from 100 to the tokenizer's 512"]
    assert arch.to_dict() == {**_arch().to_dict(), "vocab_size": 512}
    same, notes = fit_vocab(_arch(), vocab_size=50, seq_len=16)  # a larger vocabulary is kept as it is
    assert same == _arch() and notes == []


def test_fit_vocab_refuses_sequences_longer_than_the_architecture():
    with pytest.raises(ValueError, match="the protocol's seq_len=64 exceeds the architecture's max_seq_len=32"):
        fit_vocab(_arch(), vocab_size=100, seq_len=64)


def test_build_model_is_seeded_and_carries_the_tokenizer_ids():
    arch = _arch()
    a = build_model(arch, TOKENIZER, torch.device("cpu"), seed=7)
    b = build_model(arch, TOKENIZER, torch.device("cpu"), seed=7)
    c = build_model(arch, TOKENIZER, torch.device("cpu"), seed=8)
    a_state, b_state, c_state = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state)
    assert not all(torch.equal(a_state[k], c_state[k]) for k in a_state)
    assert a.config.pad_token_id == 3 and a.config.eos_token_id == 2 and a.config.bos_token_id is None
    assert sum(p.numel() for p in a.parameters()) == arch.param_count()
    assert next(a.parameters()).device.type == "cpu"
