"""nas.search.config: validate_search collects every problem of a request at once and builds the config."""

from pathlib import Path

import pytest

from nas.errors import NasInputError
from nas.search import Heartbeats, SearchRequest, validate_search
from tests.conftest import run


def problems_of(**request) -> str:
    with pytest.raises(NasInputError) as info:
        validate_search(SearchRequest(**request), dry_run=True)
    return str(info.value)


def test_validate_search_collects_every_problem_at_once():
    message = problems_of(sampler="tpee", pruner="hyperbands", heartbeat=10, grace=5)
    assert "--sampler: unknown 'tpee' (did you mean 'tpe'?); one of tpe, random, nsga2, gp, cmaes, grid" in message
    assert "--pruner: unknown 'hyperbands' (did you mean 'hyperband'?); one of median, sha, hyperband, none" in message
    assert "--grace: 5s must exceed --heartbeat 10s" in message
    assert len(message.splitlines()) == 3  # one line per problem

    message = problems_of(space="nope.yaml", overrides=["pretrain.budjet.tokens=1"], devices="a,b", sampler="tpee")
    for fragment in (
        "nope.yaml: no such file",
        "pretrain.budjet: unknown key 'budjet'",
        "--devices: 'a,b': give GPU indices",
        "--sampler: unknown 'tpee'",
    ):
        assert fragment in message, message


def test_validate_search_checks_combinations():
    message = problems_of(sampler="cmaes", overrides=["objectives.params.direction=minimize"])
    assert "--sampler: cmaes handles single-objective studies only; use tpe or nsga2" in message
    with pytest.raises(NasInputError, match="--storage: redis://x: unknown storage scheme 'redis'"):
        validate_search(SearchRequest(storage="redis://x"))
    validate_search(SearchRequest(storage="redis://x"), dry_run=True)  # a dry run opens no storage


def test_grid_needs_a_finite_space(write_space):
    space = write_space(
        "parameters:\n  vocab_size: 256\n  max_seq_len: 32\n  n_layers: 2\n  n_heads: 2\n  head_dim: 8\n"
        "  norm_eps: {type: float, low: 1.0e-6, high: 1.0e-5}\n"
        "derived:\n  d_model: n_heads * head_dim\n"
    )
    message = problems_of(space=str(space), sampler="grid")
    assert "--sampler: grid needs a finite space; parameter 'norm_eps' is a float range without step" in message


def test_validate_search_builds_the_config_and_default_study_name(in_tmp):
    plan = validate_search(SearchRequest(), dry_run=True)
    config = plan.config
    assert config.study_name == "tiny-cpu-tiny" and config.space.name == "tiny" and config.protocol.name == "cpu-tiny"
    assert config.run_dir == Path("runs/tiny-cpu-tiny") and config.storage is None
    assert (config.sampler, config.pruner, config.seed, config.n_trials) == ("tpe", "hyperband", 0, 10)
    assert config.heartbeats == Heartbeats(10, 60) and plan.n_workers == 1 and not plan.spawns_workers

    request = SearchRequest(
        space="micro.yaml",
        trial="cpu-tiny",
        overrides=["pretrain.budget.tokens=8192"],
        runs_dir=Path("elsewhere"),
        n_trials=3,
        sampler="random",
        pruner="sha",
        seed=4,
        heartbeat=2,
        grace=9,
        devices="0, 1",
        checkpoint_every=5,
    )
    plan = validate_search(request)
    config = plan.config
    assert config.study_name == "micro-cpu-tiny" and config.run_dir == Path("elsewhere/micro-cpu-tiny")
    assert config.protocol.pretrain.budget.tokens == 8192
    assert (config.sampler, config.pruner, config.seed, config.n_trials) == ("random", "sha", 4, 3)
    assert config.heartbeats == Heartbeats(2, 9) and config.checkpoint_every == 5
    assert plan.devices == ["0", "1"] and plan.n_workers == 2 and plan.spawns_workers
    assert validate_search(SearchRequest(study="mine", workers=3)).n_workers == 3
    shared = validate_search(SearchRequest(study="mine", devices="0,1,cpu", workers_per_device=2))
    assert shared.devices == ["0", "1", "cpu", "0", "1", "cpu"] and shared.n_workers == 6
    twice = validate_search(SearchRequest(study="mine", devices="0,00"))  # 00 is GPU 0 too
    assert twice.devices == ["0", "0"] and twice.n_workers == 2 and twice.spawns_workers
    fewer = validate_search(SearchRequest(study="mine", devices="0,1", workers_per_device=2, workers=2))
    assert fewer.devices == ["0", "1", "0", "1"] and fewer.n_workers == 2  # the first workers spread over both
    assert validate_search(SearchRequest(study="mine")).config.study_name == "mine"
    assert not (in_tmp / "runs").exists() and not (in_tmp / "elsewhere").exists()  # validation writes nothing


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "nope"], "no study 'nope' in runs/"),
        (["export", "nope", "--best"], "no study 'nope' in runs/"),
        (
            ["search", "--storage", "postgresql://nobody@127.0.0.1:9/none", "--n-trials", "1"],
            "cannot open postgresql://",
        ),
        (["search", "--storage", "redis://localhost"], "unknown storage scheme 'redis'"),
        (["search", "--sampler", "tpee"], "unknown 'tpee' (did you mean 'tpe'?)"),
        (["search", "--pruner", "hyperbands"], "unknown 'hyperbands' (did you mean 'hyperband'?)"),
        (["search", "--set", "pretrain.budjet.tokens=1"], "pretrain.budjet: unknown key 'budjet'"),
        (["search", "--space", "nope.yaml"], "nope.yaml: no such file"),
    ],
)
def test_bad_input_exit_2_and_nothing_written(argv, message, in_tmp, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (in_tmp / "runs").exists()
