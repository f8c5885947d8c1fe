"""Many workers, real faults (issue 33): the real `nas worker` processes and loop on one study, with only the
trial replaced by a sleeping stand-in (bench/_load_standin.py), on PostgreSQL or a journal file.

For PostgreSQL the bench starts a throwaway cluster of its own (initdb and pg_ctl as the postgres user, on a
free port, in a temporary folder), so it can restart it; the shared server at :5432 is left alone. A
supervisor starts N workers and restarts any that is killed, as Slurm's --requeue would. Faults (--faults):
- ``kill``: kill -9 a random worker about every --kill-every seconds;
- ``stop``: SIGSTOP one worker for longer than the grace period, then SIGCONT it;
- ``restart``: restart PostgreSQL once, mid-run (stopped for --outage seconds);
- ``disk``: the run folder on a small tmpfs that is filled mid-run, then freed.
Every figure is read from the storage after the run (:func:`figures`): trials lost, doubled, stuck RUNNING,
trained vs --n-trials, retries and their resume step, coordination overhead, trials per hour. --ask measures
the sampler's ask() latency at 100, 1,000 and 5,000 trials; --memory one idle worker's memory.

    python bench/load.py --storage postgres --workers 8 --n-trials 100 --faults kill,stop,restart
    python bench/load.py --storage journal --workers 64 --n-trials 2000 --faults kill,stop
    python bench/load.py --ask                      # ask() latency, TPE and random, on PostgreSQL
    python bench/load.py --memory                   # one idle worker's peak memory
    python bench/load.py ... --out runs.jsonl       # append the run's figures as one JSON line
    python bench/load.py --report runs.jsonl --record   # their tables, appended to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from _load_cluster import Cluster, fill_disk, tmpfs
from _load_study import WORKER, ask_latency, create_study, idle_memory


# ---- the workers --------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (from /proc; None once it is reaped, or off Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Supervisor:
    """N stand-in workers; a worker that dies by a signal is started again with its index (--requeue)."""

    def __init__(self, n: int, study: str, url: str, runs_dir: Path, seconds: str, logs: Path) -> None:
        self.n, self.study, self.url, self.runs_dir, self.logs = n, study, url, runs_dir, logs
        self.env = os.environ | {"NAS_LOAD_SECONDS": seconds, "PYTHONUNBUFFERED": "1"}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self.exits: Counter[int] = Counter()
        self.failed: list[int] = []  # the indices of the workers that exited with an error (not restarted)
        self.cpu: dict[int, float] = {}  # pid: its last CPU seconds read (user + system), kept after it ends
        self.lock = threading.Lock()
        logs.mkdir(parents=True, exist_ok=True)

    @property
    def cpu_seconds(self) -> float:
        """The workers' CPU time, all of them and every start, to within the last 0.5 s of each (tend's reads):
        with a stand-in trial that sleeps, it is the coordination's CPU (plus each start's imports)."""
        return sum(self.cpu.values())

    def spawn(self, index: int) -> None:
        profile = os.environ.get("NAS_LOAD_PROFILE")  # a folder: each worker runs under cProfile (worker-I.prof)
        where = ["-m", "cProfile", "-o", str(Path(profile) / f"worker-{index}.prof")] if profile else []
        argv = [sys.executable, *where, str(WORKER), "worker", "--study", self.study, "--storage", self.url]
        argv += ["--runs-dir", str(self.runs_dir), "--index", str(index), "--quiet", "--wait", "120"]  # as in Slurm
        with open(self.logs / f"worker-{index}.log", "ab") as log:
            self.procs[index] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def start(self) -> None:
        for i in range(self.n):
            self.spawn(i)

    def tend(self) -> bool:
        """Restart the workers killed by a signal; True while any runs."""
        with self.lock:
            for i, p in list(self.procs.items()):
                if (used := cpu_seconds(p.pid)) is not None:  # before poll(): an ended worker's stays readable
                    self.cpu[p.pid] = used
                rc = p.poll()
                if rc is None:
                    continue
                if rc < 0:  # killed (kill -9): the scheduler starts it again
                    self.restarts += 1
                    self.spawn(i)
                elif i in self.procs:
                    self.exits[rc] += 1
                    if rc:
                        self.failed.append(i)
                    del self.procs[i]
            return bool(self.procs)

    def live(self) -> list[subprocess.Popen[bytes]]:
        with self.lock:
            return [p for p in self.procs.values() if p.poll() is None]

    def stop_all(self) -> None:
        for p in self.live():
            p.kill()


def run_faults(
    sup: Supervisor,
    faults: set[str],
    args: argparse.Namespace,
    cluster: Cluster | None,
    disk: Path | None,
    done: threading.Event,
    log: list[str],
) -> None:
    """The fault schedule, until ``done``: kills every ~kill_every s; the stall at 20 s; the PostgreSQL
    restart and the full disk at about a third and half of the expected run."""
    rng = random.Random(0)
    started = time.monotonic()
    low, high = (float(x) for x in args.seconds.split(","))
    expected = args.n_trials * (low + high) / 2 / args.workers
    stall_at, restart_at, disk_at = min(20.0, expected / 5), expected / 3, expected / 2
    next_kill = started + rng.uniform(0.5, 1.5) * args.kill_every
    stalled = restarted = filled = False
    while not done.wait(1.0):
        now, since = time.monotonic(), time.monotonic() - started
        if cluster is not None:
            cluster.count_connections()
        live = sup.live()
        if "kill" in faults and now >= next_kill and live:
            victim = rng.choice(live)
            victim.kill()
            log.append(f"{since:.0f}s kill -9 worker pid {victim.pid}")
            next_kill = now + rng.uniform(0.5, 1.5) * args.kill_every
        if "stop" in faults and not stalled and since >= stall_at and live:
            stalled = True
            victim = rng.choice(live)
            victim.send_signal(signal.SIGSTOP)
            log.append(f"{since:.0f}s SIGSTOP worker pid {victim.pid} for {args.grace + 15}s (grace {args.grace}s)")
            threading.Timer(
                args.grace + 15,
                lambda v=victim: (
                    v.send_signal(signal.SIGCONT),
                    log.append(f"{time.monotonic() - started:.0f}s SIGCONT worker pid {v.pid}"),
                ),
            ).start()
        if "restart" in faults and cluster is not None and not restarted and since >= restart_at:
            restarted = True
            log.append(f"{since:.0f}s PostgreSQL stopped for {args.outage:g}s")
            cluster.restart(args.outage)
            log.append(f"{time.monotonic() - started:.0f}s PostgreSQL started again")
        if "disk" in faults and disk is not None and not filled and since >= disk_at:
            filled = True
            log.append(f"{since:.0f}s the run folder's disk filled for 20s")
            fill_disk(disk, 20.0)


# ---- the figures, read from the storage -------------------------------------------------------------
def figures(url: str, study_name: str, n_trials: int, workers: int, wall: float) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    from nas.search import records
    from nas.search.attrs import METRICS, RESUMED_FROM_STEP, WORKER
    from nas.search.storage import open_storage

    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if records.is_trained(t)]
    by_arch: dict[str, list[Any]] = defaultdict(list)
    for t in trained:
        by_arch[records.arch_hash_of(t) or f"?{t.number}"].append(t)
    claimed = [
        t
        for t in trials
        if records.arch_hash_of(t) is not None and records.status_of(t) not in ("duplicate", "infeasible", "surplus")
    ]
    lost = {records.arch_hash_of(t) for t in claimed} - set(by_arch)
    doubled = [h for h, ts in by_arch.items() if len(ts) > 1]
    # a result written after the trial was failed as stale (its status says trained, its state FAIL); this read
    # is_trained() before, which is never true of a FAIL trial: the figure was 0 by construction until 2026-12-07
    told_after_fail = [t.number for t in trials if t.state == TrialState.FAIL and records.status_of(t) == "trained"]
    orphans = [t.number for t in trials if t.state == TrialState.RUNNING and records.status_of(t) is None]
    retries = [t for t in trials if records.retry_of(t) is not None]
    resumed = [t.user_attrs.get(RESUMED_FROM_STEP) for t in retries if records.is_trained(t)]
    overhead, sleep = 0.0, 0.0
    per_worker: dict[str, list[Any]] = defaultdict(list)
    for t in trained:
        per_worker[str(t.user_attrs.get(WORKER))].append(t)
    for ts in per_worker.values():
        ts.sort(key=lambda t: t.datetime_start)
        previous = None
        for t in ts:
            slept = float(t.user_attrs.get(METRICS, {}).get("sleep_seconds", 0.0))
            inside = (t.datetime_complete - t.datetime_start).total_seconds() - slept
            gap = (t.datetime_start - previous).total_seconds() if previous is not None else 0.0
            overhead += inside + max(0.0, gap)
            sleep += slept
            previous = t.datetime_complete
    starts = [t.datetime_start for t in trained]
    ends = [t.datetime_complete for t in trained]
    span = (max(ends) - min(starts)).total_seconds() if trained else float("nan")
    mean_sleep = sleep / len(trained) if trained else float("nan")
    return {
        "workers": workers,
        "n_trials": n_trials,
        "trained": len(trained),
        "trials": len(trials),
        "lost": len(lost),
        "doubled": len(doubled),
        "doubled_detail": [
            [
                {
                    "number": t.number,
                    "state": t.state.name,
                    "retry_of": records.retry_of(t),
                    "worker": t.user_attrs.get(WORKER),
                    "start": str(t.datetime_start),
                    "end": str(t.datetime_complete),
                    "duplicate_of": t.user_attrs.get("duplicate_of"),
                }
                for t in by_arch[h]
            ]
            for h in doubled
        ],
        "told_after_failed": len(told_after_fail),
        "told_after_failed_detail": told_after_fail,
        "stuck_running": sum(1 for t in trials if t.state == TrialState.RUNNING),
        "stuck_unclaimed": orphans,  # RUNNING, never claimed (asked, then the worker died or the ask repeated)
        "retries": len(retries),
        "resume_steps": sorted(Counter(str(s) for s in resumed).items()),
        "statuses": dict(Counter(str(records.status_of(t)) for t in trials)),
        "coordination_share": overhead / sleep if sleep else float("nan"),
        "trials_per_hour": len(trained) / span * 3600 if trained else 0.0,
        "ideal_per_hour": workers * 3600 / mean_sleep if trained else 0.0,
        "mean_trial_seconds": mean_sleep,
        "wall_seconds": wall,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    faults = {f for f in args.faults.split(",") if f}
    root = Path(tempfile.mkdtemp(prefix="nas-load-"))
    cluster = None
    disk_ctx: contextlib.AbstractContextManager[Path | None] = contextlib.nullcontext(None)
    if "disk" in faults:
        disk_ctx = tmpfs(root / "runs", 64)
    log: list[str] = []
    try:
        with disk_ctx as disk:
            runs_dir = root / "runs"
            if args.storage == "postgres":
                cluster = Cluster(root / "pg", max_connections=args.max_connections)
                url = cluster.url
            else:
                url = f"journal:{root / 'journal.log'}"
            study = create_study(url, runs_dir, args.n_trials, args.sampler, args.heartbeat, args.grace)
            sup = Supervisor(args.workers, study, url, runs_dir, args.seconds, root / "logs")
            done = threading.Event()
            started = time.monotonic()
            sup.start()
            chaos = threading.Thread(target=run_faults, args=(sup, faults, args, cluster, disk, done, log), daemon=True)
            chaos.start()
            while sup.tend():
                if time.monotonic() - started > args.limit:
                    log.append(f"limit {args.limit}s reached: workers killed")
                    sup.stop_all()
                    break
                time.sleep(0.5)
            done.set()
            wall = time.monotonic() - started
            out = figures(url, study, args.n_trials, args.workers, wall)
            if cluster is not None:
                out |= {"peak_connections": cluster.peak_connections, "max_connections": args.max_connections}
            starts = args.workers + sup.restarts
            out |= {"worker_cpu_seconds": round(sup.cpu_seconds, 1), "worker_starts": starts}
            out |= {
                "storage": args.storage,
                "faults": sorted(faults),
                "restarts": sup.restarts,
                "exits": dict(sup.exits),
                "events": log,
                "seconds": args.seconds,
                "sampler": args.sampler,
            }
            if out["exits"].get(1) or out["exits"].get(2):
                out["failed_logs"] = _tails(root / "logs", sup.failed)
            return out
    finally:
        if cluster is not None:
            cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}", file=sys.stderr)


def _tails(logs: Path, failed: list[int]) -> list[str]:
    """The last lines of the logs of the workers that exited with an error (``failed``: their indices), then of
    others that mention an error; 5 at most."""
    first = [logs / f"worker-{i}.log" for i in failed]
    rest = [f for f in sorted(logs.glob("worker-*.log")) if f not in first]
    out = []
    for f in [*first, *rest]:
        text = f.read_text(errors="replace").strip().splitlines() if f.exists() else []
        if f in first or any("Traceback" in line or "error" in line.lower() for line in text):
            out.append(f"{f.name}: " + " | ".join(text[-3:]))
    return out[:5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", choices=("postgres", "journal"), default="postgres")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--n-trials", type=int, default=100)
    parser.add_argument("--faults", default="", help="comma list of kill, stop, restart, disk")
    parser.add_argument("--seconds", default="5,20", help="the stand-in's sleep range, lo,hi seconds")
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--heartbeat", type=int, default=5)
    parser.add_argument("--grace", type=int, default=30)
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--outage", type=float, default=10.0, help="seconds PostgreSQL is down in a restart")
    parser.add_argument("--max-connections", type=int, default=100, help="the cluster's (PostgreSQL's default)")
    parser.add_argument("--limit", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    parser.add_argument("--ask", action="store_true", help="measure ask() latency instead")
    parser.add_argument("--memory", action="store_true", help="measure one idle worker's memory instead")
    parser.add_argument("--out", type=Path, help="append the figures as one JSON line here")
    parser.add_argument("--report", type=Path, help="print the tables of the runs in this JSON-lines file")
    parser.add_argument("--record", action="store_true", help="with --report: append them to bench/RESULTS.md")
    args = parser.parse_args()
    if args.report:
        from _load_report import report

        text = report(args.report)
        print(text)
        if args.record:
            from _results import append

            append("load: many workers, real faults", text)
        return
    if args.memory:
        result: dict[str, Any] = {
            "memory": {"torch loaded (before)": idle_memory(False), "stand-in path (after)": idle_memory(True)}
        }
    elif args.ask:
        root = Path(tempfile.mkdtemp(prefix="nas-ask-"))
        cluster = Cluster(root / "pg", 100)
        try:
            result = {"ask_latency_s": {s: ask_latency(cluster.url, s) for s in ("tpe", "random")}}
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
    else:
        result = run(args)
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(result, indent=1, default=str))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
