"""The Hugging Face families nas builds models with, what each can express, and which one an architecture
maps to when it names none (:func:`choose_family`): the first in :data:`FAMILIES` that supports every knob.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

__all__ = ["FAMILIES", "Family", "choose_family", "conflicts", "family_supports"]


@dataclass(frozen=True)
class Family:
    """What one HF family can express."""

    name: str
    config_class: str  # transformers config class name, kept as a string (imported lazily)
    position: frozenset[str]
    norm: frozenset[str]
    ffn: frozenset[str]
    attention: frozenset[str]
    activation: frozenset[str]
    qk_norm: bool
    grouped_kv: bool  # n_kv_heads may differ from n_heads
    free_head_dim: bool  # head_dim may differ from d_model // n_heads
    ffn_ratio: int | None = None  # ffn_dim fixed to ratio * d_model
    bias: bool = False  # linear layers carry biases
    heads_divide_width: bool = False  # d_model % n_heads == 0 required (even with a free head_dim)


_ALL_ACTS = frozenset({"silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"})


def _llama_style(
    name: str, config_class: str, attention: set[str], qk_norm: bool, heads_divide_width: bool = False
) -> Family:
    """A Llama-like family: RoPE, RMSNorm, gated FFN, any activation, grouped KV heads, a free head_dim."""
    return Family(
        name,
        config_class,
        position=frozenset({"rope"}),
        norm=frozenset({"rmsnorm"}),
        ffn=frozenset({"gated"}),
        attention=frozenset(attention),
        activation=_ALL_ACTS,
        qk_norm=qk_norm,
        grouped_kv=True,
        free_head_dim=True,
        heads_divide_width=heads_divide_width,
    )


# Order matters: an ArchConfig without `family` maps to the first family that supports every knob.
FAMILIES: dict[str, Family] = {
    # transformers 5's LlamaConfig refuses d_model % n_heads != 0 even with head_dim given.
    "llama": _llama_style("llama", "LlamaConfig", {"full"}, qk_norm=False, heads_divide_width=True),
    "mistral": _llama_style("mistral", "MistralConfig", {"full", "sliding"}, qk_norm=False),
    "qwen3": _llama_style("qwen3", "Qwen3Config", {"full", "sliding", "local_global"}, qk_norm=True),
    "gpt2": Family(
        "gpt2",
        "GPT2Config",
        position=frozenset({"learned"}),
        norm=frozenset({"layernorm"}),
        ffn=frozenset({"plain"}),
        attention=frozenset({"full"}),
        activation=_ALL_ACTS,
        qk_norm=False,
        grouped_kv=False,
        free_head_dim=False,
        bias=True,
    ),
    "bloom": Family(
        "bloom",
        "BloomConfig",
        position=frozenset({"alibi"}),
        norm=frozenset({"layernorm"}),
        ffn=frozenset({"plain"}),
        attention=frozenset({"full"}),
        activation=frozenset({"gelu"}),
        qk_norm=False,
        grouped_kv=False,
        free_head_dim=False,
        ffn_ratio=4,
        bias=True,
    ),
}

_SET_KNOBS = ("position", "norm", "ffn", "attention", "activation")


def family_supports(family: str, knob: str, value: Any) -> bool:
    """Whether ``family`` can express ``knob=value`` on its own (used for load-time checks)."""
    spec = FAMILIES[family]
    if knob in _SET_KNOBS:
        return value is None or (isinstance(value, str) and value in getattr(spec, knob))
    if knob == "qk_norm":
        return value is None or bool(value) == spec.qk_norm
    return True


def _whole(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is a whole number (not a bool): the only values the shape checks compute with."""
    return isinstance(value, int) and not isinstance(value, bool)


def conflicts(spec: Family, data: dict[str, Any]) -> list[str]:
    """Knobs in ``data`` that ``spec`` cannot express, each as 'knob=value (family has ...)'. ``data`` is raw
    (a knob may be of any type): only names are looked up and only whole numbers computed with, so a value of
    the wrong type is left to the field's own check, never raised on (an unhashable list) or repeated (a
    string times ``n_heads``)."""
    problems = []
    for knob in _SET_KNOBS:
        value = data.get(knob)
        if value is not None and not (isinstance(value, str) and value in getattr(spec, knob)):
            problems.append(f"{knob}={value} (it has {knob}: {', '.join(sorted(getattr(spec, knob)))})")
    qk_norm = data.get("qk_norm")
    if qk_norm is not None and bool(qk_norm) != spec.qk_norm:
        problems.append(f"qk_norm={qk_norm} (it has qk_norm={spec.qk_norm})")
    n_heads, n_kv, d_model = data.get("n_heads"), data.get("n_kv_heads"), data.get("d_model")
    head_dim, ffn_dim = data.get("head_dim"), data.get("ffn_dim")
    if not spec.grouped_kv and n_kv is not None and n_kv != n_heads:
        problems.append(f"n_kv_heads={n_kv} != n_heads={n_heads} (it has multi-head attention only)")
    if (
        not spec.free_head_dim
        and _whole(head_dim)
        and _whole(d_model)
        and _whole(n_heads)
        and head_dim * n_heads != d_model
    ):
        problems.append(f"head_dim={head_dim} != d_model/n_heads (it ties head_dim to d_model/n_heads)")
    if spec.heads_divide_width and _whole(d_model) and _whole(n_heads) and n_heads > 0 and d_model % n_heads:
        problems.append(f"d_model={d_model} not divisible by n_heads={n_heads} (it needs d_model % n_heads == 0)")
    if spec.ffn_ratio and ffn_dim is not None and _whole(d_model) and ffn_dim != spec.ffn_ratio * d_model:
        problems.append(f"ffn_dim={ffn_dim} (it fixes ffn_dim = {spec.ffn_ratio} * d_model)")
    return problems


def choose_family(data: dict[str, Any]) -> str:
    """The first family of :data:`FAMILIES` that can express every knob in ``data``; else a ValueError saying
    why each cannot."""
    reasons = []
    for name, spec in FAMILIES.items():
        problems = conflicts(spec, data)
        if not problems:
            return name
        reasons.append(f"{name}: {'; '.join(problems)}")
    raise ValueError("no transformers family can express this architecture — " + " | ".join(reasons))
