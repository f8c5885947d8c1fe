"""bench/load.py's study (the space and protocol its workers join) and its two probes: a sampler's ask() latency
at a history size, and one idle worker's memory."""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_load_standin.py"
SPACE, PROTOCOL = "small-100m", "cpu-tiny"
# The stand-in trial reports the held-out loss only: the study optimises it under a cosine schedule, as cpu-tiny did
# before it predicted at a target (the prediction's cost is the trial's, not the coordination's)
MEASURED = (
    "pretrain.schedule={kind: cosine, warmup_fraction: 0.05, min_lr_ratio: 0.1}",
    "target={}",
    "objectives={val_loss: minimize}",
)


def create_study(
    url: str,
    runs_dir: Path,
    n_trials: int,
    sampler: str,
    heartbeat: int,
    grace: int,
    name: str = "load",
    sets: tuple[str, ...] = (),
) -> str:
    from nas.protocol import load_protocol
    from nas.search import SearchConfig, prepare_study
    from nas.search.workers import Heartbeats
    from nas.space import load_space

    config = SearchConfig(
        space=load_space(SPACE),
        protocol=load_protocol(PROTOCOL, ["confirm=null", *MEASURED, *sets]),  # figures count the --n-trials alone
        study_name=name,
        storage=url,
        runs_dir=runs_dir,
        n_trials=n_trials,
        sampler=sampler,  # type: ignore[arg-type]
        pruner="hyperband",
        heartbeats=Heartbeats(heartbeat, grace),
    )
    prepare_study(config)
    return config.study_name


def ask_latency(url: str, sampler_name: str, sizes: tuple[int, ...] = (100, 1000, 5000)) -> dict[int, float]:
    """Median seconds of one worker's ask (study.ask() and the space's sampling through the trial, as the
    search loop does) at each history size. The history is complete trials with params the space's sampling
    drew (on an in-memory study, then added to the storage in one batch), values random."""
    import optuna

    from nas.search.samplers import make_sampler
    from nas.search.storage import open_storage
    from nas.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(SPACE)
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(study_name=f"ask-{sampler_name}-{time.time_ns()}", storage=open_storage(url))
    rng = random.Random(0)
    out: dict[int, float] = {}
    have = 0
    for size in sizes:
        history = []
        while have < size:
            t = scratch.ask()
            space.sample(t)
            frozen = scratch._storage.get_trial(t._trial_id)
            history.append(
                optuna.trial.create_trial(
                    params=frozen.params, distributions=frozen.distributions, value=rng.uniform(2, 5)
                )
            )
            scratch.tell(t, state=optuna.trial.TrialState.FAIL)
            have += 1
        study.add_trials(history)
        study.sampler = make_sampler(sampler_name, 0, space, False)
        times = []
        for _ in range(5):
            begin = time.perf_counter()
            t = study.ask()
            space.sample(t)
            times.append(time.perf_counter() - begin)
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        out[size] = round(statistics.median(times), 4)
        print(f"{sampler_name} at {size} trials: ask {out[size]:.3f}s", file=sys.stderr, flush=True)
    return out


def idle_memory(light: bool) -> dict[str, Any]:
    """One worker's peak resident memory (VmHWM) over joining a study, one stand-in trial of 0 s and its
    exit: all a waiting worker holds. ``light`` False loads torch first, as the search loop did before this
    issue (nas.train.checkpoint imported it for every trial's checkpoint folder)."""
    root = Path(tempfile.mkdtemp(prefix="nas-mem-"))
    try:
        url = f"journal:{root / 'journal.log'}"
        study = create_study(url, root / "runs", 1, "tpe", 5, 30)
        report = root / "mem.json"
        env = os.environ | {"NAS_LOAD_MEMORY": str(report), "NAS_LOAD_SECONDS": "0,0"}
        argv = [
            sys.executable,
            str(WORKER),
            "worker",
            "--study",
            study,
            "--storage",
            url,
            "--runs-dir",
            str(root / "runs"),
            "--quiet",
        ]
        if not light:
            argv = [
                sys.executable,
                "-c",
                "import runpy, sys, nas.trial; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')",
                *argv[1:],
            ]
        subprocess.run(argv, check=True, env=env, capture_output=True)
        return json.loads(report.read_text())
    finally:
        shutil.rmtree(root, ignore_errors=True)
