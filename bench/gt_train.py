"""The ground truth of issue 13 on the Gutenberg books: every architecture of bench/gt_split.json trained at
the recipe's peak learning rate for its width (bench/_gutenberg.py, text-files' optimizer: lr scaled by
lr_width_base / d_model above lr_width_base; WSD) with cool-downs that record the loss a shorter WSD
run would end with (nas.train.schedule). Runs go in the order that informs soonest: all at T (seed 0,
cool-downs at 1/4, 1/2: 3 annealed points), all at 8T seed 0 (cool-downs at 1/8, 1/4, 1/2: annealed at
about 1.25T, 2.5T, 5T, 8T), all at 8T seed 1, the 8 "far" ones at 16T seed 0, the 8 "sweep" ones at 8T
seed 2. An 8T run in bench/lr_sweep.json with the same architecture, seed, lr and protocol (cool-downs
aside) counts for its final loss (`reused_from: lr_sweep`). Results: bench/ground_truth_gutenberg.json,
rewritten atomically after every run; several processes (one per core) may share it: each claims a run
before training it and takes the next free one; a restart skips finished runs, and redoes a run made at another lr
than the recipe's now (the old one is kept under "superseded", out of the figures). --report: the ceiling
(8T seed 0 vs seed 1), the pairs tied within the seed spread, and rank correlations against the mean 8T loss.

    python bench/gt_train.py --plan                                       # runs and core-hours per phase
    nice -n 19 python bench/gt_train.py --threads 1                       # all runs, one core (start one per core)
    nice -n 19 python bench/gt_train.py --threads 1 --part 1/6            # -> ground_truth_gutenberg.part1of6.json
    python bench/gt_train.py --merge bench/ground_truth_gutenberg.part1of6.json --merge ...   # fold parts in
    python bench/gt_train.py --report [--record]                          # --record appends it to RESULTS.md
    python bench/gt_train.py --tokens 16384 --limit 2 --out /tmp/gt.json  # a smoke test (never into bench/)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import itertools
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gt_report import report
from _gutenberg import (
    FAR_FACTOR,
    LONG_FACTOR,
    SHORT_TOKENS,
    budget_protocol,
    fixed_lr,
    gutenberg_protocol,
    recipe_lr,
)
from gt_archs import SPLIT, load_split, run_seconds
from lr_sweep import curve_rows, finite_or_none, nas_source, part_of, save

HERE = Path(__file__).resolve().parent
OUT = HERE / "ground_truth_gutenberg.json"
LR_SWEEP = HERE / "lr_sweep.json"
PART_LIMIT_S = 2 * 3600
COOLDOWNS = {1: [0.25, 0.5], LONG_FACTOR: [0.125, 0.25, 0.5], FAR_FACTOR: [0.0625, 0.125, 0.25, 0.5]}
# (phase, budget factor, seed, which architectures of gt_split.json), in run order
PHASES = [
    ("T", 1, 0, "archs"),
    ("8T seed 0", LONG_FACTOR, 0, "archs"),
    ("8T seed 1", LONG_FACTOR, 1, "archs"),
    ("16T seed 0", FAR_FACTOR, 0, "far"),
    ("8T seed 2", LONG_FACTOR, 2, "sweep"),
]
SOURCE = "?"  # nas_source() at start, recorded with every run


def planned_runs(split: dict[str, Any], recipe: Callable[[int], float] = recipe_lr) -> list[dict[str, Any]]:
    """Every run of the ground truth, in the order that informs soonest (within a phase, the lr sweep's
    architectures last: the sweep may have trained them already); ``lr``: the recipe's peak lr at the
    architecture's width."""
    runs = []
    for phase, factor, seed, subset in PHASES:
        hashes = [e["hash"] for e in split["archs"]] if subset == "archs" else split[subset]
        for h in sorted(hashes, key=lambda h: h in split["sweep"]):
            entry = split["by_hash"][h]
            key = f"{h}/x{factor}/seed={seed}"
            lr = recipe(entry["arch"].d_model)
            runs.append({"key": key, "entry": entry, "phase": phase, "factor": factor, "seed": seed, "lr": lr})
    return runs


def current(run: dict[str, Any], data: dict[str, Any]) -> bool:
    """Whether ``data`` holds ``run`` at its planned lr (a run at an earlier recipe's lr is stale)."""
    have = data["runs"].get(run["key"])
    return have is not None and math.isclose(have["lr"], run["lr"])


def est_seconds(run: dict[str, Any]) -> float:
    """gt_archs' single-core estimate of the run, plus its cool-downs' extra steps (decay 0.2: d/(1-d) = 1/4
    of each branch point's steps)."""
    return run_seconds(run["entry"]["arch"], run["factor"]) * (1 + 0.25 * sum(COOLDOWNS[run["factor"]]))


def print_plan(runs: list[dict[str, Any]]) -> None:
    total = sum(est_seconds(r) for r in runs)
    for phase, group in itertools.groupby(runs, key=lambda r: r["phase"]):
        group = list(group)
        print(f"{phase:11s} {len(group):3d} runs  {sum(est_seconds(r) for r in group) / 3600:5.2f} core-hours")
    parts = math.ceil(total / PART_LIMIT_S)
    print(f"total       {len(runs):3d} runs  {total / 3600:5.2f} core-hours; --part K/N needs N >= {parts}")


def protocols(run: dict[str, Any], tokens: int | None) -> tuple[Any, str]:
    """The run's protocol (the recipe at its budget, with its cool-downs) and the hash of the same protocol
    without them."""
    factor, seed = run["factor"], run["seed"]
    if tokens is None:
        base = budget_protocol(factor, seed=seed)
    else:
        total = tokens * factor
        base = gutenberg_protocol(total, seed=seed, eval_every=max(1, total // 2048 // 4))
    if not math.isclose(base.pretrain.optimizer.peak_lr(run["entry"]["arch"].d_model), run["lr"]):
        raise SystemExit(f"{run['key']}: the recipe's peak lr is not the planned {run['lr']:g}")
    extra = [f"pretrain.schedule.cooldowns={json.dumps(COOLDOWNS[factor])}"]
    pretrain = base.pretrain
    protocol = gutenberg_protocol(pretrain.budget.tokens, seed=seed, eval_every=pretrain.eval_every, extra=extra)
    schedule = protocol.pretrain.schedule.model_copy(update={"cooldowns": []})
    bare = protocol.model_copy(update={"pretrain": protocol.pretrain.model_copy(update={"schedule": schedule})})
    if bare.content_hash != base.content_hash:
        raise SystemExit(f"{run['key']}: the protocol differs from the budget's beyond its cool-downs")
    return protocol, base.content_hash


def header(run: dict[str, Any]) -> dict[str, Any]:
    entry, arch = run["entry"], run["entry"]["arch"]
    described = {k: entry[k] for k in ("summary", "half", "non_embedding_params", "flops_per_token")}
    return {"arch_hash": entry["hash"], **described, "d_model": arch.d_model, "n_layers": arch.n_layers} | {
        "factor": run["factor"],
        "seed": run["seed"],
        "lr": run["lr"],
    }


def reused(run: dict[str, Any], base_hash: str, sweep_path: Path, same: str | None = None) -> dict[str, Any] | None:
    """The lr sweep's finished run of this architecture, seed and lr under the same protocol (cool-downs
    aside; its hash names how a trial measures, nas.protocol.MEASURE) or under ``same``, the hash of the
    protocol that trains at the same peak lr stated as a fixed lr (the sweep's form for an lr that was not
    the recipe's when it ran), as a ground-truth record; None if there is none. The sweep's nas code
    version goes with it."""
    hashes = {base_hash, same}
    sweep = json.loads(sweep_path.read_text())["runs"].values() if sweep_path.exists() else []
    found = [
        r
        for r in sweep
        if (r["arch_hash"], r["seed"], r["status"]) == (run["entry"]["hash"], run["seed"], "complete")
        and r["protocol_hash"] in hashes
    ]
    r = next((r for r in found if math.isclose(r["lr"], run["lr"]) and r["val_loss"] is not None), None)
    if r is None:
        return None
    keep = ("status", "cause", "val_loss", "tokens", "curve", "train_seconds", "tokens_per_second", "wall_seconds")
    keep += ("protocol_hash", "nas_source", "finished")
    # the sweep's run has no cool-downs: its only annealed point is its own end
    own = {"annealed": [[r["tokens"], r["val_loss"]]], "cooldown_seconds": None, "reused_from": "lr_sweep"}
    return header(run) | {k: r[k] for k in keep} | own | {"base_hash": base_hash}


def train(run: dict[str, Any], tokens: int | None, sweep_path: Path = LR_SWEEP) -> dict[str, Any]:
    from nas.trial import run_trial

    protocol, base_hash = protocols(run, tokens)
    same = budget_protocol(run["factor"], seed=run["seed"], extra=fixed_lr(run["lr"])) if tokens is None else None
    found = reused(run, base_hash, sweep_path, same.content_hash if same is not None else None)
    if found is not None:
        return found
    started = time.perf_counter()
    result = run_trial(run["entry"]["arch"], protocol)
    loss = result.metrics.get("val_loss", math.nan)
    return header(run) | {
        "status": result.status,
        "cause": result.cause,
        "val_loss": finite_or_none(loss),
        "annealed": [[int(t), finite_or_none(v)] for t, v in result.annealed],
        "tokens": int(result.metrics.get("tokens_trained", 0)),
        "curve": curve_rows(result),
        "train_seconds": result.metrics.get("train_seconds"),
        "cooldown_seconds": result.metrics.get("cooldown_seconds"),
        "tokens_per_second": result.metrics.get("tokens_per_second"),
        "wall_seconds": time.perf_counter() - started,
        "protocol_hash": protocol.content_hash,
        "base_hash": base_hash,
        "nas_source": SOURCE,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def run_counts(data: dict[str, Any], runs: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """Per phase: the runs done at the current recipe, and the runs planned."""
    done = {p: sum(current(r, data) for r in runs if r["phase"] == p) for p, *_ in PHASES}
    return done, {p: sum(r["phase"] == p for r in runs) for p, *_ in PHASES}


def load(out: Path, tokens: int | None, recipe: float) -> dict[str, Any]:
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault(
        "meta",
        {
            "what": "ground truth of issue 13 on the Gutenberg books (bench/gt_train.py)",
            "split": SPLIT.name,
            "recipe_lr": recipe,  # the peak lr up to the recipe's lr_width_base; each run records its own
            "short_tokens": tokens or SHORT_TOKENS,
            "cooldowns": {str(f): c for f, c in COOLDOWNS.items()},
            "data": "20 Gutenberg books (../shared/data/gutenberg), 2 held out; text-files protocol, WSD decay 0.2",
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    if data["meta"]["short_tokens"] != (tokens or SHORT_TOKENS):
        raise SystemExit(f"{out} holds runs at T = {data['meta']['short_tokens']:,} tokens: use another --out")
    data.setdefault("runs", {})
    return data


@contextlib.contextmanager
def locked(out: Path) -> Iterator[dict[str, Any]]:
    """The results file read under an exclusive lock (``out``.lock), written back when the block ends:
    several processes (one per core) can share one results file."""
    with open(out.with_name(out.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(out.read_text())
            yield data
            save(data, out)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def claimed(data: dict[str, Any], key: str) -> bool:
    """Whether another live process on this machine is training run ``key`` (a claim left by a process that
    died is void)."""
    claim = data.get("claims", {}).get(key)
    if claim is None or claim["host"] != socket.gethostname() or claim["pid"] == os.getpid():
        return False
    try:
        os.kill(claim["pid"], 0)
    except ProcessLookupError:
        return False
    return True


def run_all(data: dict[str, Any], todo: list[dict[str, Any]], out: Path, args: argparse.Namespace) -> None:
    """Train the runs of ``todo`` not yet current in ``out``. Each run is claimed in the file before it
    starts and its result folded into the file as it is then, so a second process started on the same file
    takes the next free run instead of repeating one."""
    import torch
    from _results import machine

    import nas.trial  # noqa: F401  (loaded before its source is hashed)

    global SOURCE
    SOURCE = nas_source()
    if not out.exists():
        save(data, out)
    with locked(out) as data:
        data["meta"].update(machine=machine(), threads=torch.get_num_threads())
    done = 0
    for i, run in enumerate(todo):
        if args.limit is not None and done >= args.limit:
            break
        with locked(out) as data:
            if current(run, data) or claimed(data, run["key"]):
                continue
            since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            claim = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
            data.setdefault("claims", {})[run["key"]] = claim
        entry = None
        try:
            entry = train(run, args.tokens)
        finally:
            with locked(out) as data:
                data["claims"].pop(run["key"], None)
                if entry is not None:
                    if run["key"] in data["runs"]:  # at an earlier recipe's lr: kept aside, out of the figures
                        data.setdefault("superseded", {}).setdefault(run["key"], []).append(data["runs"][run["key"]])
                    data["runs"][run["key"]] = entry
        done += 1
        loss = f"{entry['val_loss']:.4f}" if entry["val_loss"] is not None else entry["cause"]
        annealed = " ".join(f"{v:.4f}@{t / (data['meta']['short_tokens']):.3g}T" for t, v in entry["annealed"] if v)
        print(
            f"[{i + 1}/{len(todo)}] {run['phase']:10s} {entry['summary']:56s} {loss} [{annealed}] "
            f"({entry['wall_seconds']:.0f}s{', reused' if entry.get('reused_from') else ''})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--part", help="K/N: run only part K of N (balanced by estimated time, each <= 2 h)")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/ground_truth_gutenberg[.partKofN].json)")
    parser.add_argument("--merge", type=Path, action="append", default=[], help="fold in a part's JSON, then stop")
    parser.add_argument("--plan", action="store_true", help="print the runs and core-hours per phase and stop")
    parser.add_argument("--report", action="store_true", help="print the report and stop")
    parser.add_argument("--record", action="store_true", help="with --report: append it to bench/RESULTS.md")
    parser.add_argument(
        "--tokens", type=int, help="smoke test: this T instead of the trial budget (--out outside bench/)"
    )
    parser.add_argument("--limit", type=int, help="stop after this many new runs")
    args = parser.parse_args()
    part = tuple(int(v) for v in args.part.split("/")) if args.part else None
    out = args.out or (HERE / f"ground_truth_gutenberg.part{part[0]}of{part[1]}.json" if part else OUT)
    if args.tokens and out.resolve().parent == HERE:
        raise SystemExit("--tokens is a smoke test: give --out outside bench/ (e.g. /tmp/gt_smoke.json)")
    runs = planned_runs(load_split())
    if args.plan:
        print_plan(runs)
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(out, args.tokens, recipe_lr())
    by_key = {r["key"]: r for r in runs}
    for other in args.merge:
        part = json.loads(other.read_text())
        for key, old in part.get("superseded", {}).items():
            data.setdefault("superseded", {}).setdefault(key, []).extend(old)
        for key, run in part.get("runs", {}).items():
            have, plan = data["runs"].get(key), by_key.get(key)
            redone = plan is not None and not current(plan, data) and current(plan, {"runs": {key: run}})
            if have is None or redone:
                if have is not None:  # the part redid a stale run: the redo wins, the old one is kept aside
                    data.setdefault("superseded", {}).setdefault(key, []).append(have)
                data["runs"][key] = run
    if args.merge:
        save(data, out)
    if args.report or args.merge:  # merging folds the parts in, reports and stops
        body = report(data, *run_counts(data, runs))
        if args.record:
            from _results import record

            record("gt_train: the Gutenberg ground truth, its ceiling and the proxies", body, no_record=False)
        else:
            print(body)
        return
    run_all(data, part_of(runs, *part, est_seconds) if part else runs, out, args)
    with locked(out) as data:
        if not args.part and all(current(r, data) for r in runs):
            data["meta"]["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    print(report(data, *run_counts(data, runs)))


if __name__ == "__main__":
    main()
