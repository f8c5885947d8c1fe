"""The CPUs this process may use, and torch's CPU threads fitted to them and fair to other processes.

The `nas` command calls :func:`configure` first thing, before torch is imported, because the
OpenMP runtime that torch's CPU kernels run on reads its settings from the environment once, when
torch loads it (GNU libgomp in the PyPI wheels):

- ``OMP_NUM_THREADS``: torch's intra-op threads start at :func:`available_cpus`, the CPUs of this
  process's affinity mask within its cgroup's CPU quota (torch alone counts the machine's cores,
  which overcommits a container or a `taskset`);
- ``GOMP_SPINCOUNT`` / ``KMP_BLOCKTIME`` (:data:`SPIN`): a thread waiting for work spins about
  0.3 ms, then sleeps (libgomp's default is about 3 ms, Intel OpenMP's 200 ms);
- a :class:`ThreadGovernor`, installed when torch loads, lowers the thread count while other
  processes keep CPUs busy and raises it again when they stop.

A team of threads sharing a core with another busy process waits at every barrier for its slowest
member, and spinning waiters take the core from the very processes they wait on: with torch's
defaults, a trial beside one busy process on 2 cores ran at a quarter of its speed alone, and two
trials at once at a fifth together (bench/cpu_contention.py). One thread per free core avoids both.
Sleeping at once instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) cost a trial alone about a third
of its speed there; the short spin costs nothing measurable.

A setting the user made wins and stays fixed: an explicit thread count (``configure(threads=N)``,
`nas worker --threads`), ``OMP_NUM_THREADS``, ``torch.set_num_threads`` by other code, or any of
``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` / ``KMP_BLOCKTIME``. The variables nas set itself are
named in ``NAS_CPU_DEFAULTS``, so a `nas` process started by another (local workers, torchrun)
works them out again for its own CPUs instead of taking them for the user's.

    from nas.cpu import configure
    configure()          # before `import torch`; configure(threads=4) fixes the count
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CpuSettings", "ThreadGovernor", "affinity_cpus", "available_cpus", "cgroup_cpu_quota", "configure"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_STAT = Path("/proc/stat")
MARKER = "NAS_CPU_DEFAULTS"  # the variables below that nas set (not the user), comma-separated
THREADS_VAR = "OMP_NUM_THREADS"
# Any of these set by the user means they chose how OpenMP threads wait: leave it alone.
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# What nas sets instead: about 0.3 ms of spinning in GNU OpenMP (libgomp counts ~100k spins per ms),
# 1 ms in Intel's; then a waiting thread sleeps.
SPIN = {"GOMP_SPINCOUNT": "30000", "KMP_BLOCKTIME": "1"}


def affinity_cpus() -> int:
    """The CPUs in this process's affinity mask (all the machine's where the OS has no such call)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs' worth of time this process's cgroup may use (v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``; the tightest from its group up to the root), or None: unlimited or unknown."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2, the unified hierarchy
            quotas += [q for folder in _up_from(root, path) if (q := _v2_quota(folder)) is not None]
        elif "cpu" in controllers.split(","):
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                if mount.is_dir():
                    quotas += [q for folder in _up_from(mount, path) if (q := _v1_quota(folder)) is not None]
                    break
    return min(quotas) if quotas else None


def _up_from(mount: Path, path: str) -> list[Path]:
    """``mount/path`` and each folder above it, up to ``mount``. Inside a container the path is often the
    host's while the mount shows the container's own group as its root: then only ``mount`` exists."""
    parts = [p for p in path.strip("/").split("/") if p and p not in (".", "..")]
    return [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _v2_quota(folder: Path) -> float | None:
    fields = _read(folder / "cpu.max").split()  # "max 100000" (no limit) or "150000 100000"
    try:
        quota, period = int(fields[0]), int(fields[1]) if len(fields) > 1 else 100_000
    except (IndexError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota, period = int(_read(folder / "cpu.cfs_quota_us")), int(_read(folder / "cpu.cfs_period_us"))
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None  # a quota of -1: no limit


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota rounded to the
    nearest whole CPU (1.5 -> 2, 1.2 -> 1); at least 1."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.floor(quota + 0.5))
    return max(1, cpus)


@dataclass
class CpuSettings:
    """What :func:`configure` decided: torch's intra-op threads, how waiting threads wait, whose they are."""

    threads: int
    wait: str  # the OpenMP variables that say how waiting threads wait, e.g. "GOMP_SPINCOUNT=30000, ..."
    user_threads: bool
    user_wait: bool
    adaptive: bool  # the thread count follows other processes' load (ThreadGovernor)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.user_threads or not self.adaptive:
            threads = f"{self.threads} torch CPU threads" + (" (yours)" if self.user_threads else "")
        else:
            threads = f"up to {self.threads} torch CPU threads, fewer while other processes keep CPUs busy"
        return f"{threads}; {self.wait}" + (" (yours)" if self.user_wait else "")


def configure(threads: int | None = None, environ: MutableMapping[str, str] | None = None) -> CpuSettings:
    """Fit torch's CPU threads to this process's CPUs and to the machine's load, and keep waiting OpenMP
    threads from spinning long, by setting ``OMP_NUM_THREADS`` and :data:`SPIN` in ``environ``
    (``os.environ``) unless the user set them. An explicit ``threads`` wins over both and stays fixed.

    Call it before `import torch`, whose OpenMP runtime reads the environment once, when it loads; a
    :class:`ThreadGovernor` is then installed as torch finishes loading (only for ``os.environ``, once
    per process, and only when the count is nas's to choose). Called after torch was imported, it
    leaves torch's threads as they are (the process is someone else's: a notebook, a test), except that
    an explicit ``threads`` is applied at once and the governor, if any, stands aside.
    """
    env = os.environ if environ is None else environ
    ours = {name for name in env.get(MARKER, "").split(",") if name}
    users = {name for name in (THREADS_VAR, *WAIT_VARS) if env.get(name, "").strip() and name not in ours}
    user_threads = threads is not None or THREADS_VAR in users
    user_wait = [name for name in WAIT_VARS if name in users]
    if threads is not None:
        count = max(1, threads)
    elif user_threads:
        count = _positive_int(env[THREADS_VAR]) or available_cpus()
    else:
        count = available_cpus()
    if threads is not None or not user_threads:
        env[THREADS_VAR] = str(count)
    for name in ours & set(WAIT_VARS):
        env.pop(name, None)  # a parent nas process's choice: made again here
    if not user_wait:
        env.update(SPIN)
    wait = ", ".join(f"{name}={env[name]}" for name in (user_wait or SPIN))
    env[MARKER] = ",".join(sorted((set() if user_threads else {THREADS_VAR}) | (set() if user_wait else set(SPIN))))

    notes = []
    torch_module = sys.modules.get("torch")
    # Under a binding cgroup quota the load of other processes does not say what this one gets: no governor.
    quota_binds = not user_threads and count < affinity_cpus()
    adaptive = environ is None and not user_threads and not quota_binds and count > 1 and _load_sample() is not None
    if torch_module is not None:  # too late for the environment; a governor of an earlier call goes on
        if threads is not None:
            torch_module.set_num_threads(count)
            if _governor is not None:
                _governor.active = False
        adaptive = _governor is not None and _governor.active
        notes.append("torch was imported first: the wait settings apply to new processes")
    elif adaptive and not any(isinstance(f, _WhenTorchLoads) for f in sys.meta_path):
        sys.meta_path.insert(0, _WhenTorchLoads(lambda torch: _install_governor(torch, count)))
    return CpuSettings(count, wait, user_threads, bool(user_wait), adaptive, notes)


def _positive_int(text: str) -> int | None:
    """OMP_NUM_THREADS's first level ("4" or "4,2"), if it is a positive integer."""
    try:
        value = int(text.strip().split(",")[0])
    except ValueError:
        return None
    return value if value > 0 else None


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _load_sample() -> tuple[float, float, float] | None:
    """(seconds, CPU seconds spent on this process's CPUs by every process, CPU seconds spent by this
    one), or None where /proc/stat cannot be read. Only the CPUs of the affinity mask count (processes
    pinned elsewhere do not compete), and niced processes only when this one is niced too: a
    background job at nice 19 barely takes a core from a process at nice 0."""
    try:
        mine = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        with PROC_STAT.open() as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
        niced = os.getpriority(os.PRIO_PROCESS, 0) > 0
        ticks = 0
        for fields in (f for f in lines if f[0] in mine):
            user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
            ticks += user + system + irq + softirq + (nice if niced else 0)
    except (OSError, ValueError, AttributeError):
        return None
    if not any(f[0] in mine for f in lines):
        return None
    own = os.times()
    return time.monotonic(), ticks / _HZ, own.user + own.system


class ThreadGovernor:
    """Keeps torch's intra-op threads at the CPUs other processes leave free: between 1 and ``cpus``.

    Called at every optimizer step (a global step pre-hook: in the training thread, where the OpenMP
    thread count is set). Every ``period`` seconds it measures the cores other processes kept busy
    since its last look (/proc/stat, less this process's own CPU time) and sets ``cpus`` minus that,
    rounded: fewer threads at once, more only when two looks in a row agree. Whoever else sets the
    count (``torch.set_num_threads``) takes over: the governor then stands aside for good.
    """

    def __init__(self, torch_module: Any, cpus: int, period: float = 1.0) -> None:
        self.torch, self.cpus, self.period = torch_module, cpus, period
        self.threads = torch_module.get_num_threads()
        self.last = _load_sample()
        self.wanting_more = 0
        self.active = self.last is not None

    def wanted(self, others: float) -> int:
        """Threads for ``others`` cores kept busy by other processes."""
        return max(1, min(self.cpus, self.cpus - math.floor(others + 0.5)))

    def __call__(self, *hook_args: Any) -> None:
        if not self.active or self.last is None or time.monotonic() - self.last[0] < self.period:
            return None
        if self.torch.get_num_threads() != self.threads:  # someone else set it: theirs from now on
            self.active = False
            return None
        now = _load_sample()
        if now is None or now[0] <= self.last[0]:
            return None
        others = max(0.0, (now[1] - self.last[1]) - (now[2] - self.last[2])) / (now[0] - self.last[0])
        self.last = now
        wanted = self.wanted(others)
        self.wanting_more = self.wanting_more + 1 if wanted > self.threads else 0
        if wanted < self.threads or self.wanting_more >= 2:
            self.threads, self.wanting_more = wanted, 0
            self.torch.set_num_threads(wanted)
        return None


_governor: ThreadGovernor | None = None


def _install_governor(torch_module: Any, cpus: int) -> None:
    global _governor
    if _governor is None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        _governor = ThreadGovernor(torch_module, cpus)
        register_optimizer_step_pre_hook(_governor)


class _WhenTorchLoads(importlib.abc.MetaPathFinder):
    """Calls ``then(torch)`` right after the first `import torch` finishes; then leaves ``sys.meta_path``."""

    def __init__(self, then: Callable[[Any], None]) -> None:
        self.then = then

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = getattr(spec, "loader", None)
        if loader is not None and hasattr(loader, "exec_module"):
            load, then = loader.exec_module, self.then

            def exec_module(module: Any) -> None:
                load(module)
                try:
                    then(module)
                except Exception as exc:  # fairness is a nicety: never let it break `import torch`
                    print(f"nas: torch threads stay fixed ({type(exc).__name__}: {exc})", file=sys.stderr)

            loader.exec_module = exec_module  # this loader object loads torch/__init__.py only
        return spec
