"""Search efficiency: does the search find the best architecture, and for how much compute?

A tabular benchmark over bench/ground_truth.json (run bench/ground_truth.py first): nas's own study
loop (`nas.search.run_search`: samplers, pruners, dedupe, exactly as `nas search` runs them) over
bench/grid.yaml, with `run_trial` replaced by a lookup of each architecture's recorded learning
curve at the trial budget. The pruner sees the recorded held-out losses eval by eval, and a pruned
trial costs the tokens it trained up to its stop; a duplicate costs nothing. After each trial the
search's pick is its best completed trial (by the trial-budget loss); its regret is how much worse
the pick's long-budget loss is than the best long-budget loss of the grid.

Single objective (held-out loss): TPE + Hyperband against random search without pruning.
Two objectives (held-out loss, non-embedding params): NSGA-II + successive halving on the curve
against random search; the score is the hypervolume (long-budget loss, params) of the picked Pareto
set as a fraction of the grid's true front.
Each repeated over --seeds seeds; compute is the fraction of the exhaustive cost (every
architecture trained at the trial budget).

    python bench/search_efficiency.py --seeds 5      # about 3 minutes (no training)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna  # noqa: E402
from _results import record  # noqa: E402
from _shakespeare import GRID, GROUND_TRUTH, shakespeare_protocol  # noqa: E402

import nas.trial  # noqa: E402
from nas.search import SearchConfig, run_search  # noqa: E402
from nas.space import load_space  # noqa: E402
from nas.train.pretrain import EvalPoint  # noqa: E402
from nas.trial import TrialResult  # noqa: E402

FRACTIONS = (0.05, 0.1, 0.2, 0.4, 0.6, 1.0)


def tabular_run_trial(table: dict[str, dict]):
    """A run_trial that replays the recorded trial-budget curve of each architecture."""

    def run_trial(
        arch, protocol, reporter=None, on_step=None, on_stage=None, keep_model=False, checkpoint=None, task_gate=None
    ):
        entry = table[arch.arch_hash()]
        curve = entry["short"]["curve"]
        final = curve[-1][0]
        points = []
        metrics = dict(arch.counts())
        for step, tokens, loss in curve:
            point = EvalPoint(step, tokens, loss, math.nan, 0.0, 0.0)
            points.append(point)
            if step > 0 and reporter is not None and reporter(point) and step < final:
                metrics.update(val_loss=loss, tokens_trained=tokens)
                return TrialResult(arch, "pruned", metrics, points, cause=f"pruned at step {step}")
        metrics.update(val_loss=curve[-1][2], tokens_trained=curve[-1][1])
        annealed = [list(p) for p in entry["short"].get("annealed", [])]  # its cool-downs, for a prediction
        return TrialResult(arch, "complete", metrics, points, annealed=annealed)

    return run_trial


def search(table, sampler: str, pruner: str, seed: int, objectives: list[str], folder: Path):
    overrides = [f"objectives.{name}.direction=minimize" for name in objectives if name != "val_loss"]
    protocol = shakespeare_protocol(extra=overrides)
    name = f"{sampler}-{pruner}-{seed}-{len(objectives)}"
    config = SearchConfig(
        space=load_space(GRID),
        protocol=protocol,
        study_name=name,
        storage=f"journal:{folder / (name + '.log')}",
        runs_dir=folder,
        n_trials=len(table),
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        checkpoint_every=0,
    )
    return run_search(config).study


def trajectory(study: optuna.Study, table: dict[str, dict]) -> list[tuple[int, dict[str, float]]]:
    """(cumulative tokens, {hash: first objective value} of the completed trials so far) after each trial."""
    spent, done, out = 0, {}, []
    for t in study.get_trials(deepcopy=False):
        metrics = t.user_attrs.get("metrics") or {}
        if t.user_attrs.get("nas_status") == "trained":
            spent += int(metrics.get("tokens_trained", 0))
            if t.state == optuna.trial.TrialState.COMPLETE:
                done[t.user_attrs["arch_hash"]] = t.values[0]
        out.append((spent, dict(done)))
    return out


def regret(seen: dict[str, float] | list[str], table: dict[str, dict], best_long: float) -> float:
    """The long-budget regret of the pick: the lowest objective value the search saw (a list of hashes:
    the lowest trial-budget loss)."""
    if not seen:
        return math.inf
    if isinstance(seen, dict):
        pick = min(seen, key=lambda h: seen[h])
    else:
        pick = min(seen, key=lambda h: table[h]["short"]["val_loss"])
    return table[pick]["long"]["val_loss"] / best_long - 1


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [p for p in points if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)]


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    hv, prev_y = 0.0, ref[1]
    for x, y in sorted(front(points)):
        if x < ref[0] and y < prev_y:
            hv += (ref[0] - x) * (prev_y - y)
            prev_y = y
    return hv


def hv_fraction(hashes: list[str], table: dict[str, dict], ref, true_hv: float) -> float:
    if not hashes:
        return 0.0
    # the search's Pareto set by what it saw (trial-budget loss), scored by the long-budget loss
    seen = {h: (table[h]["short"]["val_loss"], table[h]["non_embedding_params"]) for h in hashes}
    picked = [h for h in hashes if seen[h] in front(list(seen.values()))]
    return (
        hypervolume([(table[h]["long"]["val_loss"], table[h]["non_embedding_params"]) for h in picked], ref) / true_hv
    )


def at_fraction(traj, fraction: float, exhaustive: int, score, worst):
    value = worst
    for spent, hashes in traj:
        if spent <= fraction * exhaustive:
            value = score(hashes)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    data = json.loads(GROUND_TRUTH.read_text())
    table = {h: e for h, e in data["archs"].items() if "short" in e and "long" in e}
    nas.trial.run_trial = tabular_run_trial(table)  # what the search loop looks up at call time
    exhaustive = sum(e["short"]["tokens"] for e in table.values())
    best_long = min(e["long"]["val_loss"] for e in table.values())
    floor = regret(list(table), table, best_long)  # the pick with every architecture trained: the proxy's limit
    points = [(e["long"]["val_loss"], e["non_embedding_params"]) for e in table.values()]
    ref = (max(p[0] for p in points) * 1.01, max(p[1] for p in points) * 1.01)
    true_hv = hypervolume(points, ref)

    strategies = {
        "random, no pruning": ("random", "none", ["val_loss"]),
        "TPE + Hyperband": ("tpe", "hyperband", ["val_loss"]),
        "random, no pruning (2 objectives)": ("random", "none", ["val_loss", "non_embedding_params"]),
        "NSGA-II + successive halving (2 objectives)": ("nsga2", "sha", ["val_loss", "non_embedding_params"]),
    }
    results: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (sampler, pruner, objectives) in strategies.items():
            results[label] = []
            for seed in range(args.seeds):
                study = search(table, sampler, pruner, seed, objectives, Path(tmp))
                results[label].append(trajectory(study, table))
                print(f"{label} seed {seed}: {len(study.trials)} trials", flush=True)

    def row(label: str, score, worst, fmt) -> str:
        cells = []
        for f in FRACTIONS:
            values = [at_fraction(t, f, exhaustive, score, worst) for t in results[label]]
            cells.append(
                fmt(statistics.median(values))
                + f" ({sum(v == worst for v in values)} none)" * any(v == worst for v in values)
            )
        return f"| {label} | " + " | ".join(cells) + " |"

    header = "| strategy | " + " | ".join(f"{int(f * 100)} %" for f in FRACTIONS) + " |"
    sep = "|---|" + "---|" * len(FRACTIONS)

    def pct(v: float) -> str:
        return "-" if math.isinf(v) else f"{100 * v:.2f} %"

    single = [header, sep] + [
        row(label, lambda h: regret(h, table, best_long), math.inf, pct) for label in list(strategies)[:2]
    ]
    double = [header, sep] + [
        row(label, lambda h: hv_fraction(h, table, ref, true_hv), 0.0, lambda v: f"{v:.3f}")
        for label in list(strategies)[2:]
    ]

    def first_within(label: str, target: float) -> str:
        fractions = []
        for traj in results[label]:
            hit = next((spent for spent, h in traj if regret(h, table, best_long) <= target), None)
            fractions.append(math.inf if hit is None else hit / exhaustive)
        return pct(statistics.median(fractions))

    hits = ", ".join(f"{label}: {first_within(label, 0.01)}" for label in list(strategies)[:2])
    body = (
        "Regret of the pick (its long-budget loss over the grid's best, minus 1), median over "
        f"{args.seeds} seeds, by compute spent as a fraction of the exhaustive cost "
        f"({exhaustive:,} tokens: all {len(table)} architectures at the trial budget):\n\n"
        + "\n".join(single)
        + f"\n\nMedian compute to first pick within 1 % of the best long-budget loss: {hits}. With every "
        f"architecture trained at the trial budget the pick's regret is {pct(floor)}: no search on "
        "trial-budget scores can do better than that here.\n\n"
        "Two objectives (held-out loss, non-embedding params): hypervolume of the picked Pareto set, "
        "measured with long-budget losses, as a fraction of the grid's true front (1.0 = the true front), "
        "median over seeds:\n\n"
        + "\n".join(double)
        + "\n\nTabular: `nas.search.run_search` (the real samplers, pruners and dedupe) with `run_trial` "
        "replaced by a replay of the recorded curves in `bench/ground_truth.json`."
    )
    record("search_efficiency: regret vs compute on the 20-architecture grid", body, args.no_record)


if __name__ == "__main__":
    main()
