import pytest

from nas.errors import NasInputError
from nas.protocol import load_protocol, parse_protocol
from nas.resources import shipped_names
from tests.conftest import run


@pytest.mark.parametrize("name", shipped_names("trials"))
def test_shipped_protocols_load(name):
    protocol = load_protocol(name)
    assert protocol.name == name and protocol.tasks
    # every shipped protocol defines all three kinds (cpu-tiny runs only qa by default: see its comments)
    every = load_protocol(name, [f"tasks.{t}.enabled=true" for t in protocol.disabled_tasks])
    assert {t.kind for t in every.tasks} == {"classification", "qa", "generation"}


def test_defaults_and_metric_names():
    protocol = parse_protocol("tasks: [{name: c, kind: classification}, {name: q, kind: qa}]\n")
    assert protocol.data.source == "builtin" and protocol.tokenizer.kind == "train"
    assert protocol.pretrain.budget.tokens == 200_000 and protocol.objectives["val_loss"].direction == "minimize"
    names = protocol.metric_names()
    assert {"val_loss", "params", "c.accuracy", "c.macro_f1", "q.f1", "q.exact_match"} <= set(names)


def test_overrides_apply_and_change_the_hash():
    base = load_protocol("cpu-tiny")
    changed = load_protocol(
        "cpu-tiny",
        ["pretrain.budget.tokens=5000", "tasks.qa.steps=3", "tasks.1.lr=0.01", "pretrain.optimizer.betas=[0.8, 0.9]"],
    )
    # a task by name or by its index in the file (claims, qa, answer; only qa is enabled)
    assert changed.pretrain.budget.tokens == 5000 and changed.tasks[0].steps == 3 and changed.tasks[0].lr == 0.01
    assert changed.pretrain.optimizer.betas == (0.8, 0.9)
    assert changed.content_hash != base.content_hash == load_protocol("cpu-tiny").content_hash


def test_weighted_objective():
    protocol = load_protocol(
        "cpu-tiny",
        [
            "tasks.claims.enabled=true",
            "objectives={val_loss: minimize}",
            "objectives.score.direction=maximize",
            "objectives.score.weights={claims.accuracy: 1, qa.f1: 2}",
        ],
    )
    assert protocol.objective_values({"val_loss": 2.0, "claims.accuracy": 0.5, "qa.f1": 0.25}) == [2.0, 1.0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.budjet.tokens=1", "--set: pretrain.budjet: unknown key 'budjet' (did you mean 'budget'?)"),
        ("tasks.qaa.steps=1", "--set: tasks.qaa: no item 'qaa' (did you mean 'qa'?)"),
        ("pretrain.seq_len", "--set: 'pretrain.seq_len': expected key.path=value"),
        ("pretrain.seq_len.x=1", "--set: pretrain.seq_len: is a value (256), not a section"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(NasInputError) as info:
        load_protocol("cpu-tiny", [override])
    assert str(info.value) == message


MALFORMED = {
    "unknown key": (
        "pretrain: {optimiser: {lr: 1}}\n",
        "pretrain.optimiser: unknown key 'optimiser' (did you mean 'optimizer'?)",
    ),
    "unknown top-level key": ("taks: []\n", "taks: unknown key 'taks' (did you mean 'tasks'?)"),
    "wrong type": ("pretrain: {seq_len: long}\n", "pretrain.seq_len: Input should be a valid integer"),
    "two budgets": (
        "pretrain: {budget: {tokens: 10, flops: 1.0e9}}\n",
        "pretrain.budget: give exactly one of tokens, flops, seconds (got tokens, flops)",
    ),
    "batch not a multiple": (
        "pretrain: {seq_len: 100, batch_tokens: 150}\n",
        "pretrain: batch_tokens=150 must be a multiple of seq_len=100",
    ),
    "files without section": ("data: {source: files}\n", "data: source 'files' needs a 'files' section"),
    "unknown task kind": (
        "tasks: [{name: a, kind: summarise}]\n",
        "tasks.0.kind: Input should be 'classification', 'qa' or 'generation'",
    ),
    "unknown task key": (
        "tasks: [{name: a, kind: qa, stepz: 3}]\n",
        "tasks.0.stepz: unknown key 'stepz' (did you mean 'steps'?)",
    ),
    "unknown objective": (
        "objectives: {val_los: minimize}\n",
        "objectives.val_los: unknown metric 'val_los' (did you mean 'val_loss'?)",
    ),
    "bad direction": ("objectives: {val_loss: lower}\n", "objectives.val_loss.direction: Input should be"),
    "duplicate task": ("tasks: [{name: a, kind: qa}, {name: a, kind: qa}]\n", "task name 'a' is used twice"),
    "not YAML": ("pretrain: {seq_len: [1\n", "not valid YAML at line"),
    "not a mapping": ("[1, 2]\n", "a trial protocol must be a YAML mapping, got list"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_protocol_exit_2(case, tmp_path, capsys):
    text, fragment = MALFORMED[case]
    path = tmp_path / "protocol.yaml"
    path.write_text(text)
    for verb in (["protocols", "validate"], ["protocols", "show"]):
        code, out, err = run([*verb, str(path)], capsys)
        assert code == 2 and "Traceback" not in err
        assert f"{path}: {fragment}" in err, err


def test_missing_protocol_exit_2(capsys):
    code, _, err = run(["protocols", "show", "cpu-tiyn"], capsys)
    assert code == 2 and "(did you mean 'cpu-tiny'?)" in err


@pytest.mark.parametrize("group", ["protocols", "trials"])  # `nas trials`: the group's first name, kept
def test_cli_show_and_list(group, capsys):
    code, out, _ = run([group, "show", "cpu-tiny", "--set", "pretrain.budget.tokens=1234"], capsys)
    assert code == 0 and "tokens: 1234" in out and "qa.f1" in out
    code, out, _ = run([group, "validate", "cpu-tiny"], capsys)
    assert code == 0 and "(cpu-tiny, 1 task: qa; off: claims, answer)" in " ".join(out.split())  # wrapped lines
    code, out, _ = run([group, "list"], capsys)
    assert code == 0 and "cpu-tiny" in out and "gpu-short" in out and "text-files" in out


def test_the_old_group_name_is_hidden_from_the_help(capsys):
    code, out, _ = run(["--help"], capsys)
    commands = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert code == 0 and "protocols" in commands and "trials" not in commands


def test_the_hash_names_how_a_trial_measures(monkeypatch):
    """A study or checkpoint made when trials measured differently is not resumed as the same run."""
    import nas.protocol as protocol_module

    now = load_protocol("cpu-tiny").content_hash
    monkeypatch.setattr(protocol_module, "MEASURE", protocol_module.MEASURE - 1)
    assert load_protocol("cpu-tiny").content_hash != now


def test_a_disabled_task_is_checked_but_not_run():
    text = """
tasks:
  - {name: c, kind: classification}
  - {name: q, kind: qa, enabled: false, steps: 3}
"""
    protocol = parse_protocol(text, source="p.yaml")
    assert [t.name for t in protocol.tasks] == ["c"] and protocol.disabled_tasks == ["q"]
    assert "q.f1" not in protocol.metric_names() and "c.near.accuracy" in protocol.metric_names()
    on = parse_protocol(text, source="p.yaml", overrides=["tasks.q.enabled=true"])
    assert [t.name for t in on.tasks] == ["c", "q"] and on.tasks[1].steps == 3
    assert on.content_hash != protocol.content_hash
    # a disabled task is still validated, and an objective cannot name its metrics
    with pytest.raises(NasInputError, match=r"tasks\.1\.steps"):
        parse_protocol(text.replace("steps: 3", "steps: 0"), source="p.yaml")
    with pytest.raises(NasInputError, match="unknown metric 'q.f1'"):
        parse_protocol(text + "objectives: {q.f1: maximize}\n", source="p.yaml")


def test_a_task_gate_cannot_skip_what_an_objective_needs():
    gate = "task_gate={quantile: 0.5}"
    protocol = load_protocol("cpu-tiny", [gate])
    assert protocol.task_gate is not None and protocol.task_gate.min_trials == 3
    assert protocol.content_hash != load_protocol("cpu-tiny").content_hash  # a gated trial reports less
    score = "objectives={score: {direction: maximize, weights: {val_loss: -1, qa.near.f1: 1}}}"
    with pytest.raises(NasInputError, match="task_gate: objectives.score uses task metric 'qa.near.f1'"):
        load_protocol("cpu-tiny", [gate, score])
    assert load_protocol("cpu-tiny", [gate, "tasks=[]"]).task_gate is not None  # nothing to gate: fine


def test_lr_width_base_scales_the_peak_lr_of_wider_models_and_is_hashed_only_when_set():
    protocol = load_protocol("cpu-tiny", overrides=["pretrain.optimizer.lr_width_base=null"])
    optimizer = protocol.pretrain.optimizer
    assert [optimizer.peak_lr(w) for w in (None, 64, 512)] == [optimizer.lr] * 3  # off: one lr for every width
    assert "lr_width_base" not in protocol._hashed()["pretrain"]["optimizer"]  # so older protocol hashes hold
    whole = load_protocol("cpu-tiny", ["pretrain.optimizer.lr_width_scope=model"]).pretrain.optimizer
    assert whole.lr_width_base == 64
    assert whole.peak_lr(32) == whole.peak_lr(64) == whole.lr
    assert whole.peak_lr(256) == pytest.approx(whole.lr / 4)
    assert whole.peak_lr(None) == whole.lr  # a module of unknown width keeps the protocol's lr
    assert load_protocol("cpu-tiny").content_hash != protocol.content_hash


@pytest.mark.parametrize("name", ["cpu-tiny", "text-files", "gpu-files"])
def test_shipped_protocols_scale_only_the_hidden_matrices_lr_with_width(name):
    """µP's Adam rule, measured best on two corpora (bench/lr_rule.py): the schedule peaks at lr for every width,
    the hidden matrices take lr x 64 / d_model above width 64. The rule it replaced is hashed as it was."""
    shipped = load_protocol(name).pretrain.optimizer
    assert shipped.lr_width_scope == "hidden" and shipped.lr_width_base == 64
    assert shipped.peak_lr(256) == shipped.lr and shipped.width_factor(256) == pytest.approx(1 / 4)
    old = load_protocol(name, ["pretrain.optimizer.lr_width_scope=model"])
    assert "lr_width_scope" not in old._hashed()["pretrain"]["optimizer"]
    assert old.content_hash != load_protocol(name).content_hash


def test_train_layers_is_hashed_only_when_set():
    protocol = load_protocol("cpu-tiny")
    assert protocol.tasks[0].train_layers is None and "train_layers" not in protocol._hashed()["tasks"][0]
    top = load_protocol("cpu-tiny", overrides=["tasks.qa.train_layers=1"])
    assert top.tasks[0].train_layers == 1 and top.content_hash != protocol.content_hash


def test_length_grouping_is_hashed_only_when_set():
    """A key added since is left out of the hash at its default, so studies made before it still resume."""
    protocol = load_protocol("cpu-tiny")
    assert protocol.tasks[0].length_grouping == 1 and "length_grouping" not in protocol._hashed()["tasks"][0]
    grouped = load_protocol("cpu-tiny", overrides=["tasks.qa.length_grouping=4"])
    assert grouped.tasks[0].length_grouping == 4 and grouped.content_hash != protocol.content_hash


def test_repeats_is_hashed_only_when_set():
    protocol = load_protocol("cpu-tiny")
    assert protocol.tasks[0].repeats == 1 and "repeats" not in protocol._hashed()["tasks"][0]
    four = load_protocol("cpu-tiny", overrides=["tasks.qa.repeats=4"])
    assert four.tasks[0].repeats == 4 and four.content_hash != protocol.content_hash


def test_choices_field_is_hashed_only_when_set_and_adds_the_choice_metric():
    protocol = load_protocol("text-files")
    completion = next(t for t in protocol.tasks if t.kind == "generation")
    assert "choices_field" not in protocol._hashed()["tasks"][protocol.tasks.index(completion)]["data"]["files"]
    assert f"{completion.name}.choice_accuracy" not in protocol.metric_names()  # files without candidates
    with_choices = load_protocol("text-files", [f"tasks.{completion.name}.data.files.choices_field=choices"])
    assert f"{completion.name}.choice_accuracy" in with_choices.metric_names()
    assert with_choices.content_hash != protocol.content_hash
    builtin = load_protocol("cpu-tiny", ["tasks.answer.enabled=true"]).metric_names()
    assert "answer.choice_accuracy" in builtin and "answer.far.choice_accuracy" in builtin  # builtin: candidates


def test_a_target_makes_the_prediction_the_default_objective():
    wsd = "pretrain: {schedule: {kind: wsd, cooldowns: [0.25, 0.5]}}\n"
    predicted = parse_protocol(wsd + "target: {tokens: 1600000}\n", source="p.yaml")
    assert list(predicted.objectives) == ["predicted_val_loss"]
    assert predicted.objectives["predicted_val_loss"].direction == "minimize"
    assert list(parse_protocol(wsd, source="p.yaml").objectives) == ["val_loss"]  # no target: the loss
    by_override = parse_protocol(wsd, source="p.yaml", overrides=["target.tokens=1600000"])
    assert list(by_override.objectives) == ["predicted_val_loss"]
    chosen = parse_protocol(wsd + "target: {tokens: 1600000}\nobjectives: {val_loss: minimize}\n", source="p.yaml")
    assert list(chosen.objectives) == ["val_loss"]  # objectives given: kept
    no_points = parse_protocol("target: {tokens: 1600000}\n", source="p.yaml")  # no cool-downs: nothing to predict
    assert list(no_points.objectives) == ["val_loss"] and "predicted_val_loss" not in no_points.metric_names()


def test_reach_penalty_is_hashed_only_when_set():
    protocol = load_protocol("cpu-tiny")
    assert protocol.target.reach_penalty == 0 and "reach_penalty" not in protocol._hashed().get("target", {})
    penalised = load_protocol("cpu-tiny", overrides=["target.reach_penalty=0.01"])
    assert penalised.target.reach_penalty == 0.01 and penalised.content_hash != protocol.content_hash
