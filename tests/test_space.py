import pytest
import torch
import transformers

from nas.space import load_space, parse_space, random_samples
from tests.conftest import MINIMAL_SPACE, SHIPPED_SPACES


def test_shipped_spaces_exist():
    assert {"tiny", "llama-gqa", "hybrid-attention", "gpt2-classic", "small-100m"} <= set(SHIPPED_SPACES)


@pytest.mark.parametrize("name", SHIPPED_SPACES)
def test_shipped_space_samples_build_with_predicted_param_counts(name):
    """200 samples: mostly feasible, and every distinct architecture's HF model has the predicted count.

    Every architecture is built on the meta device (the real HF classes, no storage); a few per
    space, and every one of `tiny`, are also built with real weights on the CPU.
    """
    space = load_space(name)
    samples = random_samples(space, 200, seed=0)
    feasible = [s for s in samples if s.feasible]
    assert len(feasible) >= 150, [s.reason for s in samples if not s.feasible][:3]
    archs = {s.arch.arch_hash(): s.arch for s in feasible}
    by_size = sorted(archs, key=lambda h: archs[h].param_count())
    real = set(by_size if name == "tiny" else by_size[:3])
    for arch_hash, arch in archs.items():
        config = arch.to_hf_config()
        if arch_hash in real:
            model = transformers.AutoModelForCausalLM.from_config(config)
        else:
            with torch.device("meta"):
                model = transformers.AutoModelForCausalLM.from_config(config)
        assert sum(p.numel() for p in model.parameters()) == arch.param_count(), arch.summary()


def test_small_100m_is_gpu_scale():
    params = [s.arch.param_count() for s in random_samples(load_space("small-100m"), 200, seed=1) if s.feasible]
    assert min(params) >= 20e6 and max(params) <= 150e6 and max(params) > 100e6


def test_same_seed_same_samples():
    space = load_space("hybrid-attention")
    a = [(s.values, s.reason) for s in random_samples(space, 20, seed=7)]
    b = [(s.values, s.reason) for s in random_samples(space, 20, seed=7)]
    c = [(s.values, s.reason) for s in random_samples(space, 20, seed=8)]
    assert a == b and a != c


def test_conditional_parameters_sampled_only_when_condition_holds():
    samples = random_samples(load_space("tiny"), 100, seed=0)
    for s in samples:
        assert ("window" in s.values) == (s.values["attention"] != "full")
        assert ("global_every" in s.values) == (s.values["attention"] == "local_global")
    assert {s.values["attention"] for s in samples} == {"full", "sliding", "local_global"}
    assert {s.arch.family for s in samples if s.arch} == {"llama", "mistral", "qwen3"}


def test_derived_values_and_mqa_gqa_mha():
    samples = [s for s in random_samples(load_space("llama-gqa"), 100, seed=0) if s.feasible]
    for s in samples:
        arch = s.arch
        assert arch.ffn_dim % 64 == 0
        expected = {"mha": arch.n_heads, "mqa": 1, "gqa": max(2, arch.n_heads // 4)}[s.values["kv_sharing"]]
        assert arch.n_kv_heads == expected
    assert {s.values["kv_sharing"] for s in samples} == {"mha", "gqa", "mqa"}


def test_infeasible_sample_records_the_violated_constraint():
    space = parse_space(MINIMAL_SPACE + "constraints:\n  - n_layers == 1\n")
    infeasible = space.resolve({"vocab_size": 256, "max_seq_len": 32, "n_layers": 2, "n_heads": 2, "head_dim": 8})
    assert not infeasible.feasible and infeasible.arch is None
    assert infeasible.reason == "constraint `n_layers == 1` violated (n_layers=2)"
    ok = space.resolve({"vocab_size": 256, "max_seq_len": 32, "n_layers": 1, "n_heads": 2, "head_dim": 8})
    assert ok.feasible and ok.arch.d_model == 16


def test_constraint_on_counts_rejects_big_models():
    space = parse_space(MINIMAL_SPACE + "constraints:\n  - non_embedding_params <= 6000\n")
    samples = random_samples(space, 30, seed=0)
    assert any(s.feasible for s in samples) and any(not s.feasible for s in samples)
    for s in samples:
        if s.feasible:
            assert s.arch.non_embedding_params() <= 6000
        else:
            assert s.reason.startswith("constraint `non_embedding_params <= 6000` violated (non_embedding_params=")


def test_architecture_conflict_is_an_infeasible_reason():
    text = MINIMAL_SPACE.replace(
        "  head_dim: 8\n", "  head_dim: 8\n  position: {type: choice, values: [rope, learned]}\n"
    )
    text += "  n_kv_heads: 1\n"
    space = parse_space(text)
    learned = space.resolve(
        {"vocab_size": 256, "max_seq_len": 32, "n_layers": 1, "n_heads": 2, "head_dim": 8, "position": "learned"}
    )
    assert not learned.feasible and "gpt2: n_kv_heads=1 != n_heads=2" in learned.reason


def test_impossible_constraint_refused_at_load(write_space):
    from nas.errors import NasInputError

    path = write_space(MINIMAL_SPACE + "constraints:\n  - params < 10\n")
    with pytest.raises(NasInputError) as info:
        load_space(path)
    assert str(path) in str(info.value) and "constraints: no feasible architecture in 256 random samples" in str(
        info.value
    )


def test_content_hash_follows_text():
    assert parse_space(MINIMAL_SPACE).content_hash == parse_space(MINIMAL_SPACE).content_hash
    assert parse_space(MINIMAL_SPACE).content_hash != parse_space(MINIMAL_SPACE + "\n# c\n").content_hash
