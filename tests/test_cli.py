"""The CLI: each verb works, and bad input ends in exit 2 with one message naming file and key."""

import json
import re

import pytest

from tests.conftest import MINIMAL_SPACE, run


def test_spaces_list(capsys):
    code, out, _ = run(["spaces", "list"], capsys)
    assert code == 0
    for name in ("tiny", "llama-gqa", "hybrid-attention", "gpt2-classic", "small-100m"):
        assert name in out


def test_spaces_show(capsys):
    code, out, _ = run(["spaces", "show", "tiny"], capsys)
    assert code == 0
    assert "n_layers" in out and "non_embedding_params <= 1.5e6" in out and "feasible random samples" in out


def test_spaces_validate_shipped(capsys):
    from nas.resources import shipped_dir

    files = sorted(str(p) for p in shipped_dir("search_spaces").glob("*.yaml"))
    code, out, _ = run(["spaces", "validate", *files], capsys)
    assert code == 0 and out.count("ok ") == len(files)


def test_spaces_sample_json_is_deterministic(capsys):
    code, out, _ = run(["spaces", "sample", "tiny", "-n", "8", "--seed", "3", "--json"], capsys)
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 8
    for r in records:
        assert r["feasible"] and r["params"] > r["non_embedding_params"] > 0
        assert r["flops_per_token"] > 0 and r["kv_cache_bytes_per_token"] > 0 and len(r["hash"]) == 16
    _, again, _ = run(["spaces", "sample", "tiny", "-n", "8", "--seed", "3", "--json"], capsys)
    _, other, _ = run(["spaces", "sample", "tiny", "-n", "8", "--seed", "4", "--json"], capsys)
    assert again == out and other != out


def test_spaces_sample_table_shows_infeasible_reason(write_space, capsys, monkeypatch):
    from nas import cli

    monkeypatch.setattr(cli.console, "width", 250)
    path = write_space(MINIMAL_SPACE + "constraints:\n  - n_layers == 1\n")
    code, out, _ = run(["spaces", "sample", str(path), "-n", "12", "--seed", "0"], capsys)
    assert code == 0
    assert "infeasible" in out and "violated" in out and "llama" in out


MALFORMED = {
    "unknown top-level key": (
        MINIMAL_SPACE + "constraint:\n  - params < 1e9\n",
        ["constraint: unknown key (did you mean 'constraints'?)"],
    ),
    "unknown spec key": (
        MINIMAL_SPACE.replace("high: 2}", "hihg: 2}"),
        [
            "parameters.n_layers.hihg: unknown key 'hihg' (did you mean 'high'?)",
            "parameters.n_layers.high: Field required",
        ],
    ),
    "misspelt knob": (
        MINIMAL_SPACE.replace("  n_layers:", "  n_layer:"),
        [
            "parameters.n_layer: 'n_layer' is not an architecture knob (did you mean 'n_layers'?)",
            "parameters: the architecture needs 'n_layers'",
        ],
    ),
    "wrong type": (
        MINIMAL_SPACE.replace("low: 1,", "low: one,"),
        ["parameters.n_layers.low: Input should be a valid integer"],
    ),
    "low > high": (
        MINIMAL_SPACE.replace("low: 1, high: 2", "low: 8, high: 2"),
        ["parameters.n_layers: `low <= high` must hold, but got low=8 > high=2"],
    ),
    "empty choice": (
        MINIMAL_SPACE.replace("values: [2, 4]", "values: []"),
        ["parameters.n_heads.values: List should have at least 1 item"],
    ),
    "unknown type": (
        MINIMAL_SPACE.replace("type: choice", "type: choise"),
        ["parameters.n_heads.type: must be one of int, float, choice, fixed, got 'choise' (did you mean 'choice'?)"],
    ),
    "unknown name in expression": (
        MINIMAL_SPACE.replace("n_heads * head_dim", "n_head * head_dim"),
        ["derived.d_model: unknown name 'n_head' (did you mean 'n_heads'?)"],
    ),
    "unknown name in constraint": (
        MINIMAL_SPACE + "constraints:\n  - non_embeding_params < 1e6\n",
        ["constraints[0]: unknown name 'non_embeding_params' (did you mean 'non_embedding_params'?)"],
    ),
    "condition on a later parameter": (
        MINIMAL_SPACE.replace(
            "  n_layers: {type: int, low: 1, high: 2}", "  n_layers: {type: int, low: 1, high: 2, when: 'n_heads > 2'}"
        ),
        ["parameters.n_layers.when: 'n_heads' is a later parameter; a condition reads only earlier ones"],
    ),
    "derived reads a later derived": (
        MINIMAL_SPACE + "  ffn_dim: 2 * d_model\n".replace("ffn_dim: 2 * d_model", "ffn_dim: 2 * x") + "  x: 3\n",
        ["derived.ffn_dim: 'x' is a later derived value; define it before 'ffn_dim'"],
    ),
    "forbidden expression": (
        MINIMAL_SPACE + "constraints:\n  - \"__import__('os').system('touch /tmp/pwned')\"\n",
        ["constraints[0]: attribute access (x.y) not allowed in expressions"],
    ),
    "lambda": (MINIMAL_SPACE + "constraints:\n  - '(lambda: 1)()'\n", ["constraints[0]: lambdas not allowed"]),
    "unquoted colon": (
        MINIMAL_SPACE + "constraints:\n  - (lambda: 1)()\n",
        ["constraints[0]: YAML read this as a mapping"],
    ),
    "subscript": (
        MINIMAL_SPACE + "constraints:\n  - n_layers[0] > 1\n",
        ["constraints[0]: subscripts (x[i]) not allowed"],
    ),
    "not YAML": ("parameters: {n_layers: [1, 2\n", ["not valid YAML at line"]),
    "not a mapping": ("- 1\n- 2\n", ["a search space must be a YAML mapping, got list"]),
    "unknown family": (
        MINIMAL_SPACE.replace("derived:", "  family: lama\nderived:"),
        ["parameters.family: unknown family 'lama' (did you mean 'llama'?)"],
    ),
    "knob no family expresses": (
        MINIMAL_SPACE.replace(
            "derived:", "  family: llama\n  position: {type: choice, values: [rope, alibi]}\nderived:"
        ),
        ["parameters.position: position='alibi' cannot be expressed by family llama"],
    ),
    "impossible constraint": (
        MINIMAL_SPACE + "constraints:\n  - params < 10\n",
        ["constraints: no feasible architecture in 256 random samples"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_space_exit_2_names_file_and_key(case, write_space, capsys):
    text, expected = MALFORMED[case]
    path = write_space(text)
    for verb in (["spaces", "validate"], ["spaces", "sample"], ["spaces", "show"]):
        code, out, err = run([*verb, str(path)], capsys)
        assert code == 2, (verb, out, err)
        assert "Traceback" not in err and "Traceback" not in out
        assert err.startswith("error: ")
        for fragment in expected:
            assert f"{path}: {fragment}" in err, err


def test_missing_file_exit_2(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    code, _, err = run(["spaces", "validate", str(missing)], capsys)
    assert code == 2 and f"{missing}: no such file" in err and "Traceback" not in err
    code, _, err = run(["spaces", "sample", "tinny"], capsys)
    assert code == 2 and "tinny: no such file, and no shipped search space of that name (did you mean 'tiny'?)" in err


def test_validate_reports_every_file(write_space, capsys):
    good = write_space(MINIMAL_SPACE, "good.yaml")
    bad = write_space("- 1\n", "bad.yaml")
    code, out, err = run(["spaces", "validate", str(good), str(bad)], capsys)
    assert code == 2 and f"ok {good}" in out and f"{bad}: a search space must be a YAML mapping" in err


def test_usage_error_exit_2(capsys):
    code, _, _ = run(["spaces", "sample", "tiny", "-n", "0"], capsys)
    assert code == 2


BASELINES = {"claims.accuracy": 0.5, "claims.chance": 1 / 3, "qa.f1": 0.07}
PREDICTORS = {"claims.accuracy": "majority class", "claims.chance": "uniform guess", "qa.f1": "first 2 words"}


def test_trials_run_prints_each_task_metric_beside_its_baseline(capsys, monkeypatch):
    import nas.trial
    from nas import cli

    def trained(arch, protocol, **kwargs):  # what run_trial returns, without training
        metrics = {"val_loss": 3.0, "claims.accuracy": 0.512, "qa.f1": 0.25}
        return nas.trial.TrialResult(
            arch, "complete", metrics, task_baselines=BASELINES, baseline_predictors=PREDICTORS
        )

    monkeypatch.setattr(nas.trial, "run_trial", trained)
    monkeypatch.setattr(cli.console, "width", 200)
    code, out, _ = run(["trials", "run", "cpu-tiny", "--seed", "3"], capsys)
    assert code == 0 and "baseline (no model)" in out
    assert re.search(r"claims\.accuracy\s*│\s*0\.512\s*│\s*majority class 0\.5, chance 0\.3333\s*│", out), out
    assert re.search(r"qa\.f1\s*│\s*0\.25\s*│\s*first 2 words 0\.07\s*│", out), out
    assert re.search(r"val_loss\s*│\s*3\s*│\s*│", out), out  # not a task metric: no baseline
    code, out, _ = run(["trials", "run", "cpu-tiny", "--seed", "3", "--json"], capsys)
    record = json.loads(out.splitlines()[-1])
    assert code == 0 and record["task_baselines"] == BASELINES and record["baseline_predictors"] == PREDICTORS


def test_status_shows_task_metrics_beside_their_baselines(tmp_path, capsys, monkeypatch):
    import optuna

    from nas import cli
    from nas.arch import ArchConfig
    from nas.search.records import set_status, write_claim, write_result
    from nas.trial import TrialResult

    url = f"sqlite:///{tmp_path}/b.db"
    study = optuna.create_study(study_name="b", storage=url, direction="maximize")
    study.set_user_attr("nas.objectives", {"qa.f1": "maximize"})
    arch = ArchConfig(vocab_size=512, max_seq_len=64, n_layers=2, d_model=32, n_heads=2)
    for f1 in (0.2, 0.3):
        trial = study.ask()
        write_claim(trial, arch, "worker", "killed", None)
        metrics = {"val_loss": 3.0, "claims.accuracy": 0.512, "qa.f1": f1}
        write_result(
            trial, TrialResult(arch, "complete", metrics, task_baselines=BASELINES, baseline_predictors=PREDICTORS)
        )
        set_status(trial, "trained")
        study.tell(trial, f1)
    monkeypatch.setattr(cli.console, "width", 250)
    code, out, _ = run(["status", "b", "--storage", url], capsys)
    assert code == 0 and "baselines (no model): qa.f1: first 2 words 0.07\n" in out  # under the objective column
    best = next(line for line in out.splitlines() if line.startswith("best"))
    assert "qa.f1 0.3 (first 2 words 0.07)" in best
    assert "claims.accuracy 0.512 (majority class 0.5, chance 0.3333)" in best
    code, out, _ = run(["status", "b", "--storage", url, "--json"], capsys)
    trials = json.loads(out)["trials"]
    assert code == 0 and all(t["task_baselines"] == BASELINES for t in trials)
    assert trials[0]["baseline_predictors"] == PREDICTORS


@pytest.mark.parametrize("flag", [["--trial", "cpu-tiyn"], ["--trial=cpu-tiyn"]])
def test_the_old_protocol_flag_works_with_a_note(flag, in_tmp, capsys):
    """`--trial` named the protocol before `--protocol`: it still does, with a one-line note."""
    code, _, err = run(["search", *flag], capsys)
    assert code == 2 and "note: --trial is now --protocol (the old name still works)" in err
    assert "(did you mean 'cpu-tiny'?)" in err
    code, _, err = run(["search", "--protocol", "cpu-tiyn"], capsys)
    assert code == 2 and "note:" not in err
