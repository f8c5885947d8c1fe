"""nas.search.export: which trials an export writes (and what it refuses), and an export with kept weights."""

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from nas.errors import NasInputError
from nas.search import check_export_choice, export_targets
from tests.conftest import cli_search, load_study, micro_sets, run

OUT = Path("out")


ARCH = {"vocab_size": 512, "max_seq_len": 64, "n_layers": 2, "d_model": 32, "n_heads": 2}


def study_of(*values, directions=("minimize",), name="s"):
    """A study whose trials are trained with ``values`` (None: pruned)."""
    study = optuna.create_study(study_name=name, directions=list(directions))
    for v in values:
        state = TrialState.PRUNED if v is None else TrialState.COMPLETE
        study.add_trial(create_trial(state=state, values=v, user_attrs={"nas_status": "trained", "arch": ARCH}))
    return study


def test_export_targets_best_trial_and_pareto():
    study = study_of([3.0], None, [1.0], [2.0])
    assert export_targets(study, OUT, best=True) == [(2, OUT)]
    assert export_targets(study, OUT, trial=1) == [(1, OUT)]  # any trial by number, pruned ones too
    assert export_targets(study, OUT, pareto=3) == [(2, OUT / "trial-2")]  # one objective: the front is the best

    multi = study_of([1.0, 5.0], [2.0, 2.0], [3.0, 3.0], [5.0, 1.0], directions=("minimize", "minimize"))
    assert export_targets(multi, OUT, pareto=2) == [(0, OUT / "trial-0"), (1, OUT / "trial-1")]
    assert export_targets(multi, OUT, pareto=9) == [(n, OUT / f"trial-{n}") for n in (0, 1, 3)]  # 2 is dominated
    assert export_targets(multi, OUT, trial=2) == [(2, OUT)]


def test_export_targets_refusals():
    multi = study_of([1.0, 5.0], directions=("minimize", "minimize"))
    with pytest.raises(NasInputError, match="the study has several objectives: use --pareto K or --trial N"):
        export_targets(multi, OUT, best=True)
    for empty in (study_of(name="e"), study_of(None, name="e")):  # nothing completed (pruned is not ranked)
        with pytest.raises(NasInputError, match="--best: study 'e' has no completed trial yet"):
            export_targets(empty, OUT, best=True)
        with pytest.raises(NasInputError, match="--pareto: study 'e' has no completed trial yet"):
            export_targets(empty, OUT, pareto=2)
    for choice in ({}, {"trial": 0, "best": True}, {"best": True, "pareto": 1}, {"trial": 0, "pareto": 1}):
        with pytest.raises(NasInputError, match="give exactly one of --trial N, --best, --pareto K"):
            export_targets(study_of([1.0]), OUT, **choice)
    check_export_choice(0, False, None)  # trial 0 is a choice (not falsy)
    check_export_choice(None, True, None)
    check_export_choice(None, False, 1)


def test_export_refusals_through_the_cli(in_tmp, capsys):
    code, _, err = run(["export", "--trial", "0", "--best"], capsys)
    assert code == 2 and "give exactly one of --trial N, --best, --pareto K" in err
    assert not (in_tmp / "exports").exists()


def test_keep_weights_are_exported_and_load(in_tmp, micro_cache, capsys):
    import transformers

    code, _, err = cli_search(capsys, "kw", 1, "--keep-weights", *micro_sets(micro_cache))
    assert code == 0, err
    trial = load_study("kw").trials[0]
    assert trial.user_attrs["artifact_weights"]
    code, _, err = run(["export", "kw", "--trial", "0", "-o", "w"], capsys)
    assert code == 0, err
    assert (in_tmp / "w/model.safetensors").is_file()
    model = transformers.AutoModelForCausalLM.from_pretrained(in_tmp / "w")
    assert sum(p.numel() for p in model.parameters()) == trial.user_attrs["params"]
    readme = (in_tmp / "w/README.md").read_text()
    assert "from_pretrained(folder)" in readme and 'folder = "w"' in readme and "nas train w -o" in readme
    assert "<this folder>" not in readme and "pruned" not in readme  # a completed trial
    code, _, err = run(["export", "kw", "--trial", "0", "-o", "w"], capsys)  # the folder holds an export now
    assert code == 2 and "already holds files: give --force to replace it" in err
    code, _, err = run(["export", "kw", "--trial", "0", "-o", "w", "--force"], capsys)
    assert code == 0, err


def test_the_token_cache_follows_runs_dir(in_tmp, capsys):
    """With the default cache_dir (runs/cache), a search, a worker and an export under --runs-dir R keep the
    token cache in R/cache: nothing is written to ./runs. A cache_dir the protocol sets stays where it is."""
    from nas.protocol import load_protocol, under_runs_dir
    from tests.conftest import MICRO_OVERRIDES

    sets = [arg for item in (*MICRO_OVERRIDES, "tasks=[]") for arg in ("--set", item)]
    code, _, err = cli_search(capsys, "rd", 1, "--space", "micro.yaml", "--runs-dir", "elsewhere", *sets)
    assert code == 0, err
    assert list((in_tmp / "elsewhere/cache/tokens").iterdir())
    code, _, err = run(["export", "rd", "--runs-dir", "elsewhere", "--trial", "0", "-o", "x"], capsys)
    assert code == 0, err
    assert (in_tmp / "x/tokenizer.json").is_file() and not (in_tmp / "runs").exists()

    default = load_protocol("cpu-tiny")
    moved = under_runs_dir(default, Path("elsewhere"))
    assert moved.cache_path == "elsewhere/cache" and moved.content_hash == default.content_hash  # a location
    assert under_runs_dir(default, Path("runs")).cache_path == "runs/cache"
    own = load_protocol("cpu-tiny", ["cache_dir=/data/cache"])
    assert under_runs_dir(own, Path("elsewhere")).cache_path == "/data/cache"
