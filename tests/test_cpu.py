"""nas.cpu: the CPUs this process may use (affinity, cgroup quota) and torch's threads fitted to them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas import cpu
from nas.cpu import MARKER, available_cpus, cgroup_cpu_quota, configure

OMP_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", MARKER)


def cgroup_v2(root: Path, path: str, limits: dict[str, str]) -> Path:
    """A fake cgroup v2 tree under ``root``: ``limits`` maps a folder to its cpu.max; returns /proc/self/cgroup."""
    for folder, text in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(text + "\n")
    proc = root / "proc-self-cgroup"
    proc.write_text(f"0::{path}\n")
    return proc


def cgroup_v1(root: Path, path: str, folder: str, quota: str, period: str = "100000") -> Path:
    mount = root / "cpu,cpuacct" / folder
    mount.mkdir(parents=True, exist_ok=True)
    (mount / "cpu.cfs_quota_us").write_text(quota + "\n")
    (mount / "cpu.cfs_period_us").write_text(period + "\n")
    proc = root / "proc-self-cgroup"
    proc.write_text(f"12:memory:/x\n4:cpu,cpuacct:{path}\n1:name=systemd:/x\n")
    return proc


@pytest.fixture
def fresh_process(monkeypatch):
    """os.environ without OpenMP settings, no governor and no pending torch hook, all restored afterwards
    (pytest's process may have run `nas` in-process before)."""
    for name in OMP_VARS:
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, cpu._WhenTorchLoads)])
    monkeypatch.setattr(cpu, "_governor", None)


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


def test_affinity_counts_the_mask_or_the_machine(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5, 7}, raising=False)
    assert cpu.affinity_cpus() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cpu.affinity_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert cpu.affinity_cpus() == 1


@pytest.mark.parametrize(
    ("limits", "expected_quota", "expected_cpus"),
    [
        ({"job": "150000 100000"}, 1.5, 2),  # rounded to the nearest CPU
        ({"job": "120000 100000"}, 1.2, 1),
        ({"job": "50000 100000"}, 0.5, 1),  # at least one
        ({"job": "max 100000"}, None, 4),  # unlimited: the affinity mask
        ({"job": "800000 100000"}, 8.0, 4),  # more quota than CPUs
        ({"": "100000 100000", "job": "300000 100000"}, 1.0, 1),  # a parent's limit binds its children
        ({"job": "garbage"}, None, 4),
        ({"job": ""}, None, 4),
    ],
)
def test_cgroup_v2_quota(tmp_path, four_cpus, limits, expected_quota, expected_cpus):
    proc = cgroup_v2(tmp_path, "/job", limits)
    assert cgroup_cpu_quota(tmp_path, proc) == expected_quota
    assert available_cpus(tmp_path, proc) == expected_cpus


def test_cgroup_v1_quota(tmp_path, four_cpus):
    proc = cgroup_v1(tmp_path, "/docker/abc", "docker/abc", "200000")
    assert cgroup_cpu_quota(tmp_path, proc) == 2.0
    assert available_cpus(tmp_path, proc) == 2
    unlimited = cgroup_v1(tmp_path / "u", "/docker/abc", "docker/abc", "-1")
    assert cgroup_cpu_quota(tmp_path / "u", unlimited) is None


def test_cgroup_v1_inside_a_container_sees_only_its_own_group(tmp_path, four_cpus):
    """/proc/self/cgroup names the host's path; the mount shows the container's group as its root."""
    proc = cgroup_v1(tmp_path, "/kubepods/pod1/abc", "", "300000", "200000")
    assert cgroup_cpu_quota(tmp_path, proc) == 1.5


def test_no_cgroup_information_means_no_quota(tmp_path, four_cpus):
    assert cgroup_cpu_quota(tmp_path, tmp_path / "missing") is None
    (tmp_path / "odd").write_text("no colons here\n")
    assert cgroup_cpu_quota(tmp_path, tmp_path / "odd") is None
    assert available_cpus(tmp_path, tmp_path / "missing") == 4


def test_this_machine_has_at_least_one_cpu():
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def test_default_threads_are_the_available_cpus_and_waiting_threads_spin_briefly(monkeypatch):
    monkeypatch.setattr(cpu, "available_cpus", lambda: 3)
    env: dict[str, str] = {}
    settings = configure(environ=env)
    assert env["OMP_NUM_THREADS"] == "3" and env["GOMP_SPINCOUNT"] == "30000" and env["KMP_BLOCKTIME"] == "1"
    assert set(env[MARKER].split(",")) == {"OMP_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"}
    assert (settings.threads, settings.user_threads, settings.user_wait) == (3, False, False)
    assert "3 torch CPU threads" in settings.describe() and "GOMP_SPINCOUNT=30000" in settings.describe()


@pytest.mark.parametrize(
    ("user", "kept", "absent"),
    [
        ({"OMP_NUM_THREADS": "5"}, {"OMP_NUM_THREADS": "5", "GOMP_SPINCOUNT": "30000"}, ()),
        ({"OMP_NUM_THREADS": "4,2"}, {"OMP_NUM_THREADS": "4,2"}, ()),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}, cpu.SPIN),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}, cpu.SPIN),
        ({"GOMP_SPINCOUNT": "300000"}, {"GOMP_SPINCOUNT": "300000"}, ("KMP_BLOCKTIME",)),
        ({"KMP_BLOCKTIME": "200"}, {"KMP_BLOCKTIME": "200"}, ("GOMP_SPINCOUNT",)),
    ],
)
def test_the_users_settings_win(monkeypatch, user, kept, absent):
    monkeypatch.setattr(cpu, "available_cpus", lambda: 3)
    env = dict(user)
    settings = configure(environ=env)
    assert {k: env[k] for k in kept} == kept
    assert not set(absent) & set(env)  # a user's wait setting is not mixed with nas's
    assert not set(user) & set(env[MARKER].split(","))
    assert settings.user_threads == ("OMP_NUM_THREADS" in user)
    assert settings.user_wait == any(k != "OMP_NUM_THREADS" for k in user)
    if "OMP_NUM_THREADS" in user:
        assert settings.threads == int(user["OMP_NUM_THREADS"].split(",")[0]) and "(yours)" in settings.describe()


def test_an_explicit_thread_count_beats_the_environment(monkeypatch):
    monkeypatch.setattr(cpu, "available_cpus", lambda: 3)
    env = {"OMP_NUM_THREADS": "8"}
    assert configure(threads=1, environ=env).threads == 1
    assert env["OMP_NUM_THREADS"] == "1" and "OMP_NUM_THREADS" not in env[MARKER]


def test_a_child_process_works_out_its_own_defaults(monkeypatch):
    """nas's defaults, inherited by a `nas` process it starts (local workers), are not the user's."""
    monkeypatch.setattr(cpu, "available_cpus", lambda: 4)
    env: dict[str, str] = {}
    configure(environ=env)
    monkeypatch.setattr(cpu, "available_cpus", lambda: 2)  # e.g. the child runs under taskset
    child = dict(env)
    settings = configure(environ=child)
    assert child["OMP_NUM_THREADS"] == "2" and not settings.user_threads and not settings.user_wait
    grandchild = dict(child) | {"OMP_WAIT_POLICY": "PASSIVE"}  # a user's choice made in between is theirs
    settings = configure(environ=grandchild)
    assert settings.user_wait and grandchild["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in grandchild


def test_empty_or_invalid_thread_variables(monkeypatch):
    monkeypatch.setattr(cpu, "available_cpus", lambda: 2)
    env = {"OMP_NUM_THREADS": " "}
    assert configure(environ=env).threads == 2 and env["OMP_NUM_THREADS"] == "2"
    env = {"OMP_NUM_THREADS": "lots"}
    assert configure(environ=env).threads == 2 and env["OMP_NUM_THREADS"] == "lots"  # theirs, left for them


class FakeTorch:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.calls: list[int] = []

    def get_num_threads(self) -> int:
        return self.threads

    def set_num_threads(self, n: int) -> None:
        self.threads = n
        self.calls.append(n)


def scripted_load(monkeypatch, others: list[float]):
    """Fake /proc/stat samples one second apart, the last one now: in each second other processes use
    ``others[i]`` cores, and this process one."""
    start = time.monotonic() - len(others)
    samples = iter(
        [(start, 0.0, 0.0)] + [(start + i + 1.0, sum(others[: i + 1]) + i + 1.0, i + 1.0) for i in range(len(others))]
    )
    monkeypatch.setattr(cpu, "_load_sample", lambda: next(samples))


def test_the_governor_gives_way_to_busy_processes_and_takes_cores_back(monkeypatch):
    scripted_load(monkeypatch, [1.0, 0.6, 1.0, 0.0, 0.3, 0.0, 0.0])
    torch = FakeTorch(2)
    governor = cpu.ThreadGovernor(torch, cpus=2, period=0.0)
    seen = []
    for _ in range(7):
        governor(None, (), {})
        seen.append(torch.threads)
    assert seen == [1, 1, 1, 1, 2, 2, 2]  # down at once; up after two idle looks in a row
    assert torch.calls == [1, 2]


def test_the_governor_stands_aside_once_someone_else_sets_the_threads(monkeypatch):
    scripted_load(monkeypatch, [1.0, 1.0])
    torch = FakeTorch(4)
    governor = cpu.ThreadGovernor(torch, cpus=4, period=0.0)
    torch.threads = 3  # e.g. nas worker --threads 3, after torch loaded
    governor(None, (), {})
    governor(None, (), {})
    assert torch.threads == 3 and not governor.active and torch.calls == []


def test_the_governor_looks_at_most_once_a_period(monkeypatch):
    scripted_load(monkeypatch, [2.0])
    torch = FakeTorch(2)
    governor = cpu.ThreadGovernor(torch, cpus=2, period=3600.0)
    governor(None, (), {})
    assert torch.threads == 2


@pytest.mark.parametrize(("others", "threads"), [(0.0, 4), (0.4, 4), (0.6, 3), (1.4, 3), (2.6, 1), (9.0, 1)])
def test_threads_for_the_load_of_others(others, threads):
    governor = cpu.ThreadGovernor(FakeTorch(4), cpus=4)
    assert governor.wanted(others) == threads


STAT = """cpu  900 900 900 900 0 0 0 0 0 0
cpu0 100 50 20 500 5 3 2 0 0 0
cpu1 200 70 30 400 0 5 5 0 0 0
cpu2 600 780 850 0 0 0 0 0 0 0
intr 1 2 3
"""


def test_load_counts_only_this_processes_cpus_and_niced_time_only_when_niced(tmp_path, monkeypatch):
    (tmp_path / "stat").write_text(STAT)
    monkeypatch.setattr(cpu, "PROC_STAT", tmp_path / "stat")
    monkeypatch.setattr(cpu, "_HZ", 100)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getpriority", lambda which, who: 0, raising=False)
    sample = cpu._load_sample()
    assert sample is not None and sample[1] == pytest.approx((100 + 20 + 3 + 2 + 200 + 30 + 5 + 5) / 100)
    monkeypatch.setattr(os, "getpriority", lambda which, who: 19, raising=False)
    sample = cpu._load_sample()
    assert sample is not None and sample[1] == pytest.approx((125 + 50 + 240 + 70) / 100)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {7}, raising=False)
    assert cpu._load_sample() is None  # none of its CPUs listed: no governor
    monkeypatch.setattr(cpu, "PROC_STAT", tmp_path / "missing")
    assert cpu._load_sample() is None


def test_no_governor_under_a_binding_cgroup_quota(monkeypatch, fresh_process):
    """Other processes' load does not tell what a process under a CPU quota gets."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as in a fresh `nas` process
    monkeypatch.setattr(cpu, "affinity_cpus", lambda: 8)
    monkeypatch.setattr(cpu, "available_cpus", lambda: 2)
    assert not configure().adaptive
    assert not any(isinstance(f, cpu._WhenTorchLoads) for f in sys.meta_path)
    monkeypatch.setattr(cpu, "available_cpus", lambda: 8)
    assert configure().adaptive
    assert any(isinstance(f, cpu._WhenTorchLoads) for f in sys.meta_path)


def test_in_a_fresh_process_the_settings_reach_torch_and_the_governor_is_installed():
    """configure(), then import torch: libgomp reports its settings as it loads, and the governor is hooked
    to every optimizer's step."""
    code = (
        "from nas.cpu import available_cpus, configure; configure(); import torch, json, nas.cpu; "
        "from torch.optim.optimizer import _global_optimizer_pre_hooks as hooks; "
        "print(json.dumps([torch.get_num_threads(), available_cpus(), "
        "[type(h).__name__ for h in hooks.values()], nas.cpu._governor is not None]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS} | {"OMP_DISPLAY_ENV": "VERBOSE"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    threads, available, hooks, governed = json.loads(done.stdout.strip().splitlines()[-1])
    assert threads == available
    assert hooks == (["ThreadGovernor"] if available > 1 else []) and governed == (available > 1)
    if "GOMP_SPINCOUNT" in done.stderr:  # GNU OpenMP (the PyPI wheels): the short spin took effect
        assert "GOMP_SPINCOUNT = '30000'" in done.stderr, done.stderr


def test_once_torch_is_loaded_its_threads_stay_unless_a_count_is_given(monkeypatch, fresh_process):
    import torch

    before = torch.get_num_threads()
    settings = configure()
    assert not settings.adaptive and settings.notes and torch.get_num_threads() == before
    assert not any(isinstance(f, cpu._WhenTorchLoads) for f in sys.meta_path)
    governor = cpu.ThreadGovernor(FakeTorch(2), cpus=2)  # as an earlier configure() installed it
    monkeypatch.setattr(cpu, "_governor", governor)
    assert configure().adaptive and governor.active  # a second call leaves it going
    try:
        assert configure(threads=1).threads == 1 and torch.get_num_threads() == 1
        assert not governor.active  # an explicit count is fixed: the governor stands aside
    finally:
        torch.set_num_threads(before)


def test_the_command_line_configures_before_anything_else(monkeypatch, fresh_process):
    from nas.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["spaces", "list"])
    assert exit_info.value.code in (0, None)
    assert os.environ["GOMP_SPINCOUNT"] == "30000"
    assert os.environ["OMP_NUM_THREADS"] == str(available_cpus())
