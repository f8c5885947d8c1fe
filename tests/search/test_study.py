"""nas.search.study: creating, resuming (only with the same space and protocol), warm-starting and joining."""

import optuna
import pytest

from nas.errors import NasInputError
from nas.protocol import load_protocol
from nas.search import SearchConfig, create_or_resume, join_study, open_storage
from nas.space import load_space
from tests.conftest import MICRO_OVERRIDES, cli_search, load_study, micro_sets


def config_for(in_tmp, micro_cache, *overrides, **kwargs):
    protocol = load_protocol("cpu-tiny", [f"cache_dir={micro_cache}", *MICRO_OVERRIDES, "tasks=[]", *overrides])
    return SearchConfig(load_space(str(in_tmp / "micro.yaml")), protocol, "s", runs_dir=in_tmp / "runs", **kwargs)


def test_create_or_resume_records_metadata_and_refuses_changes(in_tmp, micro_cache):
    storage = optuna.storages.InMemoryStorage()
    config = config_for(in_tmp, micro_cache, n_trials=7, sampler="random", pruner="median")
    study = create_or_resume(config, storage)
    attrs = study.user_attrs
    assert attrs["nas.space_name"] == "micro" and attrs["nas.protocol_hash"] == config.protocol.content_hash
    assert attrs["nas.search"] == config.search_attrs() and attrs["nas.search"]["n_trials"] == 7
    assert isinstance(study.sampler, optuna.samplers.RandomSampler)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)

    assert create_or_resume(config, storage).study_name == "s"  # same space and protocol: resumed
    with pytest.raises(NasInputError) as info:
        create_or_resume(config_for(in_tmp, micro_cache, "pretrain.budget.tokens=8192"), storage)
    assert "study 's' was created with another protocol" in str(info.value) and "--warm-start s" in str(info.value)


def test_a_study_keeps_its_protocol_when_the_shipped_one_changes(in_tmp, micro_cache):
    """A new nas that changes a shipped protocol (its lr rule, say) must not strand the studies made under the
    old one: named as shipped, with no --set, the study resumes with the protocol it was created with. A file
    of the user's own or a --set that differs is still refused."""
    from nas.search import SearchRequest, validate_search

    storage = optuna.storages.InMemoryStorage()
    old = load_protocol("cpu-tiny", ["pretrain.optimizer.lr_width_scope=model", "pretrain.budget.tokens=8192"])
    space = load_space("tiny")
    create_or_resume(SearchConfig(space, old, "s", runs_dir=in_tmp / "runs", pruner="sha"), storage)

    config = validate_search(SearchRequest(study="s", runs_dir=in_tmp / "runs", pruner="sha"), dry_run=True).config
    assert config.protocol_as_shipped and config.protocol.content_hash != old.content_hash
    lines = []
    study = create_or_resume(config, storage, lines.append)
    assert config.protocol.content_hash == old.content_hash == study.user_attrs["nas.protocol_hash"]
    kept = config.protocol.pretrain
    assert kept.optimizer.lr_width_scope == "model" and kept.budget.tokens == 8192
    assert config.protocol.cache_path == str(in_tmp / "runs" / "cache")  # the cache still follows --runs-dir
    assert len(lines) == 1 and "study 's' keeps the protocol it was created with (cpu-tiny, hash" in lines[0]

    for request in (
        SearchRequest(study="s", runs_dir=in_tmp / "runs", overrides=["pretrain.seed=1"]),  # a --set
        SearchRequest(study="s", runs_dir=in_tmp / "runs", trial=str(in_tmp / "cpu-tiny.yaml")),  # a file of theirs
    ):
        (in_tmp / "cpu-tiny.yaml").write_text(load_protocol("cpu-tiny").text)
        config = validate_search(request, dry_run=True).config
        assert not config.protocol_as_shipped
        with pytest.raises(NasInputError, match="study 's' was created with another protocol"):
            create_or_resume(config, storage)


def test_join_study_reads_the_search_settings(in_tmp, micro_cache):
    config = config_for(in_tmp, micro_cache, n_trials=5, sampler="random", pruner="sha", seed=3, checkpoint_every=4)
    url = f"sqlite:///{in_tmp}/s.db"
    create_or_resume(config, open_storage(url))
    study, joined = join_study("s", url, in_tmp / "runs", seed_offset=2)
    assert study.study_name == "s" and joined.n_trials == 5 and joined.sampler == "random"
    assert joined.pruner == "sha" and joined.checkpoint_every == 4
    assert joined.seed == 5  # the study's seed plus the worker's offset: workers draw different samples
    assert joined.space.content_hash == config.space.content_hash
    assert joined.protocol.content_hash == config.protocol.content_hash
    assert join_study("s", url, in_tmp / "runs", n_trials=9)[1].n_trials == 9


def test_resume_with_another_protocol_is_refused(in_tmp, micro_cache, capsys):
    code, _, _ = cli_search(capsys, "r", 1, *micro_sets(micro_cache))
    assert code == 0
    code, _, err = cli_search(capsys, "r", 2, *micro_sets(micro_cache, "pretrain.budget.tokens=8192"))
    assert code == 2 and "study 'r' was created with another protocol" in err and "--warm-start r" in err
    assert len(load_study("r").trials) == 1


def test_warm_start_enqueues_the_old_architectures(in_tmp, micro_cache, capsys):
    cli_search(capsys, "old", 2, *micro_sets(micro_cache))
    code, _, err = cli_search(
        capsys, "new", 2, "--seed", "9", "--warm-start", "old", *micro_sets(micro_cache, "pretrain.budget.tokens=8192")
    )
    assert code == 0, err
    old_hashes = {t.user_attrs["arch_hash"] for t in load_study("old").trials}
    new_hashes = [t.user_attrs["arch_hash"] for t in load_study("new").trials[:2]]
    assert set(new_hashes) == old_hashes


def test_a_worker_on_a_study_with_damaged_settings_is_told_which(in_tmp, micro_cache, capsys):
    from tests.conftest import run

    config = config_for(in_tmp, micro_cache, n_trials=5, seed=3)
    url = f"sqlite:///{in_tmp}/s.db"
    study = create_or_resume(config, open_storage(url))
    study.set_user_attr("nas.search", {**config.search_attrs(), "seed": "three", "heartbeat": 0, "sampler": "x"})
    code, _, err = run(["worker", "--study", "s", "--storage", url], capsys)
    assert code == 2 and "Traceback" not in err
    for key in ("nas.search: seed: damaged", "heartbeat: damaged", "sampler: damaged"):
        assert key in err, err
    study.set_user_attr("nas.search", ["not", "a", "mapping"])
    code, _, err = run(["worker", "--study", "s", "--storage", url], capsys)
    assert code == 2 and "study 's': nas.search: damaged: a list, not a mapping" in err
    study.set_user_attr("nas.search", {**config.search_attrs(), "seed": 2**32 - 1})
    assert join_study("s", url, in_tmp / "runs", seed_offset=5)[1].seed == 4  # wraps within the samplers' range


def test_a_worker_with_wait_tries_an_unreachable_database_again(in_tmp, micro_cache, monkeypatch):
    """`nas worker --wait S`: a database that refuses the connection at start (restarting while the worker is
    requeued) is tried again for S seconds; any other problem, or the end of the wait, is exit 2 as before."""
    import nas.search.study as study_module
    from nas.errors import StorageUnreachable

    url = f"sqlite:///{in_tmp}/s.db"
    create_or_resume(config_for(in_tmp, micro_cache, n_trials=3), open_storage(url))
    real, calls, lines = study_module.find_study, [], []

    def down_twice(*args, **kwargs):
        calls.append(args)
        if len(calls) <= 2:
            raise StorageUnreachable("--storage", f"cannot open {url}: connection refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "find_study", down_twice)
    monkeypatch.setattr(study_module.time, "sleep", lambda s: None)
    study, config = join_study("s", url, in_tmp / "runs", wait=30, log=lines.append)
    assert study.study_name == "s" and config.n_trials == 3 and len(calls) == 3
    assert len(lines) == 2 and all("connection refused (trying again for" in line for line in lines)

    calls.clear()
    with pytest.raises(StorageUnreachable):  # no --wait: at once
        join_study("s", url, in_tmp / "runs")
    assert len(calls) == 1
    monkeypatch.setattr(study_module, "find_study", real)
    with pytest.raises(NasInputError, match="no study 'nope'") as info:  # not a connection: never retried
        join_study("nope", url, in_tmp / "runs", wait=30, log=lines.append)
    assert not isinstance(info.value, StorageUnreachable) and len(lines) == 2


def test_a_refused_database_connection_is_storage_unreachable():
    """What --wait retries: a refused connection (nothing listens on port 1), not bad input like a wrong scheme."""
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    from nas.errors import StorageUnreachable

    with pytest.raises(StorageUnreachable, match="cannot open postgresql://postgres@127.0.0.1:1/test"):
        open_storage("postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(NasInputError) as info:
        open_storage("postgres-nope://x")
    assert not isinstance(info.value, StorageUnreachable)
