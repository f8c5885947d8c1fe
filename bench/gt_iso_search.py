"""Search for a compute budget on the iso-FLOP ground truth (issue 32): a tabular replay with rungs.

At each full-training budget C of bench/gt_iso.py, every architecture's truth is its held-out loss at
D = C / flops_per_token (the mean over its seeds). `nas.search.run_search` (the real samplers, pruners,
dedupe, rung promotion and ranking) runs over bench/gt_iso_space.yaml, a factorial grid that the ground
truth covers whole, so a replayed sampler never proposes an architecture outside the table; `run_trial` is
replaced by a lookup of the ground truth's annealed points: a trial's rung k is the cool-down point at
T x rung (T = 49,152 tokens), cut at the target as nas cuts it (nas.train.schedule.rungs_within_target: a
trial whose next rung passes D is trained to D, its measured loss there). A trial's compute is its tokens
(main run and cool-downs) x flops_per_token; the exhaustive cost is every architecture trained to its D
(n x C). The pick after each trial is what `nas status` ranks first (nas.search.ranking.rank_records).

Strategies: random search trains random architectures fully at C (its pick is the best truth it trained);
TPE on the trial loss at T (today's default objective; no pruning: the table holds no curve below T);
TPE + Hyperband on the rungs' annealed loss; and the rung search, TPE or random + successive halving on the
prediction at C (`predicted_val_loss`, target.flops = C, rungs [1, 2.5, 5, 10, 20] x T, the rung weights of
--weights). Figures per budget: the regret of the pick (its truth over the best's, minus 1) at compute
fractions, the seeds whose pick is within the seed spread of the best at <= 25 % compute, and the median
compute to the first such pick (against random search's).

    nice -n 19 python bench/gt_iso_search.py                              # 10 seeds, every budget
    nice -n 19 python bench/gt_iso_search.py --seeds 2 --budget 2         # a check
    nice -n 19 python bench/gt_iso_search.py --half report --record       # the report half; to RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gt_search  # noqa: E402, F401  (patches nas for a replay: in-memory storage, no token cache, no early stop)
import optuna  # noqa: E402
from _gutenberg import BATCH_TOKENS, SEQ_LEN, gutenberg_protocol  # noqa: E402
from _results import record  # noqa: E402
from gt_archs import enumerate_space  # noqa: E402
from gt_iso import BUDGETS, OUT, RUNGS, SPACE, TRIAL_TOKENS, WARMUP_STEPS, load_split, truth  # noqa: E402

import nas.scaling  # noqa: E402
import nas.trial  # noqa: E402
from nas.scaling import target_tokens  # noqa: E402
from nas.search import SearchConfig, run_search  # noqa: E402
from nas.search.attrs import ARCH  # noqa: E402
from nas.search.ranking import rank_records  # noqa: E402
from nas.search.records import TrialRecord  # noqa: E402
from nas.space import load_space  # noqa: E402
from nas.train.pretrain import EvalPoint  # noqa: E402
from nas.train.schedule import rung_plan, rungs_within_target  # noqa: E402

Table = dict[str, dict[str, Any]]
FRACTIONS = (0.02, 0.05, 0.1, 0.25, 0.5)
AT = 0.25  # the compute fraction the pick must be good at
STRATEGIES = {  # label: (sampler, pruner, rungs?, objective)
    "random, trial loss at T": ("random", "none", False, "val_loss"),
    "TPE, trial loss at T": ("tpe", "none", False, "val_loss"),
    "TPE + Hyperband, rung loss": ("tpe", "hyperband", True, "val_loss"),
    "TPE + SHA, rungs, predicted at C": ("tpe", "sha", True, "predicted_val_loss"),
    "random + SHA, rungs, predicted at C": ("random", "sha", True, "predicted_val_loss"),
    "TPE + median, rungs, predicted at C": ("tpe", "median", True, "predicted_val_loss"),
    "TPE + depth-matched SHA, rungs, predicted at C": ("tpe", "sha-depth", True, "predicted_val_loss"),
}
RANDOM = "random search, full training at C"
SHORT = dict(
    zip(
        ("random-T", "tpe-T", "tpe-hyperband", "tpe-sha", "random-sha", "tpe-median", "tpe-sha-depth"),
        STRATEGIES,
        strict=True,
    )
)


def build_table(data: dict[str, Any], entries: list[dict[str, Any]], budget: int, half: str | None) -> Table:
    """hash -> {points (seed 0's annealed {tokens: loss}), truth (mean over seeds at D), seeds, D, counts}."""
    runs = [r for r in data["runs"].values() if r["status"] == "complete"]
    table: Table = {}
    for e in entries:
        if half is not None and e["half"] != half:
            continue
        mine = [r for r in runs if r["arch_hash"] == e["hash"]]
        seeds = {r["seed"]: v for r in mine if (v := truth(r, f"C{budget}")) is not None}
        seed0 = next((r for r in mine if r["seed"] == 0), None)
        if seed0 is None or 0 not in seeds:
            continue
        table[e["hash"]] = {
            "summary": e["summary"],
            "points": {int(t): v for t, v in seed0["annealed"] if v is not None},
            "truth": statistics.fmean(seeds.values()),
            "seeds": seeds,
            "tokens": seed0["targets"][f"C{budget}"],
            "flops_per_token": e["flops_per_token"],
        }
    return table


def lookup(entry: dict[str, Any], tokens: float) -> float:
    """The ground truth's annealed loss nearest ``tokens`` (within a step or 3 %)."""
    near = min(entry["points"], key=lambda t: abs(t - tokens))
    if abs(near - tokens) > max(BATCH_TOKENS, 0.03 * tokens):
        raise KeyError(f"{entry['summary']}: no annealed point near {tokens:,.0f} tokens (nearest {near:,})")
    return entry["points"][near]


def tabular_run_trial(table: Table):
    """A run_trial that replays the ground truth: rung points (cut at the target as nas cuts them) reported
    to the search's reporter, a trial stopped where the reporter says; no rungs: the loss at T."""
    from nas.trial import TrialResult

    def run_trial(arch, protocol, reporter=None, on_step=None, on_stage=None, keep_model=False, **_: Any):
        entry = table[arch.arch_hash()]
        config, fpt = protocol.pretrain, arch.flops_per_token(SEQ_LEN)
        metrics: dict[str, float] = {**arch.counts(), "flops_per_token": fpt}
        if not config.rungs:
            loss = lookup(entry, TRIAL_TOKENS)
            metrics.update(val_loss=loss, tokens_trained=TRIAL_TOKENS)
            return TrialResult(arch, "complete", metrics, annealed=[[TRIAL_TOKENS, loss]])
        target = protocol.target
        d = target_tokens(arch.param_count(), fpt, target.tokens, target.flops, target.tokens_per_param)
        capped, at_target = rungs_within_target(config, fpt, d)
        top = len(config.rungs) - 1
        if capped.rungs is None:  # the target lies within the first rung: a full training at D
            loss = lookup(entry, d)
            metrics.update(val_loss=loss, tokens_trained=capped.budget.tokens, rung=top, at_target=1.0)
            if reporter is not None:
                reporter(EvalPoint(0, capped.budget.tokens, loss, math.nan, 0.0, 0.0, top))
            return TrialResult(arch, "complete", metrics, annealed=[[capped.budget.tokens, loss]])
        plan = rung_plan(capped, fpt)
        branches = {b.rung: b for b in plan.branches if b.rung is not None}
        annealed: list[list[float]] = []
        cooldown = 0
        for k, end in enumerate(plan.rung_ends):
            tokens = end * BATCH_TOKENS
            loss = lookup(entry, tokens)
            annealed.append([float(tokens), loss])
            last = k == len(plan.rung_ends) - 1
            shown = top if last else k
            stop = reporter is not None and reporter(EvalPoint(end, tokens, loss, math.nan, 0.0, 0.0, shown))
            if last:
                metrics.update(val_loss=loss, tokens_trained=tokens, cooldown_tokens=cooldown, rung=top)
                metrics.update({"at_target": 1.0} if at_target else {})
                return TrialResult(arch, "complete", metrics, annealed=annealed)
            branch = branches[k]
            if stop:
                main = branch.step * BATCH_TOKENS
                spent = cooldown + (branch.end - branch.step) * BATCH_TOKENS
                metrics.update(val_loss=loss, tokens_trained=main, cooldown_tokens=spent, rung=k)
                cause = f"pruned at rung {k + 1} ({tokens:,} tokens)"
                return TrialResult(arch, "pruned", metrics, cause=cause, annealed=annealed)
            cooldown += (branch.end - branch.step) * BATCH_TOKENS
        raise AssertionError("unreachable: the last rung returns")

    return run_trial


def protocol_for(budget: int, rungs: bool, objective: str, weights: list[float]) -> Any:
    extra = [f"pretrain.schedule.warmup_fraction={WARMUP_STEPS / (TRIAL_TOKENS // BATCH_TOKENS)!r}"]
    if rungs:
        extra += [f"pretrain.rungs={json.dumps(list(RUNGS))}", f"target.rung_weights={json.dumps(weights)}"]
        extra += [f"target.reach_penalty={PENALTY!r}"] if PENALTY else []
    extra += [f"target.flops={BUDGETS[budget]!r}", f"objectives={{{objective}: minimize}}"]
    return gutenberg_protocol(TRIAL_TOKENS, eval_every=TRIAL_TOKENS // BATCH_TOKENS, extra=extra)  # parses YAML only


def cost_of(row: TrialRecord) -> float:
    """FLOPs a replayed trial spent: its main run and its cool-downs."""
    tokens = row.metric("tokens_trained") + (row.metric("cooldown_tokens") if "cooldown_tokens" in row.metrics else 0)
    return tokens * row.metric("flops_per_token")


class DepthMatchedSHA(optuna.pruners.BasePruner):
    """An experiment, not nas's: successive halving at the rungs in which a trial is compared only with the trials
    of at least its depth that reported at the same rung (deep shapes start slowly); the best third go on."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value, depth = trial.intermediate_values[step], trial.user_attrs.get(ARCH, {}).get("n_layers", 0)
        peers = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number
            and step in t.intermediate_values
            and t.user_attrs.get(ARCH, {}).get("n_layers", 0) >= depth
        ]
        ranked = sorted([*peers, value])
        return value > ranked[max(1, len(ranked) // 3) - 1]


def search(table: Table, space: Path, budget: int, label: str, seed: int, folder: Path, weights: list[float]):
    """One study: [(compute spent, pick's hash)] after each trained trial."""
    sampler, pruner, rungs, objective = STRATEGIES[label]
    import nas.search.samplers as samplers

    original = samplers.rung_pruner
    if pruner == "sha-depth":  # nas's rung pruner, replaced for this study only
        samplers.rung_pruner = lambda name, n_rungs, multi: DepthMatchedSHA()
        pruner = "sha"
    try:
        study = _study(table, space, budget, sampler, pruner, rungs, objective, seed, folder, weights)
    finally:
        samplers.rung_pruner = original
    return _trajectory(study, table, budget, rungs, label, seed)


def _study(
    table: Table,
    space: Path,
    budget: int,
    sampler: str,
    pruner: str,
    rungs: bool,
    objective: str,
    seed: int,
    folder: Path,
    weights: list[float],
) -> Any:
    config = SearchConfig(
        space=load_space(space, feasibility_probe=0),
        protocol=protocol_for(budget, rungs, objective, weights),
        study_name=f"{budget}-{sampler}-{pruner}-{rungs}-{objective}-{seed}",
        runs_dir=folder,
        n_trials=len(table),
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        checkpoint_every=0,
    )
    return run_search(config).study


def _trajectory(study: Any, table: Table, budget: int, rungs: bool, label: str, seed: int) -> list[tuple[float, str]]:
    """[(compute spent, pick's hash)] after each trained trial of ``study``."""
    rows = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    trained = [r for r in rows if r.trained]
    out, spent, horizon = [], 0.0, max(FRACTIONS) * len(table) * BUDGETS[budget]
    at = 0
    for i, row in enumerate(trained):
        spent += cost_of(row)
        if spent > horizon:  # no figure reads past the largest fraction: ranking there is wasted time
            break
        at = i + 1 if spent <= AT * len(table) * BUDGETS[budget] else at
        ranked = rank_records(study, trained[: i + 1])
        if ranked:
            out.append((spent, ranked[0].arch_hash))
    if TRACE is not None and rungs:
        TRACE.append(trace(study, trained[:at], table, f"C{budget} {label} seed {seed}"))
    return out


TRACE: list[str] | None = None  # --trace: what each rung search knew at 25 % of the compute
PENALTY = 0.0  # --penalty: the rung searches' target.reach_penalty


def trace(study: Any, trained: list[TrialRecord], table: Table, name: str) -> str:
    """The rung search's top 3 at 25 % of the compute (predicted at C, rung reached, truth's rank) and what
    it knew of the 3 best by truth (trained or not, rung reached, prediction)."""
    order = sorted(table, key=lambda h: table[h]["truth"])
    ranked = rank_records(study, trained)
    mine = {r.arch_hash: r for r in ranked}

    def line(h: str, r: TrialRecord | None) -> str:
        e = table[h]
        known = (
            "not trained"
            if r is None
            else (f"rung {r.rung}, predicted {r.metric('predicted_val_loss'):.4f}, rank {r.rank}")
        )
        return f"    truth #{order.index(h) + 1} {e['summary']} ({e['truth']:.4f}): {known}"

    lines = [f"  {name}: {len(trained)} trials by 25 %; its top 3, then the 3 best:"]
    lines += [line(r.arch_hash, r) for r in ranked[:3] if r.arch_hash in table]
    lines += ["    --"] + [line(h, mine.get(h)) for h in order[:3]]
    return "\n".join(lines)


def random_full(table: Table, budget: int, seed: int) -> list[tuple[float, str]]:
    """Random search that trains each drawn architecture fully at C: its pick is the best truth so far."""
    order = random.Random(seed).sample(sorted(table), len(table))
    out, best = [], None
    for i, h in enumerate(order):
        best = h if best is None or table[h]["truth"] < table[best]["truth"] else best
        out.append(((i + 1) * BUDGETS[budget], best))
    return out


def regret_at(traj: list[tuple[float, str]], table: Table, fraction: float, exhaustive: float) -> float:
    picks = [h for spent, h in traj if spent <= fraction * exhaustive]
    best = min(e["truth"] for e in table.values())
    return table[picks[-1]]["truth"] / best - 1 if picks else math.inf


def first_within(traj: list[tuple[float, str]], table: Table, spread: float, exhaustive: float) -> float:
    best = min(e["truth"] for e in table.values())
    hit = next((spent for spent, h in traj if table[h]["truth"] - best <= spread), None)
    return math.inf if hit is None else hit / exhaustive


def seed_spread(table: Table) -> tuple[float, int]:
    """Median |seed 0 - seed 1| of the loss at D over the architectures with both."""
    gaps = [abs(e["seeds"][0] - e["seeds"][1]) for e in table.values() if 1 in e["seeds"]]
    return (statistics.median(gaps) if gaps else math.nan), len(gaps)


def pct(v: float) -> str:
    return f"not by {100 * max(FRACTIONS):.0f} %" if math.isinf(v) else f"{100 * v:.1f} %"


def budget_section(
    budget: int, table: Table, seeds: int, folder: Path, weights: list[float], space: Path, labels: list[str]
) -> str:
    exhaustive = len(table) * BUDGETS[budget]
    spread, n_spread = seed_spread(table)
    best_hash = min(table, key=lambda h: table[h]["truth"])
    best = table[best_hash]["truth"]
    results: dict[str, list[list[tuple[float, str]]]] = {RANDOM: [random_full(table, budget, s) for s in range(seeds)]}
    for label in labels:
        results[label] = []
        for seed in range(seeds):
            started = time.perf_counter()
            results[label].append(search(table, space, budget, label, seed, folder / f"{label}-{seed}", weights))
            print(f"C{budget} {label} seed {seed}: {time.perf_counter() - started:.0f}s", flush=True)
    lines = [
        f"### C = {BUDGETS[budget]:.3g} FLOPs: {len(table)} architectures, best {table[best_hash]['summary']} "
        f"({best:.4f}); seed spread (median |seed 0 - seed 1| at D over {n_spread}) {spread:.4f} "
        f"= {100 * spread / best:.2f} %",
        "",
        "| strategy | " + " | ".join(f"regret at {int(100 * f)} %" for f in FRACTIONS) + " | within spread at "
        f"{int(100 * AT)} % | median compute to within spread |",
        "|---|" + "---|" * (len(FRACTIONS) + 2),
    ]
    for label, trajs in results.items():
        regrets = [statistics.median(regret_at(t, table, f, exhaustive) for t in trajs) for f in FRACTIONS]
        cells = ["no pick yet" if math.isinf(r) else pct(r) for r in regrets]
        good = sum(regret_at(t, table, AT, exhaustive) * best <= spread for t in trajs)
        hit = statistics.median(first_within(t, table, spread, exhaustive) for t in trajs)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {good} of {len(trajs)} | {pct(hit)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, action="append", choices=range(len(BUDGETS)))
    parser.add_argument("--half", choices=["develop", "report"], help="only this half's architectures")
    parser.add_argument("--weights", default="0,0.5,1,1,1", help="target.rung_weights, one per rung")
    parser.add_argument("--penalty", type=float, default=0.0, help="target.reach_penalty of the rung searches")
    parser.add_argument(
        "--single-points", choices=["on", "off"], help="nas.scaling.TREND_SINGLE_POINTS (default: nas's own)"
    )
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md (default: only print)")
    parser.add_argument("--only", help=f"comma list of strategies (default: all): {', '.join(SHORT)}")
    parser.add_argument("--trace", action="store_true", help="print what each rung search knew at 25 %% compute")
    args = parser.parse_args()
    global TRACE, PENALTY
    TRACE, PENALTY = ([] if args.trace else None), args.penalty
    if args.single_points:
        nas.scaling.TREND_SINGLE_POINTS = args.single_points == "on"
    labels = [SHORT[k] for k in args.only.split(",")] if args.only else list(STRATEGIES)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    weights = [float(w) for w in args.weights.split(",")]
    data, entries = json.loads(OUT.read_text()), load_split()
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budget or range(len(BUDGETS)):
            table = build_table(data, entries, budget, args.half)
            whole = len(enumerate_space(SPACE))
            if len(table) < whole and not args.half:
                print(f"C{budget}: only {len(table)} of {whole} architectures have their runs: a partial replay")
            space = restricted_space(table, Path(tmp) / f"C{budget}.yaml") if len(table) < whole else SPACE
            nas.trial.run_trial = tabular_run_trial(table)  # what the search loop looks up at call time
            folder = Path(tmp) / f"C{budget}"
            sections.append(budget_section(budget, table, args.seeds, folder, weights, space, labels))
    head = (
        f"Tabular replay on {OUT.name} ({args.half or 'both'} half); rung weights {weights}; reach penalty "
        f"{PENALTY:g}; single-point trials in the size trend: {nas.scaling.TREND_SINGLE_POINTS}; {args.seeds} search "
        "seeds; regret: median over seeds of the pick's truth over the best's, minus 1."
    )
    if TRACE:
        print("\n".join(TRACE))
    record("gt_iso_search: picking for a compute budget", "\n\n".join([head, *sections]), not args.record)


def restricted_space(table: Table, folder: Path) -> Path:
    """gt_iso_space.yaml with a constraint that admits exactly the table's architectures (the half)."""
    import itertools

    import yaml

    raw = yaml.safe_load(SPACE.read_text())
    space = load_space(SPACE)
    names = [
        p.name for p in space.params if len(p.possible_values() or []) > 1 and p.name not in ("window", "global_every")
    ]
    keep = set()
    for combo in itertools.product(*(p.possible_values() or [] for p in space.params)):
        values = dict(zip([p.name for p in space.params], combo, strict=True))
        sample = space.sample(optuna.trial.FixedTrial(values))
        if sample.arch is not None and sample.arch.arch_hash() in table:
            keep.add(tuple(sample.values.get(n) for n in names))
    head, rest = names[:2], names[2:]  # split so that each expression stays within nas.expr's size bound
    groups: dict[tuple, set[tuple]] = {}
    for values in keep:
        groups.setdefault(values[:2], set()).add(values[2:])
    raw["constraints"].append(f"({', '.join(head)}) in {tuple(sorted(groups, key=repr))!r}")
    raw["constraints"] += [
        f"({', '.join(head)}) != {key!r} or ({', '.join(rest)},) in {tuple(sorted(group, key=repr))!r}"
        for key, group in sorted(groups.items(), key=lambda kv: repr(kv[0]))
    ]
    path = folder
    path.write_text(yaml.safe_dump(raw, sort_keys=False, width=1_000_000))
    found = {a.arch_hash() for a in enumerate_space(path)}
    if found != set(table):
        raise SystemExit(f"the restricted space gives {len(found)} architectures, not the table's {len(table)}")
    return path


if __name__ == "__main__":
    main()
