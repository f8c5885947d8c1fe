"""Dedupe: one architecture is trained once in a study, whether a sampler repeats itself, a space runs out, or
two workers claim the same architecture at once (nas.search.loop)."""

import pytest
from optuna.trial import TrialState

from nas.search import study_records
from tests.conftest import cli_search, load_study, micro_sets
from tests.search.test_loop import micro_config


def test_a_sampler_that_repeats_itself_moves_on_to_unseen_architectures(in_tmp, micro_cache, monkeypatch):
    """Duplicates in a row make the loop queue an unseen architecture (NSGA-II used to stall on a small
    space, re-proposing trained ones until the exhaustion limit)."""
    import nas.trial

    def fake_trial(arch, protocol, **kwargs):  # instant: the loss is a function of the architecture
        loss = 5.0 - 0.1 * arch.n_layers - 0.01 * arch.ffn_dim / arch.d_model
        return nas.trial.TrialResult(arch, "complete", metrics={"val_loss": loss})

    monkeypatch.setattr(nas.trial, "run_trial", fake_trial)
    config = micro_config(in_tmp, micro_cache, "repeats", n_trials=4, sampler="nsga2")
    from nas.search import prepare_study, work

    study = prepare_study(config)
    for _ in range(4):  # the same architecture, queued four times: three duplicates in a row
        study.enqueue_trial({"n_layers": 1, "n_heads": 1, "ffn_mult": 1, "attention": "full"})
    summary = work(study, config)
    assert summary.stopped_because == "4 trials trained (--n-trials 4)"
    rows = study_records(summary.study)
    trained = [r for r in rows if r.trained]
    assert len(trained) == 4 and len({r.arch_hash for r in trained}) == 4
    fallbacks = [t for t in summary.study.trials if "fallback" in t.user_attrs]
    assert fallbacks and fallbacks[0].user_attrs["fallback"].startswith("unseen architecture queued after 2")
    assert len(rows) <= 4 + 3 + 2  # the three queued duplicates, and no stall


def test_duplicates_reuse_values_and_exhaustion_ends_the_study(in_tmp, micro_cache, capsys, monkeypatch):
    space = in_tmp / "two.yaml"
    space.write_text(
        "parameters:\n  vocab_size: 512\n  max_seq_len: 64\n  n_layers: {type: int, low: 1, high: 2}\n"
        "  n_heads: 2\n  d_model: 32\n"
    )
    code, out, err = cli_search(
        capsys, "two", 5, "--sampler", "random", *micro_sets(micro_cache), "--space", str(space)
    )
    assert code == 0, err
    # two duplicates in a row, and no unclaimed architecture in 256 random draws: the study ends there
    assert "the space ran out of new architectures (no unclaimed one in 256 random draws)" in out
    study = load_study("two")
    trained = [t for t in study.trials if t.user_attrs.get("nas_status") == "trained"]
    dups = [t for t in study.trials if t.user_attrs.get("nas_status") == "duplicate"]
    assert len(trained) == 2 and len(dups) >= 2
    first = {t.user_attrs["arch_hash"]: t for t in trained}
    for dup in dups[:5]:
        original = study.trials[dup.user_attrs["duplicate_of"]]
        assert original.user_attrs["arch_hash"] == dup.user_attrs["arch_hash"] and dup.values == original.values
        assert first[dup.user_attrs["arch_hash"]].number == original.number


def test_a_trial_between_its_trained_status_and_its_tell_is_not_claimed_again():
    """A worker writes "trained", then tells: in between, its trial is RUNNING with a trained status. A fresh
    claim of the same architecture in that window must stand down (at 64 workers on PostgreSQL it trained
    the architecture a second time)."""
    import optuna

    from nas.arch import ArchConfig
    from nas.search import records
    from nas.search.loop import _duplicate_of

    arch = ArchConfig(family="llama", vocab_size=512, max_seq_len=64, n_layers=1, d_model=32, n_heads=2)
    study = optuna.create_study()
    first, second = study.ask(), study.ask()
    records.write_claim(first, arch, "w1", "killed", None)
    assert _duplicate_of(study, second.number, arch.arch_hash()).number == first.number  # claimed, training
    records.set_status(first, records.Status.TRAINED)  # trained, its tell not yet written
    assert study.trials[first.number].state == TrialState.RUNNING
    assert _duplicate_of(study, second.number, arch.arch_hash()).number == first.number
    study.tell(first, 1.0)
    found = _duplicate_of(study, second.number, arch.arch_hash())
    assert found.number == first.number and found.state == TrialState.COMPLETE
    records.set_status(second, records.Status.FAILED)  # a failed claim of the architecture is no duplicate
    assert _duplicate_of(study, first.number, arch.arch_hash()) is None


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgres"])
def test_two_workers_claiming_one_architecture_see_each_other(kind, tmp_path):
    """Dedupe reads the claims from the database itself on a database storage (one query by architecture hash,
    not every trial through Optuna's cache): a worker whose cache was read before the other's claim still sees
    it, and finds the same trials as reading every trial would."""
    import time

    import optuna

    from nas.arch import ArchConfig
    from nas.search import open_storage, records
    from nas.search.loop import _duplicate_of
    from tests.conftest import POSTGRES, postgres_reachable

    if kind == "postgres" and not postgres_reachable():
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    url = {"sqlite": f"sqlite:///{tmp_path}/s.db", "journal": f"journal:{tmp_path}/j.log", "postgres": POSTGRES}[kind]
    name = f"claims-{time.time_ns()}"
    one = optuna.create_study(study_name=name, storage=open_storage(url))
    two = optuna.load_study(study_name=name, storage=open_storage(url))
    arch = ArchConfig(family="llama", vocab_size=512, max_seq_len=64, n_layers=1, d_model=32, n_heads=2)
    other = ArchConfig(family="llama", vocab_size=512, max_seq_len=64, n_layers=2, d_model=32, n_heads=2)
    try:
        first, second, third = one.ask(), two.ask(), two.ask()
        assert len(two.get_trials()) == 3  # worker two's cache is read before worker one's claim
        records.write_claim(first, arch, "w1", "killed", None)
        records.write_claim(second, arch, "w2", "killed", None)
        records.write_claim(third, other, "w2", "killed", None)
        assert _duplicate_of(two, second.number, arch.arch_hash()).number == first.number
        assert _duplicate_of(one, first.number, arch.arch_hash()).number == second.number
        assert _duplicate_of(one, first.number, "no-such-hash") is None
        records.set_status(first, records.Status.TRAINED)
        one.tell(first, 1.0)
        found = _duplicate_of(two, second.number, arch.arch_hash())
        assert found.number == first.number and found.state == TrialState.COMPLETE
        for study, mine in ((one, first.number), (two, third.number)):  # the same trials as reading them all
            every = [t for t in records.read_trials(study)[0] if t.number != mine and records.arch_hash_of(t)]
            for arch_hash in {records.arch_hash_of(t) for t in every}:
                want = [t.number for t in every if records.arch_hash_of(t) == arch_hash]
                assert [t.number for t in records.trials_of_arch(study, arch_hash, besides=mine)] == want
    finally:
        if kind == "postgres":
            optuna.delete_study(study_name=name, storage=open_storage(url))
