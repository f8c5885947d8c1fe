import json

import pytest
import transformers

from nas.errors import NasInputError
from nas.export import export_architecture, load_architecture, load_metrics
from tests.test_arch import CASES, make


@pytest.mark.parametrize("case", list(CASES))
def test_export_reload_round_trip(case, tmp_path):
    arch = make(**CASES[case])
    out = export_architecture(arch, tmp_path / case, metrics={"val_loss": 2.5}, pad_token_id=0)
    assert {p.name for p in out.iterdir()} == {"config.json", "architecture.yaml", "metrics.json"}

    config = transformers.AutoConfig.from_pretrained(out)
    assert type(config) is type(arch.to_hf_config())
    assert config.pad_token_id == 0
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == arch.param_count()
    if arch.attention != "full" and arch.family == "qwen3":
        assert config.layer_types == arch.layer_types()

    reloaded = load_architecture(out)
    assert reloaded == arch and reloaded.arch_hash() == arch.arch_hash()
    assert load_metrics(out) == {"val_loss": 2.5}
    assert arch.arch_hash() in (out / "architecture.yaml").read_text()


def test_export_without_metrics(tmp_path):
    out = export_architecture(make(), tmp_path / "m")
    assert not (out / "metrics.json").exists() and load_metrics(out) is None
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"


def test_load_architecture_errors_name_the_file(tmp_path):
    with pytest.raises(NasInputError, match="architecture.yaml: no such file"):
        load_architecture(tmp_path)
    (tmp_path / "architecture.yaml").write_text("n_layers: 2\nn_layer: 3\n")
    with pytest.raises(NasInputError) as info:
        load_architecture(tmp_path)
    message = str(info.value)
    assert "architecture.yaml: n_layer: unknown key 'n_layer' (did you mean 'n_layers'?)" in message
    assert "architecture.yaml: d_model: Field required" in message
