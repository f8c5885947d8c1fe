import pytest
import torch
import transformers
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode

from nas.arch import ArchConfig
from nas.families import FAMILIES

BASE = dict(vocab_size=100, max_seq_len=32, n_layers=2, d_model=32, n_heads=4)

# One case per family (and per way of reaching it), each built for real below.
CASES = {
    "llama-gqa": dict(n_kv_heads=2, ffn_dim=64),
    "llama-untied": dict(ffn_dim=48, tie_embeddings=False, activation="gelu"),
    "mistral-decoupled-head-dim": dict(n_heads=3, head_dim=16, n_kv_heads=1, ffn_dim=64),
    "mistral-sliding": dict(n_kv_heads=1, attention="sliding", window=8),
    "qwen3-local-global": dict(n_layers=4, n_kv_heads=2, attention="local_global", window=8, global_every=2),
    "qwen3-explicit": dict(family="qwen3", ffn_dim=40, rope_theta=5e5),
    "gpt2": dict(position="learned", ffn_dim=80, dropout=0.1),
    "gpt2-untied": dict(position="learned", tie_embeddings=False, activation="relu"),
    "bloom-alibi": dict(position="alibi"),
    "bloom-untied": dict(position="alibi", tie_embeddings=False),
}


def make(**kw) -> ArchConfig:
    return ArchConfig(**{**BASE, **kw})


@pytest.mark.parametrize("case", list(CASES))
def test_param_count_matches_real_model(case):
    arch = make(**CASES[case])
    model = transformers.AutoModelForCausalLM.from_config(arch.to_hf_config())
    assert sum(p.numel() for p in model.parameters()) == arch.param_count()
    embedding = model.get_input_embeddings().weight.numel()
    assert arch.embedding_params() >= embedding
    out = model(input_ids=torch.randint(0, 100, (2, 32)))
    assert out.logits.shape == (2, 32, 100)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_flops_match_torch_flop_counter(case):
    """Independent check of the FLOP formula: torch's counter on an eager forward pass.

    Eager attention computes the full T x T score matrix, so the counter sees non-causal attention;
    ours counts causal (window-limited) keys. The matmul part must agree exactly.
    """
    arch = make(**CASES[case])
    model = transformers.AutoModelForCausalLM.from_config(arch.to_hf_config(), attn_implementation="eager")
    t = arch.max_seq_len
    with FlopCounterMode(display=False) as counter:
        model(input_ids=torch.randint(0, 100, (1, t)))
    h, hd = arch.n_heads, arch.head_dim
    causal = sum(4 * h * hd * keys for keys in arch.attended_keys()) * t
    non_causal = 4 * h * hd * t * arch.n_layers * t
    assert counter.get_total_flops() == pytest.approx(arch.flops_per_token() / 3 * t - causal + non_causal)


def test_flops_and_kv_cache_by_hand():
    arch = ArchConfig(vocab_size=10, max_seq_len=3, n_layers=1, d_model=4, n_heads=1, ffn_dim=8)
    # matmuls: q,k,v,o 4*16 + gated FFN 3*4*8 + LM head 10*4 = 200; attention 4*1*4*(3+1)/2 = 32
    assert arch.flops_per_token() == 3 * (2 * 200 + 32)
    assert arch.kv_cache_bytes_per_token() == 2 * 1 * 4 * 2
    sliding = ArchConfig(**{**arch.to_dict(), "family": None, "attention": "sliding", "window": 1})
    assert sliding.family == "mistral"
    assert sliding.attended_keys() == [1.0]
    assert sliding.flops_per_token() == 3 * (2 * 200 + 16)
    assert sliding.kv_cache_bytes_per_token() == pytest.approx(16 / 3)


def test_attended_keys_window_larger_than_context_is_full():
    arch = make(attention="sliding", window=64)
    assert arch.attended_keys() == [16.5, 16.5]


def test_local_global_layer_types_reach_hf():
    arch = make(n_layers=6, attention="local_global", window=8, global_every=3)
    assert arch.family == "qwen3"
    expected = ["sliding_attention", "sliding_attention", "full_attention"] * 2
    assert arch.layer_types() == expected
    config = arch.to_hf_config()
    assert config.layer_types == expected and config.sliding_window == 8 and config.use_sliding_window


def test_hf_config_knobs():
    arch = make(n_heads=4, n_kv_heads=1, head_dim=16, ffn_dim=96, rope_theta=1e6, norm_eps=1e-6)
    config = arch.to_hf_config(pad_token_id=0)
    assert type(config).__name__ == "LlamaConfig"
    assert (config.num_key_value_heads, config.head_dim, config.intermediate_size) == (1, 16, 96)
    assert config.rope_parameters["rope_theta"] == 1e6
    assert config.pad_token_id == 0 and config.bos_token_id is None and config.rms_norm_eps == 1e-6
    gpt2 = make(position="learned").to_hf_config()
    assert gpt2.n_positions == 32 and gpt2.bos_token_id is None
    mistral = make(attention="sliding", window=8).to_hf_config()
    assert type(mistral).__name__ == "MistralConfig" and mistral.sliding_window == 8


def test_family_resolution_and_defaults():
    assert make().family == "llama"
    assert make(n_heads=3, head_dim=8).family == "mistral"  # Llama needs d_model % n_heads == 0
    assert make(qk_norm=True).family == "qwen3"
    assert make(position="learned").family == "gpt2"
    bloom = make(position="alibi")
    assert (bloom.family, bloom.ffn_dim, bloom.activation, bloom.rope_theta) == ("bloom", 128, "gelu", None)
    llama = make()
    assert (llama.n_kv_heads, llama.head_dim, llama.ffn_dim, llama.norm, llama.ffn) == (4, 8, 128, "rmsnorm", "gated")
    assert llama.rope_theta == 10000.0


@pytest.mark.parametrize(
    ("knobs", "fragments"),
    [
        (dict(family="llama", norm="layernorm"), ["family 'llama' cannot express", "norm=layernorm"]),
        (dict(family="gpt2", n_kv_heads=2), ["n_kv_heads=2", "multi-head attention only"]),
        (dict(family="gpt2", head_dim=16), ["head_dim=16"]),
        (dict(family="bloom", ffn_dim=64), ["ffn_dim=64", "4 * d_model"]),
        (dict(family="mistral", attention="local_global", window=4, global_every=2), ["attention=local_global"]),
        (dict(position="alibi", attention="sliding", window=4), ["no transformers family", "bloom: attention=sliding"]),
        (dict(position="learned", norm="rmsnorm"), ["gpt2: norm=rmsnorm"]),
        (dict(n_heads=3), ["d_model=32 is not divisible by n_heads=3"]),
        (dict(n_kv_heads=3), ["must be a multiple of n_kv_heads=3"]),
        (dict(attention="sliding"), ["needs window"]),
        (dict(nope=1), ["nope"]),
    ],
)
def test_conflicts_name_the_knob(knobs, fragments):
    with pytest.raises(ValidationError) as info:
        make(**knobs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_hash_is_canonical():
    a = make(n_kv_heads=4)  # 4 == n_heads: the default
    b = make(family="llama", head_dim=8, ffn_dim=128, window=16, rope_theta=10000)  # window unused when full
    assert a == b and a.arch_hash() == b.arch_hash()
    assert make(n_layers=3).arch_hash() != a.arch_hash()
    assert ArchConfig(**a.to_dict()).arch_hash() == a.arch_hash()
    assert make(position="learned", rope_theta=5e5).arch_hash() == make(position="learned").arch_hash()


def test_families_table_matches_transformers():
    for spec in FAMILIES.values():
        assert hasattr(transformers, spec.config_class)
