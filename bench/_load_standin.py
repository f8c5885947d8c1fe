"""bench/load.py's worker: the real `nas worker` (its loop, storage, heartbeats, dedupe, pruners, retries and
checkpoint folders), with only the trial replaced by a stand-in. Never a user flag: this file is the only way
in, and only bench/load.py runs it.

The stand-in sleeps for a drawn duration (uniform in NAS_LOAD_SECONDS, "lo,hi", seeded by the architecture),
reports REPORTS held-out points on the real reporter path (so pruners decide and the worker beats while it
sleeps), and returns ``val_loss`` from a known function of the architecture (:func:`known_loss`). Its
progress (the last reported step) lives in the trial's checkpoint folder, so a retry of a killed trial
resumes where the dead worker's last report left it and says so (``resumed_from_step``). It imports nothing
that a real trial needs (torch, transformers): a worker on this path is as light as nas's search loop.

    python bench/_load_standin.py worker --study NAME --storage URL --runs-dir DIR --index I --quiet
"""

from __future__ import annotations

import atexit
import json
import math
import os
import random
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORTS = 6  # held-out points per trial
PROGRESS = "standin.json"
HEAVY = {
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "scipy",
    "pandas",
    "plotly",
    "safetensors",
    "sklearn",
}  # in the trial's checkpoint folder: the last reported step


def known_loss(arch: Any) -> float:
    """The trial's final held-out loss: a size law plus an aspect-ratio penalty (a known optimum shape)."""
    size = arch.non_embedding_params()
    aspect = math.log2(arch.d_model / (64 * arch.n_layers) + 1e-9)
    return 1.8 + 25.0 / size**0.3 + 0.02 * aspect**2


def duration(arch: Any) -> float:
    low, high = (float(x) for x in os.environ.get("NAS_LOAD_SECONDS", "5,20").split(","))
    return random.Random(arch.arch_hash()).uniform(low, high)


@dataclass
class StandInResult:
    """The fields of nas.trial.TrialResult that the search loop reads."""

    arch: Any
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[Any] = field(default_factory=list)
    cause: str | None = None
    wall_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    micro_batch_size: int = 0
    notes: list[str] = field(default_factory=list)
    resumed_from_step: int | None = None
    annealed: list[list[float]] = field(default_factory=list)
    task_baselines: dict[str, float] = field(default_factory=dict)
    baseline_predictors: dict[str, str] = field(default_factory=dict)
    model: Any = None


def stand_in(
    arch: Any,
    protocol: Any,
    reporter: Any = None,
    on_step: Any = None,
    on_stage: Any = None,
    keep_model: bool = False,
    checkpoint: Any = None,
    task_gate: Any = None,
) -> StandInResult:
    """nas.trial.run_trial's signature; sleeps instead of training (see the module doc)."""
    from nas.train.outcome import EvalPoint

    started = time.perf_counter()
    config = protocol.pretrain
    total = max(REPORTS, config.budget.tokens // config.batch_tokens)
    steps = [round(total * (k + 1) / REPORTS) for k in range(REPORTS)]
    final, seconds = known_loss(arch), duration(arch)
    progress = Path(checkpoint.folder) / PROGRESS if checkpoint is not None else None
    done = json.loads(progress.read_text())["step"] if progress is not None and progress.is_file() else 0
    result = StandInResult(arch, "complete", resumed_from_step=done or None)
    slept = 0.0
    for step in steps:
        if step <= done:
            continue
        nap = seconds / REPORTS
        time.sleep(nap)
        slept += nap
        loss = final + 1.5 * (1 - step / total) ** 2
        point = EvalPoint(step, step * config.batch_tokens, loss, loss, 1e-3, slept)
        result.curve.append(point)
        if progress is not None:
            try:
                progress.parent.mkdir(parents=True, exist_ok=True)
                tmp = progress.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"step": step}))
                os.replace(tmp, progress)
            except OSError:  # a full disk: skipped, as the search loop skips a checkpoint save
                pass
        if reporter is not None and reporter(point):
            result.status, result.cause = "pruned", f"pruned at step {step}"
            break
    result.metrics = {
        "val_loss": result.curve[-1].val_loss if result.curve else final,
        "non_embedding_params": float(arch.non_embedding_params()),
        "params": float(arch.param_count()),
        "sleep_seconds": slept,
    }
    result.wall_seconds = time.perf_counter() - started
    result.phase_seconds = {"pretrain": result.wall_seconds}
    return result


def _report_memory(path: str) -> None:
    """At exit: this worker's peak resident memory and whether torch was loaded (bench/load.py's figure)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    peak_mb = int(status["VmHWM"].split()[0]) / 1024  # this process image's peak (ru_maxrss spans the fork)
    heavy = sorted({m.split(".")[0] for m in sys.modules} & HEAVY)
    Path(path).write_text(json.dumps({"peak_rss_mb": round(peak_mb, 1), "loaded": heavy}))


def main() -> None:
    stub = types.ModuleType("nas.trial")  # the search loop looks run_trial up here at call time
    stub.run_trial = stand_in  # type: ignore[attr-defined]
    sys.modules["nas.trial"] = stub
    if os.environ.get("NAS_LOAD_MEMORY"):
        atexit.register(_report_memory, os.environ["NAS_LOAD_MEMORY"])
    from nas.cli import main as nas_main

    nas_main(sys.argv[1:])


if __name__ == "__main__":
    main()
