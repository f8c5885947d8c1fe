"""nas.search.estimate: the `--dry-run` estimate, directly and through `nas search --dry-run`."""

import pytest

from nas.errors import NasInputError
from nas.search import estimate_search
from nas.space import load_space
from tests.conftest import run


def test_estimate_search_directly(in_tmp, micro_protocol):
    protocol = micro_protocol("tasks=[]")
    estimate = estimate_search(load_space("micro.yaml"), protocol, 3, seed=0)
    assert estimate.n_archs == 3 and estimate.space_name == "micro" and estimate.median_params > 0
    assert estimate.total_flops > 0 and estimate.flops_per_second > 0 and estimate.reference
    assert estimate.minutes == pytest.approx(estimate.total_flops / estimate.flops_per_second / 60)
    assert estimate.pretrain_seconds_per_trial is None  # a token budget
    with_tasks = estimate_search(load_space("micro.yaml"), micro_protocol(), 3, seed=0)
    assert with_tasks.total_flops > estimate.total_flops  # fine-tuning adds to pretraining
    rungs = ["tasks=[]", "pretrain.schedule.kind=wsd", "pretrain.rungs=[1, 2, 4]", "target.tokens=1000000"]
    to_the_top = estimate_search(load_space("micro.yaml"), micro_protocol(*rungs), 3, seed=0)
    assert to_the_top.total_flops == pytest.approx(4 * estimate.total_flops, rel=0.01)  # no pruning: the top rung
    cut = estimate_search(load_space("micro.yaml"), micro_protocol(*rungs[:-1], "target.tokens=24576"), 3, seed=0)
    assert cut.total_flops == pytest.approx(1.5 * estimate.total_flops, rel=0.05)  # cut at the target


def test_estimate_without_a_feasible_architecture(write_space, micro_protocol):
    text = (
        "parameters:\n  vocab_size: 512\n  max_seq_len: 64\n  n_layers: {type: int, low: 1, high: 2}\n"
        "  n_heads: 2\n  head_dim: 16\nderived:\n  d_model: n_heads * head_dim\nconstraints:\n  - n_layers > 1\n"
    )
    one = load_space(write_space(text, "one.yaml"))
    assert estimate_search(one, micro_protocol("tasks=[]"), 2, seed=0).n_archs == 2  # the one architecture, twice
    none = load_space(write_space(text.replace("n_layers > 1", "params < 10"), "none.yaml"), feasibility_probe=0)
    with pytest.raises(NasInputError, match="no feasible architecture to estimate"):
        estimate_search(none, micro_protocol("tasks=[]"), 2, seed=0)


def test_dry_run_estimates_and_writes_nothing(in_tmp, capsys):
    code, out, _ = run(["search", "--dry-run", "--n-trials", "4"], capsys)
    assert code == 0 and "estimated compute" in out and "FLOPs" in out and "min" in out
    assert not (in_tmp / "runs").exists()


def test_a_large_estimate_samples_at_most_100_architectures_and_scales(in_tmp, micro_protocol):
    from nas.search.estimate import SAMPLED

    space, protocol = load_space("micro.yaml"), micro_protocol("tasks=[]")
    hundred = estimate_search(space, protocol, SAMPLED, seed=0)
    many = estimate_search(space, protocol, 1_000_000, seed=0)  # used to draw 4 million samples
    assert many.n_archs == hundred.n_archs == SAMPLED and many.n_trials == 1_000_000
    assert many.total_flops == pytest.approx(hundred.total_flops * 1_000_000 / SAMPLED)


def _capped_dry_run(tmp_path, *sets: str) -> tuple[int, str]:
    """`nas search --space small-100m --trial gpu-short --dry-run` in a process whose address space is capped at
    12 GiB: the dry run must not train (the old one ran 4 steps at the full batch, 23.7 GB resident)."""
    import resource
    import subprocess
    import sys

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))

    args = [sys.executable, "-m", "nas", "search", "--space", "small-100m", "--trial", "gpu-short", "--dry-run"]
    args += [a for s in sets for a in ("--set", s)]
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, preexec_fn=cap, env=env, timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.slow
def test_a_dry_run_of_a_100m_space_trains_nothing_and_fits_a_memory_cap(tmp_path):
    from nas.protocol import load_protocol
    from nas.search.estimate import device_memory_bytes, step_memory_bytes
    from nas.space import load_space, random_samples

    code, out = _capped_dry_run(tmp_path, "pretrain.micro_batch_size=1")
    assert code == 0, out
    assert "estimated compute" in out and "peak memory per worker" in out and "GiB" in out
    # the shipped micro-batch (32 sequences of 1024) on this machine: refused with the figure when it cannot fit
    protocol = load_protocol("gpu-short")
    archs = [s.arch for s in random_samples(load_space("small-100m"), 400, 0) if s.arch is not None][:100]
    worst = max(step_memory_bytes(a, protocol.pretrain) for a in archs)
    code, out = _capped_dry_run(tmp_path)
    if worst > (device_memory_bytes(protocol.pretrain) or 0):
        assert code == 2 and "pretrain.micro_batch_size" in out and "GiB" in out and "Traceback" not in out, out
    else:
        assert code == 0 and "peak memory per worker" in out, out
