"""nas.overrides: `--set key.path=value` on a raw mapping, checked against a schema as it walks."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from nas.errors import NasInputError
from nas.overrides import apply_key_overrides, fields_at


class Inner(BaseModel):
    lr: float = 1.0
    steps: int = 1


class Item(BaseModel):
    name: str
    size: int = 0


class Root(BaseModel):
    inner: Inner = Inner()
    items: list[Item] = []
    hidden: str = ""


def test_values_are_yaml_and_lists_are_addressed_by_name_or_index():
    raw = {"items": [{"name": "a"}, {"name": "b"}]}
    out = apply_key_overrides(raw, ["inner.lr=0.5", "items.b.size=4", "items.0.size=[1, 2]"], Root)
    assert out == {"inner": {"lr": 0.5}, "items": [{"name": "a", "size": [1, 2]}, {"name": "b", "size": 4}]}
    assert raw == {"items": [{"name": "a"}, {"name": "b"}]}  # the input is not changed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inner.lrr=1", "inner.lrr: unknown key 'lrr' (did you mean 'lr'?)"),
        ("items.c.size=1", "items.c: no item 'c'"),
        ("items.a=1", "name a key inside the list item"),
        ("hidden=x", "unknown key 'hidden'"),
        ("inner", "expected key.path=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(NasInputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        apply_key_overrides({"items": [{"name": "a"}]}, [override], Root, hidden=("hidden",))


def test_fields_at_walks_models_and_lists():
    assert fields_at(Root, ["inner"]) == ["lr", "steps"]
    assert fields_at(Root, ["items", "0"]) == ["name", "size"]
    assert fields_at(Root, [], hidden=("hidden",)) == ["inner", "items"]


def test_a_set_alternative_replaces_the_files_and_two_are_refused():
    """A budget in tokens or in FLOPs (a section's ALTERNATIVES): `--set` of one replaces the file's other; a
    null sets no alternative; giving both by --set names the two keys."""
    from nas.protocol import TrialProtocol, load_protocol

    raw = {"pretrain": {"budget": {"tokens": 300}}, "target": {"tokens": 2400}}
    out = apply_key_overrides(raw, ["target.flops=1000", "pretrain.budget.seconds=60"], TrialProtocol)
    assert out["target"] == {"flops": 1000} and out["pretrain"]["budget"] == {"seconds": 60}
    assert raw["target"] == {"tokens": 2400}  # the file's mapping is untouched
    assert apply_key_overrides(raw, ["target.flops=null"], TrialProtocol)["target"] == {"tokens": 2400, "flops": None}
    with pytest.raises(NasInputError, match="target.flops and target.tokens: give one of them, not both"):
        apply_key_overrides(raw, ["target.flops=5e14", "target.tokens=10"], TrialProtocol)
    assert load_protocol("cpu-tiny", ["target.flops=5e14"]).target.flops == 5e14
    assert load_protocol("cpu-tiny", ["pretrain.budget.flops=1e12"]).pretrain.budget.tokens is None
