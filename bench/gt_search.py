"""Search efficiency on the Gutenberg ground truth: a tabular replay (issue 13, point 5).

bench/search_efficiency.py's replay on the architectures of bench/gt_split.json that have both a trial of
the design (seed 0, T = 196,608 tokens) and at least one 8T run: `nas.search.run_search` (the real samplers,
pruners and dedupe) with `run_trial` replaced by a lookup of the recorded trial curve. An architecture's
truth is its mean 8T loss over the seeds available (trial_design.long_losses: the ground truth and the lr
sweep's recipe-lr runs). Design `b2048` is the ground truth's own T runs; the others, bench/trial_design.json's.

The samplers see all of bench/gt_space.yaml (depth, width, kv sharing, FFN, attention, window, global_every),
restricted by more constraints to the parameter values that give a table architecture: any other sample is
infeasible, told FAIL at no compute. Compute is trained tokens, as a fraction of the exhaustive cost (every
table architecture at the trial budget). Single objective (held-out loss): random without pruning vs TPE +
Hyperband, and TPE on nas's default prediction at 8T (`predicted_val_loss`, the study's size trend over the
replayed cool-down points; picks by the prediction refitted on the trials so far, as `nas status` ranks),
without pruning and with Hyperband (whose curve pruner then compares a trial only with trials at least as
large); two (held-out loss,
non-embedding params): random vs NSGA-II + successive halving (hypervolume).
Caveat: a sampler's model ignores FAIL trials, so the replay rejection-samples its proposals onto the table;
proposals next to the incumbents, which the real space would train, are rejected for free here. TPE stalls
once its proposals miss the table (see the per-search line), and NSGA-II moves on mostly through the loop's
queue of unseen architectures after duplicates: the real space may treat both better.

    nice -n 19 python bench/gt_search.py                           # 10 seeds; b2048 and trial_design.json's designs
    nice -n 19 python bench/gt_search.py --seeds 2 --design b2048  # a check: about 7 minutes on a busy 2-core box
    nice -n 19 python bench/gt_search.py --record                  # append to bench/RESULTS.md
    python bench/gt_search.py --jobs 2 --design b512               # two searches at once (one per core)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna  # noqa: E402
import yaml  # noqa: E402
from _gutenberg import LONG_FACTOR, SHORT_TOKENS, gutenberg_protocol  # noqa: E402
from _results import record  # noqa: E402
from gt_archs import SPACE, enumerate_space, load_split  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from search_efficiency import (  # noqa: E402
    FRACTIONS,
    at_fraction,
    hv_fraction,
    hypervolume,
    regret,
    tabular_run_trial,
    trajectory,
)
from trial_design import DESIGNS, GROUND_TRUTH, long_losses  # noqa: E402
from trial_design import OUT as TRIAL_DESIGN  # noqa: E402

import nas.data.tokens  # noqa: E402
import nas.search.loop  # noqa: E402
import nas.search.study  # noqa: E402
import nas.trial  # noqa: E402
from nas.search import SearchConfig, run_search  # noqa: E402
from nas.search.ranking import refitted_predictions  # noqa: E402
from nas.search.records import TrialRecord  # noqa: E402
from nas.space import load_space  # noqa: E402

Table = dict[str, dict[str, Any]]
Traj = list[tuple[int, dict[str, float]]]  # (tokens spent, {hash: objective value} completed so far)
Results = dict[str, list[Traj]]  # strategy -> one trajectory per seed
Score = Callable[[list[str]], float]  # trained hashes -> regret or hypervolume fraction
Fmt = Callable[[float], str]
STRATEGIES = {
    "random, no pruning": ("random", "none", ["val_loss"]),
    "TPE + Hyperband": ("tpe", "hyperband", ["val_loss"]),
    "TPE, predicted 8T, no pruning": ("tpe", "none", ["predicted_val_loss"]),
    "TPE + Hyperband, predicted 8T": ("tpe", "hyperband", ["predicted_val_loss"]),  # size-matched pruning
    "random, predicted 8T, no pruning": ("random", "none", ["predicted_val_loss"]),  # no TPE: no replay stall
    "random, no pruning (2 objectives)": ("random", "none", ["val_loss", "non_embedding_params"]),
    "NSGA-II + successive halving (2 objectives)": ("nsga2", "sha", ["val_loss", "non_embedding_params"]),
}
SINGLE, DOUBLE = [s for s in STRATEGIES if "2 objectives" not in s], [s for s in STRATEGIES if "2 objectives" in s]
AT = 0.2  # the compute fraction of points 3 and 4
# Only ~40 of the space's ~1,510 feasible architectures are in the table, so most samples are infeasible here
# although the real space would train them: the loop's stop after 100 infeasible or duplicate samples in a row
# would end a search for a reason the real space does not have. The rarest parameter combination (local/global
# with window and global_every) has probability 1/3,456 per random draw; 20,000 draws miss it with p = 0.3 %.
nas.search.loop.EXHAUSTED_AFTER = 20_000
nas.data.tokens.prepare_tokens = lambda protocol: None  # prepare_study's cache build: the replay reads no tokens


class ReplayStorage(optuna.storages.InMemoryStorage):
    """In memory, never deep-copying, and listings leave out finished FAIL trials unless asked for them. A replay
    study holds thousands of free infeasible samples, and the loop scans (and once deep-copies, `len(study.trials)`)
    the whole listing per trial: quadratic, hours per search. No decision changes: the loop's scans look for
    trained, running or claimed trials, never a FAIL one, and Optuna's samplers and pruners read COMPLETE, PRUNED
    and RUNNING trials only. The in-memory storage copies a trial on write, so sharing trials is safe."""

    def __init__(self) -> None:
        super().__init__()
        self._kept: list[int] = []  # indices of the finished trials that did not FAIL
        self._sorted = 0  # trials before this index are finished and sorted into _kept

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        if states is not None and (TrialState.FAIL in states or TrialState.WAITING in states):
            return super().get_all_trials(study_id, deepcopy=False, states=states)
        with self._lock:
            trials = self._studies[study_id].trials
            while self._sorted < len(trials) and trials[self._sorted].state.is_finished():
                if trials[self._sorted].state != TrialState.FAIL:
                    self._kept.append(self._sorted)
                self._sorted += 1
            kept = [trials[i] for i in self._kept] + trials[self._sorted :]
        return kept if states is None else [t for t in kept if t.state in states]


nas.search.study.open_storage = lambda url, heartbeats=None: ReplayStorage()  # one worker: no heartbeats


def design_runs(design: str) -> dict[str, dict[str, Any]]:
    """arch hash -> the design's complete seed-0 trial record."""
    if design == "b2048":
        runs = [r for r in json.loads(GROUND_TRUTH.read_text())["runs"].values() if r["factor"] == 1]
    else:
        data = json.loads(TRIAL_DESIGN.read_text()) if TRIAL_DESIGN.exists() else {"runs": {}}
        runs = [r for r in data["runs"].values() if r["design"] == design]
    return {r["arch_hash"]: r for r in runs if r["seed"] == 0 and r["status"] == "complete" and r["val_loss"]}


def build_table(design: str, long: dict[str, dict[int, float]]) -> Table:
    """search_efficiency's table format for the architectures with the design's trial and an 8T seed."""
    split = load_split()["by_hash"]
    table: Table = {}
    for h, run in design_runs(design).items():
        if long.get(h):
            curve = [[int(row[0]), int(row[1]), row[2]] for row in run["curve"] if row[2] is not None]
            table[h] = {
                "short": {
                    "curve": curve,
                    "val_loss": run["val_loss"],
                    "tokens": run.get("tokens") or curve[-1][1],
                    "annealed": run.get("annealed") or [],
                },
                "long": {"val_loss": statistics.fmean(long[h].values())},
                "non_embedding_params": split[h]["non_embedding_params"],
                "summary": split[h]["summary"],
            }
    return table


def seed_spread(long: dict[str, dict[int, float]]) -> tuple[float | None, int]:
    """Median |8T seed 0 - seed 1| over the architectures with both (None when none has), and how many."""
    gaps = [abs(s[0] - s[1]) for s in long.values() if 0 in s and 1 in s]
    return (statistics.median(gaps) if gaps else None), len(gaps)


def restriction(table: Table) -> list[str]:
    """Constraints that admit exactly the parameter values (inactive ones None) giving a table architecture:
    the first two varied parameters' pairs, and per pair the rest's tuples (split so that each stays within
    nas.expr's bounds on an expression's size)."""
    space = load_space(SPACE)
    names = [p.name for p in space.params]
    varied = [p.name for p in space.params if len(p.possible_values() or []) > 1]
    keep = set()
    for combo in itertools.product(*(p.possible_values() or [] for p in space.params)):
        sample = space.sample(optuna.trial.FixedTrial(dict(zip(names, combo, strict=True))))
        if sample.arch is not None and sample.arch.arch_hash() in table:
            keep.add(tuple(sample.values.get(n) for n in varied))
    head, rest = varied[:2], varied[2:]
    groups: dict[tuple, set[tuple]] = {}
    for values in keep:
        groups.setdefault(values[:2], set()).add(values[2:])
    pairs = f"({', '.join(head)}) in {tuple(sorted(groups, key=repr))!r}"
    return [pairs] + [
        f"({', '.join(head)}) != {key!r} or ({', '.join(rest)},) in {tuple(sorted(group, key=repr))!r}"
        for key, group in sorted(groups.items(), key=lambda kv: repr(kv[0]))
    ]


def replay_space(table: Table, folder: Path) -> Path:
    """gt_space.yaml plus the restrictions, written to ``folder``; checked to give exactly the table."""
    raw = yaml.safe_load(SPACE.read_text())
    raw["constraints"] += restriction(table)
    path = folder / "gt_replay_space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, width=1_000_000))
    found = {a.arch_hash() for a in enumerate_space(path)}
    if found != set(table):
        raise SystemExit(f"the replay space gives {len(found)} architectures, not the table's {len(table)}")
    return path


def search(table: Table, space: Path, design: str, strategy: str, seed: int, folder: Path) -> tuple[Traj, int, int]:
    """One study: its trajectory (only the trials that change it), trials asked (FAIL included), trained."""
    sampler, pruner, objectives = STRATEGIES[strategy]
    batch, lr = DESIGNS[design]
    every = min(row[0] for e in table.values() for row in e["short"]["curve"] if row[0] > 0)  # the pruners' rungs
    extra = [f"pretrain.batch_tokens={batch}"] + [f"objectives.{n}.direction=minimize" for n in objectives[1:]]
    if objectives == ["predicted_val_loss"]:  # nas's default prediction at 8T from the replayed cool-downs
        extra += [
            "pretrain.schedule.cooldowns=[0.25, 0.5]",
            f"target.tokens={LONG_FACTOR * SHORT_TOKENS}",
            "objectives={predicted_val_loss: minimize}",
        ]
    name = f"{design}-{sampler}-{pruner}-{seed}-{len(objectives)}"
    config = SearchConfig(
        space=load_space(space, feasibility_probe=0),
        protocol=gutenberg_protocol(SHORT_TOKENS, lr=lr, eval_every=every, extra=extra),  # parses YAML only
        study_name=name,
        runs_dir=folder,
        n_trials=len(table),  # trained trials: every table architecture
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        checkpoint_every=0,
    )
    summary = run_search(config)
    traj = trajectory(summary.study, table)
    if objectives == ["predicted_val_loss"]:
        traj = refitted(summary.study, traj)
    changes = [p for i, p in enumerate(traj) if i == 0 or p != traj[i - 1]]  # at_fraction reads the last <= f
    return changes, len(summary.study.get_trials(deepcopy=False, states=tuple(TrialState))), summary.trained


def refitted(study: optuna.Study, traj: Traj) -> Traj:
    """The trajectory with each step's values refitted on the trials trained so far, as `nas status` and
    `nas export` rank a study whose objective is the prediction (nas.search.ranking.refitted_predictions)."""
    rows = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    assert len(rows) == len(traj)
    out: Traj = []
    for i, (spent, done) in enumerate(traj):
        if i and done.keys() == out[-1][1].keys():
            out.append((spent, out[-1][1]))
            continue
        refit = refitted_predictions(study, rows[: i + 1])
        out.append((spent, {r.arch_hash: refit[r.number][0] for r in rows[: i + 1] if r.number in refit}))
    return out


def first_hit(traj: Traj, table: Table, best: float, target: float, exhaustive: int) -> float:
    """Compute fraction at the first pick with regret <= ``target`` (inf: never)."""
    hit = next((spent for spent, h in traj if regret(h, table, best) <= target), None)
    return math.inf if hit is None else hit / exhaustive


def pct(v: float) -> str:
    return "never" if math.isinf(v) else f"{100 * v:.1f} %"


def fraction_table(results: Results, labels: list[str], ex: int, score: Score, worst: float, fmt: Fmt) -> str:
    """A markdown row per strategy: the median score at each compute fraction ("(k none)": seeds with no pick)."""
    lines = ["| strategy | " + " | ".join(f"{int(f * 100)} %" for f in FRACTIONS) + " |", "|---|" + "---|" * 6]
    for label in labels:
        cells = []
        for f in FRACTIONS:
            values = [at_fraction(t, f, ex, score, worst) for t in results[label]]
            none = sum(v == worst for v in values)
            cells.append(fmt(statistics.median(values)) + (f" ({none} none)" if none else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def hit_lines(results: Results, table: Table, best: float, targets: dict[str, float], ex: int) -> str:
    """Points 2 and 3: median compute to the first good pick (random / TPE), and the seeds good at AT."""
    head = " | ".join(SINGLE[1:])
    lines = ["| first pick | " + " | ".join(SINGLE) + f" | random / ({head}) |", "|---|" + "---|" * (len(SINGLE) + 1)]
    for name, target in targets.items():
        med = [statistics.median(first_hit(t, table, best, target, ex) for t in results[s]) for s in SINGLE]
        ratios = [f"{med[0] / m:.2f}" if math.isfinite(med[0]) and math.isfinite(m) and m > 0 else "-" for m in med[1:]]
        cells = " | ".join(pct(m) for m in med)
        lines.append(f"| {name} (regret <= {100 * target:.2f} %) | {cells} | {' / '.join(ratios)} |")
    name, target = list(targets.items())[-1]
    good = []
    for s in SINGLE:
        picks = [at_fraction(t, AT, ex, lambda h: regret(h, table, best), math.inf) for t in results[s]]
        good.append(f"{s} {sum(p <= target for p in picks)} of {len(picks)}")
    return "\n".join(lines) + f"\n\nSeeds whose pick is {name} at <= {AT:.0%} compute: " + "; ".join(good) + "."


def size_line(sizes: dict[str, list[tuple[int, int]]], n: int) -> str:
    """How far each strategy's searches got: trials asked (infeasible included), trained, stopped short."""
    parts = []
    for label, runs in sizes.items():
        short = sum(trained < n for _, trained in runs)
        asked, trained = statistics.median(a for a, _ in runs), statistics.median(t for _, t in runs)
        parts.append(
            f"{label} {asked:,.0f} trials, {trained:.0f} trained" + (f" ({short} stopped short)" * bool(short))
        )
    return (
        f"Per search, median over seeds: {'; '.join(parts)}. A search stops short of {n} after "
        f"{nas.search.loop.EXHAUSTED_AFTER:,} samples in a row that are infeasible (not in the table) or trained."
    )


def _timed_search(table: Table, space: Path, design: str, label: str, seed: int, folder: Path) -> tuple:
    started = time.perf_counter()
    traj, asked, trained = search(table, space, design, label, seed, folder)
    took = time.perf_counter() - started
    print(f"{design} {label} seed {seed}: {asked} trials, {trained} trained, {took:.0f}s", flush=True)
    return traj, asked, trained


def design_section(design: str, table: Table, spread: float | None, seeds: int, folder: Path, jobs: int = 1) -> str:
    folder.mkdir(parents=True)
    space = replay_space(table, folder)
    results: Results = {label: [] for label in STRATEGIES}
    sizes: dict[str, list[tuple[int, int]]] = {label: [] for label in STRATEGIES}
    runs = list(itertools.product(STRATEGIES, range(seeds)))
    args = [(table, space, design, label, seed, folder) for label, seed in runs]
    if jobs > 1:  # forked workers inherit the replayed run_trial; each study has its own SQLite file
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as pool:
            outs = list(pool.map(_timed_search, *zip(*args, strict=True)))
    else:
        outs = [_timed_search(*a) for a in args]
    for (label, _), (traj, asked, trained) in zip(runs, outs, strict=True):
        results[label].append(traj)
        sizes[label].append((asked, trained))
    exhaustive = sum(e["short"]["tokens"] for e in table.values())
    best = min(e["long"]["val_loss"] for e in table.values())
    targets = {"within 1 % of the best": 0.01}
    if spread is not None:
        targets["within the seed spread of the best"] = spread / best
    points = [(e["long"]["val_loss"], e["non_embedding_params"]) for e in table.values()]
    ref = (max(p[0] for p in points) * 1.01, max(p[1] for p in points) * 1.01)
    true_hv = hypervolume(points, ref)

    def hv(h: list[str]) -> float:
        return hv_fraction(h, table, ref, true_hv)

    pick = min(table, key=lambda h: table[h]["short"]["val_loss"])
    hv_at = [statistics.median(at_fraction(t, AT, exhaustive, hv, 0.0) for t in results[s]) for s in DOUBLE]
    return (
        f"### design {design}: n = {len(table)} architectures\n\n"
        f"Regret of the pick (its mean 8T loss over the best of the {len(table)}, minus 1), median over {seeds} "
        f"seeds, by compute as a fraction of the exhaustive cost ({exhaustive:,} tokens):\n\n"
        + fraction_table(results, SINGLE, exhaustive, lambda h: regret(h, table, best), math.inf, pct)
        + f"\n\nMedian compute to the first pick near the best mean 8T loss ({best:.4f}); never: not in the "
        "median seed:\n\n"
        + hit_lines(results, table, best, targets, exhaustive)
        + "\n\nTwo objectives: hypervolume (mean 8T loss, non-embedding params) of the picked Pareto set as a "
        "fraction of the table's true front, median over seeds:\n\n"
        + fraction_table(results, DOUBLE, exhaustive, hv, 0.0, lambda v: f"{v:.3f}")
        + f"\n\nAt {AT:.0%} compute: NSGA-II + successive halving {hv_at[1]:.3f}, random {hv_at[0]:.3f}. "
        f"With all {len(table)} trained at the trial budget the pick is {table[pick]['summary']} at regret "
        f"{100 * regret(list(table), table, best):.2f} %: the proxy's floor.\n\n" + size_line(sizes, len(table))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--design", action="append", choices=list(DESIGNS))
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md (default: only print)")
    parser.add_argument("--jobs", type=int, default=1, help="searches run at once (processes; results identical)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    long = long_losses()
    spread, n_spread = seed_spread(long)
    trials = json.loads(TRIAL_DESIGN.read_text())["runs"].values() if TRIAL_DESIGN.exists() else []
    designs = args.design or ["b2048", *(d for d in DESIGNS if d in {r["design"] for r in trials})]
    by_seeds = {k: sum(len(s) == k for s in long.values()) for k in sorted({len(s) for s in long.values()})}
    sections = [
        f"Truth: the mean 8T loss over the seeds available ({len(long)} architectures; by number of seeds: "
        + ", ".join(f"{k}: {v}" for k, v in by_seeds.items())
        + "). "
        + (
            f"Seed spread: median |seed 0 - seed 1| of the 8T loss = {spread:.4f} over {n_spread} architectures."
            if spread is not None
            else "Seed spread: no architecture has two 8T seeds yet; only the 1 % criterion is used."
        )
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for design in designs:
            table = build_table(design, long)
            print(f"design {design}: n = {len(table)} architectures with the trial and >= 1 8T seed", flush=True)
            if len(table) < 4:
                sections.append(f"### design {design}: n = {len(table)}, too few to search")
                continue
            nas.trial.run_trial = tabular_run_trial(table)  # what the search loop looks up at call time
            sections.append(design_section(design, table, spread, args.seeds, Path(tmp) / design, args.jobs))
    sections.append(
        "Tabular: `nas.search.run_search` over bench/gt_space.yaml restricted to the table's architectures (others "
        "infeasible, told FAIL at no compute), `run_trial` replaced by a replay of the recorded trial curves."
    )
    record("gt_search: regret vs compute on the Gutenberg ground truth", "\n\n".join(sections), not args.record)


if __name__ == "__main__":
    main()
