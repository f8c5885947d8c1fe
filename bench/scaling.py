"""Scale-out on one machine: trials per hour with 1 and 2 local workers, and storage time per trial.

1. The same 8 architectures of `tiny` (the first distinct random samples, seed 0) are enqueued in a
   fresh study on journal storage and trained under `cpu-tiny` (fine-tuning tasks dropped, 100k
   tokens) by `nas worker` processes: 1 worker with every core, then 2 workers with half the cores
   each. Trials per hour = 8 / wall time from the workers' start to the last one's exit.
2. Storage time per trial: the storage operations of a real trial (ask, its user attributes, its
   intermediate values, tell), replayed from the trials of part 1 against SQLite, journal and, when
   reachable, PostgreSQL and MySQL; milliseconds per trial.

    python bench/scaling.py               # about 6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna  # noqa: E402
from _results import append  # noqa: E402

from nas.protocol import load_protocol  # noqa: E402
from nas.search import SearchConfig, open_storage, prepare_study  # noqa: E402
from nas.space import load_space, random_samples  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = ["tasks=[]", "confirm=null", "pretrain.budget.tokens=100000", f"cache_dir={ROOT / 'runs' / 'cache'}"]
EXTERNAL = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}


def run_workers(n_workers: int, values: list[dict], folder: Path) -> tuple[float, optuna.Study]:
    name = f"scaling-{n_workers}"
    url = f"journal:{folder / f'{name}.log'}"
    config = SearchConfig(
        space=load_space("tiny"),
        protocol=load_protocol("cpu-tiny", OVERRIDES),
        study_name=name,
        storage=url,
        runs_dir=folder,
        n_trials=len(values),
        sampler="random",
        pruner="none",
    )
    study = prepare_study(config)
    for v in values:
        study.enqueue_trial(v)
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    argv = [sys.executable, "-m", "nas", "worker", "--study", name, "--storage", url, "--runs-dir", str(folder)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen([*argv, "--index", str(i), "--threads", str(threads), "--quiet"], stdout=subprocess.DEVNULL)
        for i in range(n_workers)
    ]
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"workers exited with {codes}")
    return elapsed, optuna.load_study(study_name=name, storage=open_storage(url))


def replay_ms(url: str, trials: list[optuna.trial.FrozenTrial]) -> float:
    """Milliseconds of storage work per trial: the operations nas does for each of ``trials``."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = f"replay-{os.getpid()}-{time.time_ns()}"
    storage = open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage)
    started = time.perf_counter()
    for frozen in trials:
        trial = study.ask(fixed_distributions=frozen.distributions)  # params stored as a real trial stores them
        for key, value in frozen.user_attrs.items():
            trial.set_user_attr(key, value)
        for step, value in sorted(frozen.intermediate_values.items()):
            trial.report(value, step)
        study.get_trials(deepcopy=False)  # what the loop and the duplicate check read
        study.tell(trial, frozen.values)
    elapsed = time.perf_counter() - started
    optuna.delete_study(study_name=name, storage=storage)
    return elapsed * 1000 / len(trials)


def reachable(url: str) -> bool:
    try:
        open_storage(url)
        return True
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()

    samples = random_samples(load_space("tiny"), 200, 0)
    seen, values = set(), []
    for s in samples:
        if s.arch is not None and s.arch.arch_hash() not in seen:
            seen.add(s.arch.arch_hash())
            values.append(s.values)
    values = values[: args.trials]

    rows = [
        "| workers | torch threads each | wall time (s) | trials per hour | ratio to 1 worker |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for n in (1, 2):
            elapsed, study = run_workers(n, values, Path(tmp))
            results[n] = (elapsed, study)
            print(f"{n} worker(s): {len(values)} trials in {elapsed:.0f}s", flush=True)
        base = len(values) / results[1][0] * 3600
        for n, (elapsed, _) in results.items():
            rate = len(values) / elapsed * 3600
            rows.append(
                f"| {n} | {max(1, (os.cpu_count() or 1) // n)} | {elapsed:.0f} | {rate:.0f} | {rate / base:.2f} |"
            )

        trained = [t for t in results[1][1].trials if t.user_attrs.get("nas_status") == "trained"]
        storages = {"sqlite": f"sqlite:///{Path(tmp) / 'replay.db'}", "journal": f"journal:{Path(tmp) / 'replay.log'}"}
        storages |= {k: v for k, v in EXTERNAL.items() if reachable(v)}
        storage_rows = ["| storage | ms per trial |", "|---|---|"]
        trial_seconds = sum(t.user_attrs["wall_seconds"] for t in trained) / len(trained)
        worst = 0.0
        for kind, url in storages.items():
            ms = replay_ms(url, trained * 3)
            worst = max(worst, ms)
            storage_rows.append(f"| {kind} | {ms:.1f} |")
            print(f"{kind}: {ms:.1f} ms per trial", flush=True)

    body = "\n".join(rows)
    body += (
        "\n\nStorage time per trial (a trial's ask, user attributes, intermediate values and tell, replayed "
        f"from the trials above; {len(trained) * 3} trials each):\n\n" + "\n".join(storage_rows)
    )
    body += (
        f"\n\nA trial here trains for {trial_seconds:.1f}s on average (`tiny` x `cpu-tiny`, 100k tokens, no "
        f"fine-tuning); the slowest storage costs {worst / 10 / trial_seconds:.2f} % of that. Two workers on 2 "
        "cores trade one process's 2 torch threads for two processes of 1 thread each."
    )
    append("scaling: trials per hour with 1 and 2 workers, storage time per trial", body)


if __name__ == "__main__":
    main()
