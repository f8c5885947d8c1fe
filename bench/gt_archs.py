"""The ground truth's architectures: >= 40 distinct feasible architectures of bench/gt_space.yaml, picked
deterministically (seeded, spread evenly over log non-embedding parameters), with a FIXED split into a
"develop" and a "report" half (seeded, stratified by size) and the subsets that get more compute:
"sweep" (8 develop architectures covering width x depth: the learning-rate sweep and a third seed) and
"far" (8 architectures spread over size: the 16x budget). Written once to bench/gt_split.json, so the
split is committed before any figure exists; later runs check that the space still gives the same picks.

    python bench/gt_archs.py            # print the picks and the compute plan; write gt_split.json if absent
    python bench/gt_archs.py --plan     # the plan only (hours from the measured cost model below)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gutenberg import EVAL_EVERY_LONG, EVAL_EVERY_SHORT, EVAL_TOKENS, FAR_FACTOR, LONG_FACTOR, SEQ_LEN, SHORT_TOKENS

from nas.arch import ArchConfig
from nas.space import load_space

HERE = Path(__file__).resolve().parent
SPACE = HERE / "gt_space.yaml"
SPLIT = HERE / "gt_split.json"
N_ARCHS = 40
PICK_SEED = 0
SPLIT_SEED = 1
# Single-thread training seconds per token ~ A*flops_per_token + B*n_layers, fitted to 7 architectures
# measured with run_trial on this machine (1.1M to 56.6M FLOPs/token: 43,199 to 1,663 tokens/s);
# MARGIN covers the other core being busy and the per-run overhead (model build, latency, zero-cost).
COST_A = 9.0e-12
COST_B = 9.9e-6
MARGIN = 1.15
RUN_OVERHEAD_S = 4.0


def enumerate_space(space_path: Path = SPACE) -> list[ArchConfig]:
    """Every distinct feasible architecture of the space (each choice combination, via optuna's FixedTrial)."""
    import optuna

    space = load_space(space_path)
    names = [p.name for p in space.params]
    choices = [p.possible_values() or [] for p in space.params]
    archs: dict[str, ArchConfig] = {}
    for combo in itertools.product(*choices):
        sample = space.sample(optuna.trial.FixedTrial(dict(zip(names, combo, strict=True))))
        if sample.arch is not None:
            archs.setdefault(sample.arch.arch_hash(), sample.arch)
    return sorted(archs.values(), key=lambda a: (a.non_embedding_params(), a.arch_hash()))


def pick(pool: list[ArchConfig], n: int = N_ARCHS, seed: int = PICK_SEED) -> list[ArchConfig]:
    """``n`` architectures spread evenly over log non-embedding parameters and balanced over attention
    kinds: target i (of ``n`` evenly spaced sizes) takes the next kind of a seeded shuffle of the kinds
    (reshuffled every round) and one of the 6 not-yet-picked architectures of that kind nearest to it."""
    rng = random.Random(seed)
    logs = {a.arch_hash(): math.log(a.non_embedding_params()) for a in pool}
    low, high = min(logs.values()), max(logs.values())
    kinds = sorted({a.attention for a in pool})
    picked: list[ArchConfig] = []
    taken: set[str] = set()
    order: list[str] = []
    for i in range(n):
        if not order:
            order = rng.sample(kinds, len(kinds))
        kind = order.pop()
        target = low + (i + 0.5) / n * (high - low)
        free = [a for a in pool if a.arch_hash() not in taken and a.attention == kind]
        near = sorted(free, key=lambda a: (abs(logs[a.arch_hash()] - target), a.arch_hash()))
        choice = rng.choice(near[:6])
        picked.append(choice)
        taken.add(choice.arch_hash())
    return picked


def split(archs: list[ArchConfig], seed: int = SPLIT_SEED) -> dict[str, str]:
    """Hash -> "develop" | "report": archs sorted by size, paired, one of each pair to each half (seeded)."""
    rng = random.Random(seed)
    by_size = sorted(archs, key=lambda a: (a.non_embedding_params(), a.arch_hash()))
    halves: dict[str, str] = {}
    for i in range(0, len(by_size), 2):
        pair = by_size[i : i + 2]
        rng.shuffle(pair)
        for arch, half in zip(pair, ("develop", "report"), strict=False):
            halves[arch.arch_hash()] = half
    return halves


def sweep_set(archs: list[ArchConfig], halves: dict[str, str]) -> list[ArchConfig]:
    """8 develop architectures: for each width, a shallow (<= 3 layers) and a deep (>= 5) one, the one
    nearest the cell's median size; a cell with no develop architecture takes a report one."""
    chosen = []
    for width, deep in itertools.product(sorted({a.d_model for a in archs}), (False, True)):
        cell = [a for a in archs if a.d_model == width and (a.n_layers >= 5 if deep else a.n_layers <= 3)]
        develop = [a for a in cell if halves[a.arch_hash()] == "develop"]
        cell = sorted(develop or cell, key=lambda a: (a.non_embedding_params(), a.arch_hash()))
        if cell:
            chosen.append(cell[len(cell) // 2])
    return chosen


def far_set(archs: list[ArchConfig], n: int = 8) -> list[ArchConfig]:
    """``n`` architectures evenly spread over size (every len/n-th by non-embedding parameters)."""
    by_size = sorted(archs, key=lambda a: (a.non_embedding_params(), a.arch_hash()))
    step = len(by_size) / n
    return [by_size[int(step * i + step / 2)] for i in range(n)]


def run_seconds(arch: ArchConfig, factor: int) -> float:
    """Estimated single-thread seconds of one run at ``factor`` x the trial budget, evals included."""
    per_token = COST_A * arch.flops_per_token(SEQ_LEN) + COST_B * arch.n_layers
    tokens = SHORT_TOKENS * factor
    every = EVAL_EVERY_SHORT if factor == 1 else EVAL_EVERY_LONG
    evals = 1 + tokens // (2048 * every)
    return MARGIN * per_token * (tokens + evals * EVAL_TOKENS / 3) + RUN_OVERHEAD_S


def plan(archs: list[ArchConfig], sweep: list[ArchConfig], far: list[ArchConfig]) -> dict[str, float]:
    """Core-hours: the ground truth (T and 2 seeds at 8T for all, a third 8T seed for the sweep set, 16T for
    the far set) and the sweep's extra runs (lr/3 and lr*3 at 8T; its recipe-lr runs are ground-truth runs)."""
    gt = sum(run_seconds(a, 1) + 2 * run_seconds(a, LONG_FACTOR) for a in archs)
    gt += sum(run_seconds(a, LONG_FACTOR) for a in sweep) + sum(run_seconds(a, FAR_FACTOR) for a in far)
    sweep_extra = sum(2 * run_seconds(a, LONG_FACTOR) for a in sweep)
    sweep_all = sum(5 * run_seconds(a, LONG_FACTOR) for a in sweep)
    return {
        "ground_truth_core_hours": gt / 3600,
        "sweep_extra_core_hours": sweep_extra / 3600,
        "sweep_core_hours": sweep_all / 3600,
        "wall_hours_on_2_cores": (gt + sweep_extra) / 7200,
    }


def describe(arch: ArchConfig) -> dict[str, Any]:
    return {
        "hash": arch.arch_hash(),
        "summary": arch.summary(),
        "non_embedding_params": arch.non_embedding_params(),
        "params": arch.param_count(),
        "flops_per_token": arch.flops_per_token(SEQ_LEN),
        "arch": arch.to_dict(),
    }


def build() -> dict[str, Any]:
    """The picks, the split, the subsets and the plan, as written to gt_split.json."""
    pool = enumerate_space()
    archs = pick(pool)
    halves = split(archs)
    sweep, far = sweep_set(archs, halves), far_set(archs)
    return {
        "space": SPACE.name,
        "space_text": SPACE.read_text(),
        "pool": len(pool),
        "pick_seed": PICK_SEED,
        "split_seed": SPLIT_SEED,
        "budgets": {"short_tokens": SHORT_TOKENS, "long_factor": LONG_FACTOR, "far_factor": FAR_FACTOR},
        "archs": [describe(a) | {"half": halves[a.arch_hash()]} for a in archs],
        "sweep": [a.arch_hash() for a in sweep],
        "far": [a.arch_hash() for a in far],
        "plan": plan(archs, sweep, far),
    }


def load_split() -> dict[str, Any]:
    """gt_split.json with each entry's ``arch`` as an ArchConfig (``by_hash`` maps hash -> entry)."""
    data = json.loads(SPLIT.read_text())
    for entry in data["archs"]:
        entry["arch"] = ArchConfig(**entry["arch"])
        if entry["arch"].arch_hash() != entry["hash"]:
            raise SystemExit(f"{SPLIT.name}: {entry['summary']} hashes differently now: ArchConfig changed")
    data["by_hash"] = {e["hash"]: e for e in data["archs"]}
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", action="store_true", help="print the plan only, write nothing")
    args = parser.parse_args()
    data = build()
    sizes = [e["non_embedding_params"] for e in data["archs"]]
    print(
        f"{data['pool']} feasible architectures; picked {len(data['archs'])}: non-embedding params "
        f"{min(sizes):,} .. {max(sizes):,} ({max(sizes) / min(sizes):.0f}x)"
    )
    for i, e in enumerate(data["archs"]):
        tags = [t for t in ("sweep", "far") if e["hash"] in data[t]]
        seconds = run_seconds(ArchConfig(**e["arch"]), LONG_FACTOR)
        print(
            f"{i:2d} {e['half']:7s} {e['summary']:58s} {e['non_embedding_params']:>9,} "
            f"{e['flops_per_token'] / 1e6:5.1f}MF {seconds / 60:5.1f}min@8T {' '.join(tags)}"
        )
    print(json.dumps(data["plan"], indent=1))
    if args.plan:
        return
    if SPLIT.exists():
        old = json.loads(SPLIT.read_text())
        same = [e["hash"] for e in old["archs"]] == [e["hash"] for e in data["archs"]]
        same = same and old["sweep"] == data["sweep"] and old["far"] == data["far"]
        print(f"{SPLIT.name} exists ({'the same picks' if same else 'DIFFERENT picks: the space changed'}); kept")
        return
    SPLIT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {SPLIT}")


if __name__ == "__main__":
    main()
