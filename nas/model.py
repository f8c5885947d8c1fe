"""Build a Hugging Face causal LM from an ArchConfig: one recipe shared by trials, `nas train` and benches.

arch, notes = fit_vocab(arch, tokens.vocab_size, protocol.pretrain.seq_len)
model = build_model(arch, tokens.tokenizer, torch.device("cpu"), seed=0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nas.arch import ArchConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["build_model", "fit_vocab"]


def fit_vocab(arch: ArchConfig, vocab_size: int, seq_len: int) -> tuple[ArchConfig, list[str]]:
    """``arch`` made to fit a tokenizer of ``vocab_size`` ids and sequences of ``seq_len`` tokens.

    A smaller vocabulary than the tokenizer's is raised to it (noted); a sequence longer than the
    architecture's ``max_seq_len`` is refused with a ValueError.
    """
    notes = []
    if seq_len > arch.max_seq_len:
        raise ValueError(f"the protocol's seq_len={seq_len} exceeds the architecture's max_seq_len={arch.max_seq_len}")
    if vocab_size > arch.vocab_size:
        notes.append(f"vocab_size raised from {arch.vocab_size} to the tokenizer's {vocab_size}")
        arch = ArchConfig(**{**arch.to_dict(), "vocab_size": vocab_size})
    return arch, notes


def build_model(arch: ArchConfig, tokenizer: Any, device: torch.device, seed: int) -> PreTrainedModel:
    """The freshly initialised causal LM of ``arch`` on ``device``: the same ``seed`` gives the same weights;
    pad and eos ids are the tokenizer's."""
    import transformers

    torch.manual_seed(seed)
    config = arch.to_hf_config(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return transformers.AutoModelForCausalLM.from_config(config).to(device)
