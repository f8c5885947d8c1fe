"""ArchConfig: the one typed description of an architecture, its HF mapping, counts and hash.

Knobs are family-independent (width, depth, heads, position encoding, norm, FFN kind, attention
pattern, ...). The Hugging Face family that expresses them is either given (`family`) or chosen as
the first family in :data:`nas.families.FAMILIES` that supports every knob; a knob no family can
express is refused with a message naming it. Counts (params, FLOPs/token, KV-cache bytes/token) are computed
analytically from the knobs; tests check them against models built for real.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nas.families import FAMILIES, Family, choose_family, conflicts

__all__ = ["ArchConfig", "KNOB_NAMES", "COUNT_NAMES"]

FamilyName = Literal["llama", "mistral", "qwen3", "gpt2", "bloom"]
Activation = Literal["silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"]
Position = Literal["rope", "learned", "alibi"]
Norm = Literal["rmsnorm", "layernorm"]
Ffn = Literal["gated", "plain"]
Attention = Literal["full", "sliding", "local_global"]

COUNT_NAMES = ("params", "non_embedding_params", "flops_per_token", "kv_cache_bytes_per_token")


class ArchConfig(BaseModel):
    """A decoder-only Transformer LM, described independently of any HF class.

    ``None`` knobs take the family's value; after validation every knob is resolved, so two
    equal architectures have equal fields and the same :meth:`arch_hash`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # Upper bounds: far beyond any model trained today, low enough that counting FLOPs and building
    # per-layer lists stays cheap (a typo of 10**14 layers is refused, not allocated).
    family: FamilyName | None = None
    vocab_size: int = Field(ge=2, le=2**24)
    max_seq_len: int = Field(ge=1, le=2**24)
    n_layers: int = Field(ge=1, le=1024)
    d_model: int = Field(ge=1, le=2**17)
    n_heads: int = Field(ge=1, le=2**12)
    n_kv_heads: int | None = Field(default=None, ge=1, le=2**12)
    head_dim: int | None = Field(default=None, ge=1, le=2**14)
    ffn_dim: int | None = Field(default=None, ge=1, le=2**20)
    activation: Activation | None = None
    position: Position | None = None
    norm: Norm | None = None
    ffn: Ffn | None = None
    qk_norm: bool | None = None
    attention: Attention = "full"
    window: int | None = Field(default=None, ge=1, le=2**24)
    global_every: int | None = Field(default=None, ge=2, le=1024)
    rope_theta: float | None = Field(default=None, gt=0, le=1e12)
    norm_eps: float = Field(default=1e-5, gt=0, le=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    tie_embeddings: bool = True

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if problems := _not_single_values(data):
            raise ValueError("; ".join(problems))
        data = dict(data)
        family = data.get("family")
        if family is None:
            family = choose_family(data)
            data["family"] = family
        if family not in FAMILIES:
            return data  # the Literal check reports it
        spec = FAMILIES[family]
        problems = conflicts(spec, data)
        if problems:
            raise ValueError(f"family '{family}' cannot express: " + "; ".join(problems))
        for knob in ("position", "norm", "ffn"):
            data.setdefault(knob, None)
            if data[knob] is None:
                data[knob] = next(iter(getattr(spec, knob)))
        if data.get("activation") is None:
            data["activation"] = {"gpt2": "gelu_new", "bloom": "gelu"}.get(family, "silu")
        data["qk_norm"] = spec.qk_norm
        n_heads, d_model = data.get("n_heads"), data.get("d_model")
        if isinstance(n_heads, int) and isinstance(d_model, int):
            if data.get("n_kv_heads") is None:
                data["n_kv_heads"] = n_heads
            if data.get("head_dim") is None and n_heads > 0 and d_model % n_heads == 0:
                data["head_dim"] = d_model // n_heads
            if data.get("ffn_dim") is None:
                data["ffn_dim"] = (spec.ffn_ratio or 4) * d_model
        if data.get("position", "rope") == "rope":
            data["rope_theta"] = data.get("rope_theta") or 10000.0  # the field makes it a float, or says why not
        else:
            data["rope_theta"] = None
        attention = data.get("attention", "full")
        if attention == "full":
            data["window"] = None
        if attention != "local_global":
            data["global_every"] = None
        return data

    @model_validator(mode="after")
    def _check_shapes(self) -> ArchConfig:
        problems = []
        assert self.n_kv_heads is not None
        if self.head_dim is None:
            problems.append(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; give head_dim")
        if self.n_heads % self.n_kv_heads:
            problems.append(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.attention != "full" and self.window is None:
            problems.append(f"attention '{self.attention}' needs window")
        if self.attention == "local_global":
            if self.global_every is None:
                problems.append("attention 'local_global' needs global_every (every k-th layer is global)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ---- derived structure ------------------------------------------------------------------
    @property
    def spec(self) -> Family:
        assert self.family is not None
        return FAMILIES[self.family]

    def layer_types(self) -> list[str]:
        """Per layer: ``full_attention`` or ``sliding_attention`` (HF's names)."""
        if self.attention == "full":
            return ["full_attention"] * self.n_layers
        if self.attention == "sliding":
            return ["sliding_attention"] * self.n_layers
        assert self.global_every is not None
        return [
            "full_attention" if (i + 1) % self.global_every == 0 else "sliding_attention" for i in range(self.n_layers)
        ]

    # ---- counts -----------------------------------------------------------------------------
    def dims(self) -> tuple[int, int, int, int, int]:
        """(d_model, n_heads, n_kv_heads, head_dim, ffn_dim), each resolved."""
        return self._dims()

    def _dims(self) -> tuple[int, int, int, int, int]:
        assert self.n_kv_heads is not None and self.head_dim is not None and self.ffn_dim is not None
        return self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.ffn_dim

    def _layer_matmul_weights(self) -> int:
        d, h, kv, hd, f = self._dims()
        attn = d * h * hd + 2 * d * kv * hd + h * hd * d
        mlp = (3 if self.ffn == "gated" else 2) * d * f
        return attn + mlp

    def _layer_other_params(self) -> int:
        """Biases and norms of one layer."""
        d, h, kv, hd, f = self._dims()
        norms = 2 * (2 * d if self.norm == "layernorm" else d)
        qk_norm = 2 * hd if self.qk_norm else 0
        bias = (h * hd + 2 * kv * hd + d + f + d) if self.spec.bias else 0
        return norms + qk_norm + bias

    def embedding_params(self) -> int:
        """Token embedding, untied LM head and learned positions (what `non_embedding` leaves out)."""
        emb = self.vocab_size * self.d_model
        head = 0 if self.tie_embeddings else self.vocab_size * self.d_model
        pos = self.max_seq_len * self.d_model if self.position == "learned" else 0
        return emb + head + pos

    def non_embedding_params(self) -> int:
        d = self.d_model
        final_norm = 2 * d if self.norm == "layernorm" else d
        emb_norm = 2 * d if self.family == "bloom" else 0  # Bloom's word_embeddings_layernorm
        return self.n_layers * (self._layer_matmul_weights() + self._layer_other_params()) + final_norm + emb_norm

    def param_count(self) -> int:
        """Exactly what ``sum(p.numel() for p in model.parameters())`` gives for the HF model."""
        return self.non_embedding_params() + self.embedding_params()

    def attended_keys(self, seq_len: int | None = None) -> list[float]:
        """Per layer, the mean number of keys a query attends to over a causal sequence."""
        t = seq_len or self.max_seq_len
        full = (t + 1) / 2
        out = []
        for kind in self.layer_types():
            w = self.window or t
            if kind == "full_attention" or w >= t:
                out.append(full)
            else:
                out.append((w * (w + 1) / 2 + (t - w) * w) / t)
        return out

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (3× forward): matmuls incl. LM head, plus causal attention
        scores and values over each layer's window, at ``seq_len`` (default ``max_seq_len``)."""
        d, h, kv, hd, f = self._dims()
        matmul = self.n_layers * self._layer_matmul_weights() + self.vocab_size * d
        attention = sum(4 * h * hd * keys for keys in self.attended_keys(seq_len))
        return 3.0 * (2.0 * matmul + attention)

    def kv_cache_bytes_per_token(self, seq_len: int | None = None, bytes_per_value: int = 2) -> float:
        """KV-cache bytes per token of context at ``seq_len``; sliding layers keep only the window."""
        d, h, kv, hd, f = self._dims()
        t = seq_len or self.max_seq_len
        per_layer = 2 * kv * hd * bytes_per_value
        total = 0.0
        for kind in self.layer_types():
            kept = t if kind == "full_attention" or self.window is None else min(self.window, t)
            total += per_layer * kept / t
        return total

    def counts(self) -> dict[str, float]:
        """The counts constraints and objectives may name (see COUNT_NAMES)."""
        return {
            "params": self.param_count(),
            "non_embedding_params": self.non_embedding_params(),
            "flops_per_token": self.flops_per_token(),
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token(),
        }

    # ---- identity ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def arch_hash(self) -> str:
        """Hash of the canonical JSON of the resolved knobs: equal architectures, equal hash."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def summary(self) -> str:
        """One line for tables: family, depth × width, heads, FFN, attention."""
        attn: str = self.attention
        if self.attention == "sliding":
            attn = f"sliding{self.window}"
        elif self.attention == "local_global":
            attn = f"local{self.window}/global1:{self.global_every}"
        kv = f"/{self.n_kv_heads}kv" if self.n_kv_heads != self.n_heads else ""
        return (
            f"{self.family} L{self.n_layers} d{self.d_model} h{self.n_heads}{kv}x{self.head_dim} "
            f"ffn{self.ffn_dim} {self.activation} {attn}"
        )

    # ---- Hugging Face -----------------------------------------------------------------------
    def to_hf_config(self, **token_ids: int | None) -> Any:
        """The `transformers` config of the family (``token_ids``: pad/bos/eos_token_id)."""
        import transformers

        cls = getattr(transformers, self.spec.config_class)
        unknown = set(token_ids) - {"pad_token_id", "bos_token_id", "eos_token_id"}
        if unknown:
            raise TypeError(f"unknown token id keywords: {sorted(unknown)}")
        # Unset ids are None, never a family default that may lie outside this vocabulary.
        ids = {k: token_ids.get(k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
        if self.family in ("llama", "mistral", "qwen3"):
            kwargs = self._llama_style_kwargs()
        elif self.family == "gpt2":
            kwargs = self._gpt2_kwargs()
        else:  # bloom
            kwargs = self._bloom_kwargs()
        return cls(**kwargs, **ids)

    def _llama_style_kwargs(self) -> dict[str, Any]:
        d, h, kv, hd, f = self._dims()
        kwargs: dict[str, Any] = dict(
            vocab_size=self.vocab_size,
            hidden_size=d,
            intermediate_size=f,
            num_hidden_layers=self.n_layers,
            num_attention_heads=h,
            num_key_value_heads=kv,
            head_dim=hd,
            hidden_act=self.activation,
            max_position_embeddings=self.max_seq_len,
            rms_norm_eps=self.norm_eps,
            tie_word_embeddings=self.tie_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            attention_dropout=self.dropout,
        )
        if self.family == "mistral":
            kwargs["sliding_window"] = self.window if self.attention == "sliding" else None
        if self.family == "qwen3":
            sliding = self.attention != "full"
            kwargs.update(
                use_sliding_window=sliding,
                sliding_window=self.window if sliding else None,
                max_window_layers=self.n_layers,
                layer_types=self.layer_types(),
            )
        return kwargs

    def _gpt2_kwargs(self) -> dict[str, Any]:
        return dict(
            vocab_size=self.vocab_size,
            n_positions=self.max_seq_len,
            n_embd=self.d_model,
            n_layer=self.n_layers,
            n_head=self.n_heads,
            n_inner=self.ffn_dim,
            activation_function=self.activation,
            resid_pdrop=self.dropout,
            embd_pdrop=self.dropout,
            attn_pdrop=self.dropout,
            layer_norm_epsilon=self.norm_eps,
            tie_word_embeddings=self.tie_embeddings,
        )

    def _bloom_kwargs(self) -> dict[str, Any]:
        return dict(
            vocab_size=self.vocab_size,
            hidden_size=self.d_model,
            n_layer=self.n_layers,
            n_head=self.n_heads,
            layer_norm_epsilon=self.norm_eps,
            hidden_dropout=self.dropout,
            attention_dropout=self.dropout,
            tie_word_embeddings=self.tie_embeddings,
        )


KNOB_NAMES: tuple[str, ...] = tuple(ArchConfig.model_fields)


_KINDS: dict[type, str] = {list: "a list", tuple: "a list", dict: "a mapping"}


def _not_single_values(data: dict[Any, Any]) -> list[str]:
    """Each knob of ``data`` whose value is not one name or number (a list, a tuple, a mapping, a date), as
    'knob: expected one value, got ...': every knob takes a single value, and resolving one would fail on it."""
    problems = []
    for knob, value in data.items():
        if value is None or isinstance(value, str | numbers.Real):
            continue
        kind = _KINDS.get(type(value), f"a {type(value).__name__}")
        shown = repr(value) if isinstance(value, list | tuple | dict) else str(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        problems.append(f"{knob}: expected one value, got {kind} {shown}")
    return problems
