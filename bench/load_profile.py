"""Where one worker's CPU per trial goes (issue 33): bench/load.py's worker (the real `nas worker` loop, the stand-in
trial) run in this process on a study that already holds ``--history`` trained trials and ``--running`` trials
that other workers are running, under cProfile with CPU time (time.process_time: other load on the machine does
not change it), with every SQL statement counted. Wall-clock figures are not taken.

Per trial it prints the loop thread's CPU seconds and SQL statements, each stage's share (the rows of STAGES,
cumulative), and the heartbeat's: one beat (record + fail stale trials) measured on its own, and the bench's
count per trial (one as the trial starts, then one every --heartbeat seconds of a --trial-seconds trial).
The study is deleted afterwards.

    python bench/load_profile.py --storage postgresql://postgres@127.0.0.1:5432/test --history 300 --trials 40
    python bench/load_profile.py --storage journal:/tmp/profile.log --history 300 --trials 40 --top 25
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _load_standin import REPORTS, known_loss, stand_in
from _load_study import MEASURED, PROTOCOL, SPACE, create_study

# cpu-tiny as bench/RESULTS.md's load runs had it (one objective, the held-out loss; no cool-downs): --set adds more
SETS = MEASURED  # the stand-in reports the held-out loss only (bench/_load_study.py)

STAGES = (  # (label, file suffix, function): cumulative CPU of each, per trial
    ("ask + sampling", "optuna/study/study.py", "ask"),
    ("", "nas/space.py", "sample"),
    ("surplus check", "nas/search/loop.py", "_surplus"),
    ("claim write", "nas/search/records.py", "write_claim"),
    ("dedupe", "nas/search/loop.py", "_dedupe"),
    ("reporter (all)", "nas/search/reporter.py", "reporter"),
    ("  curve write", "nas/search/records.py", "write_curve"),
    ("  report (intermediate value)", "optuna/trial/_trial.py", "report"),
    ("  should_prune", "optuna/trial/_trial.py", "should_prune"),
    ("result write", "nas/search/records.py", "write_result"),
    ("artifacts + note", "nas/search/storage.py", "store_artifacts"),
    ("tell", "optuna/study/study.py", "tell"),
    ("loop: fail_stale", "nas/search/workers.py", "fail_stale"),
    ("loop: read_trials (all callers)", "nas/search/records.py", "read_trials"),
    ("trial_finished + get_trial", "nas/cli/search.py", "trial_finished"),
    ("get_all_trials (all callers)", "optuna/storages/_cached_storage.py", "get_all_trials"),
    ("journal get_all_trials (all callers)", "optuna/storages/journal/_storage.py", "get_all_trials"),
    ("RDB _get_trials (all callers)", "optuna/storages/_rdb/storage.py", "_get_trials"),
    ("deepcopy (all callers)", "copy.py", "deepcopy"),
)


class _Enough(BaseException):
    """Raised before the worker asks for one trial more than it was to run."""


def populate(url: str, name: str, history: int, running: int, sets: tuple[str, ...], seed: int = 0) -> None:
    """``history`` trained trials and ``running`` claimed, running ones (with half a curve), as workers leave
    them: their claim, result, curve and intermediate values, added in one batch."""
    import optuna
    from optuna.trial import TrialState

    from nas.protocol import load_protocol
    from nas.search import attrs as a
    from nas.search.storage import open_storage
    from nas.space import load_space

    space, protocol = load_space(SPACE), load_protocol(PROTOCOL, ["confirm=null", *sets])
    total = max(REPORTS, protocol.pretrain.budget.tokens // protocol.pretrain.batch_tokens)
    steps = [round(total * (k + 1) / REPORTS) for k in range(REPORTS)]
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    rng, seen, made = random.Random(seed), set(), []
    while len(made) < history + running:
        t = scratch.ask()
        arch = space.sample(t).arch
        scratch.tell(t, state=TrialState.FAIL)
        if arch is None or arch.arch_hash() in seen:
            continue
        seen.add(arch.arch_hash())
        frozen = scratch._storage.get_trial(t._trial_id)
        live = len(made) >= history
        final = known_loss(arch) + rng.uniform(0, 0.1)
        curve = [[s, s * protocol.pretrain.batch_tokens, final + 1.5 * (1 - s / total) ** 2] for s in steps]
        curve = curve[: REPORTS // 2] if live else curve
        user = {a.ARCH: arch.to_dict(), a.ARCH_HASH: arch.arch_hash(), a.SUMMARY: arch.summary(), **arch.counts()}
        user |= {a.STATUS: a.Status.RUNNING if live else a.Status.TRAINED, a.WORKER: f"other:{len(made)}"}
        user |= {a.CURVE: curve, a.CAUSE: "killed: placeholder"} if live else {a.CURVE: curve, a.CAUSE: None}
        if not live:
            user |= {a.METRICS: {"val_loss": curve[-1][2], "sleep_seconds": 12.5}, "val_loss": curve[-1][2]}
            user |= {a.WALL_SECONDS: 12.5, a.PHASE_SECONDS: {"pretrain": 12.5}}
        made.append(
            optuna.trial.create_trial(
                state=TrialState.RUNNING if live else TrialState.COMPLETE,
                params=frozen.params,
                distributions=frozen.distributions,
                value=None if live else curve[-1][2],
                intermediate_values={int(s): v for s, _, v in curve},
                user_attrs=user,
            )
        )
    study.add_trials(made)


def count_statements() -> Counter[str]:
    """SQL statements per thread name, from now on (every SQLAlchemy engine of this process)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts: Counter[str] = Counter()

    def seen(*_: Any) -> None:
        counts[threading.current_thread().name] += 1

    event.listen(Engine, "before_cursor_execute", seen)
    return counts


def run_worker(name: str, url: str, runs_dir: Path, trials: int, n_trials: int) -> tuple[cProfile.Profile, float, int]:
    """The worker's loop under cProfile until it has trained ``trials`` trials; returns the profile, the loop
    thread's CPU seconds and the number of asks (an infeasible or duplicate sample is an ask, not a trial)."""
    import nas.search.loop as loop
    from nas.cli.search import SearchView
    from nas.search import join_study, work

    found, config = join_study(name, url, runs_dir, n_trials, None, 0)
    view = SearchView(config.n_trials, True, config.run_dir, "[profile] ")
    original, seen = loop._ask_and_run, Counter[str]()

    def counted(worker: Any, *rest: Any) -> str:
        if seen["trained"] >= trials:
            raise _Enough
        seen["asks"] += 1
        outcome = original(worker, *rest)
        seen[outcome] += 1
        return outcome

    loop._ask_and_run = counted  # type: ignore[assignment]
    profile = cProfile.Profile(time.process_time)
    began = time.thread_time()
    profile.enable()
    try:
        work(found, config, view.callbacks())
    except _Enough:
        pass
    finally:
        profile.disable()
        loop._ask_and_run = original  # type: ignore[assignment]
    print(f"outcomes: {dict(seen)}")
    return profile, time.thread_time() - began, seen["asks"]


def beat_cpu(name: str, url: str, beats: int = 20) -> tuple[float, float]:
    """One heartbeat's CPU seconds and SQL statements (record a beat, fail stale trials), as the beating thread
    runs it, on a worker's storage; measured ``beats`` times on the study's newest running trial."""
    import optuna

    from nas.search.storage import open_storage
    from nas.search.workers import Heartbeats, fail_stale

    storage = open_storage(url, Heartbeats(5, 3600))
    study = optuna.load_study(study_name=name, storage=storage)
    trial_id = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))[-1]._trial_id
    counts = count_statements()
    began = time.process_time()
    for _ in range(beats):
        storage.record_heartbeat(trial_id)
        fail_stale(study)
    return (time.process_time() - began) / beats, sum(counts.values()) / beats


def stage_rows(profile: cProfile.Profile, trials: int) -> list[str]:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows, label = [], ""
    for shown, suffix, func in STAGES:
        label = shown or label
        hits = [(v[1], v[3]) for (f, _, fn), v in stats.items() if fn == func and f.endswith(suffix)]
        calls, cum = sum(h[0] for h in hits), sum(h[1] for h in hits)
        rows.append(f"| {shown or '  (' + func + ')'} | {1000 * cum / trials:.1f} | {calls / trials:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--history", type=int, default=300, help="trained trials in the study before the worker")
    parser.add_argument("--running", type=int, default=31, help="trials other workers are running")
    parser.add_argument("--trials", type=int, default=40, help="trials this worker runs under the profile")
    parser.add_argument("--seconds", default="0.05,0.1", help="the stand-in's sleep range (NAS_LOAD_SECONDS)")
    parser.add_argument("--heartbeat", type=int, default=5)
    parser.add_argument("--trial-seconds", type=float, default=12.5, help="the bench's mean trial, for beats/trial")
    parser.add_argument("--top", type=int, default=0, help="also print the top functions by own CPU")
    parser.add_argument("--dump", type=Path, help="write the profile here (pstats)")
    parser.add_argument("--set", action="append", default=[], help="a protocol override, after SETS (repeatable)")
    args = parser.parse_args()
    import optuna

    import nas.cli.search  # noqa: F401  (imported before the profile: a worker's start is not per trial)
    import nas.search.storage as storage_module

    stub = type(sys)("nas.trial")
    stub.run_trial = stand_in  # type: ignore[attr-defined]
    sys.modules["nas.trial"] = stub
    os.environ["NAS_LOAD_SECONDS"] = args.seconds
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="nas-profile-"))
    url = args.storage
    name = f"profile-{os.getpid()}-{time.time_ns()}"
    try:
        sets = (*SETS, *args.set)
        create_study(url, root / "runs", 10**6, "tpe", args.heartbeat, 3600, name, sets)
        populate(url, name, args.history, args.running, sets)
        counts = count_statements()
        n_trials = args.history + args.trials + args.running + 10  # the worker never waits for the others
        profile, main_cpu, asks = run_worker(name, url, root / "runs", args.trials, n_trials)
        loop_sql = counts.get("MainThread", 0) / args.trials
        per_beat, beat_sql = beat_cpu(name, url)
        beats = 1 + args.trial_seconds / args.heartbeat
        print(f"study: {args.history} trained + {args.running} running; {url}")
        print(f"profiled: {args.trials} trials trained, {asks} asks")
        print(f"loop thread: {main_cpu / args.trials:.3f} CPU s/trial, {loop_sql:.1f} SQL statements/trial")
        print(f"heartbeat: {per_beat:.4f} CPU s/beat, {beat_sql:.1f} statements/beat, {beats:.1f} beats/trial")
        print(f"per trial in the bench: {main_cpu / args.trials + beats * per_beat:.3f} CPU s")
        print("\n| stage | CPU ms/trial | calls/trial |\n|---|---|---|")
        print("\n".join(stage_rows(profile, args.trials)))
        if args.dump:
            profile.dump_stats(args.dump)
        if args.top:
            pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=storage_module.open_storage(url))
        except Exception as exc:  # noqa: BLE001  (best effort: say so)
            print(f"could not delete study {name}: {exc}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
