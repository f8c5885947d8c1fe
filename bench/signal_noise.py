"""Signal over noise: does the trial protocol separate architectures by more than seed noise?

Pretrains 8 different architectures from a space under a protocol (fine-tuning tasks dropped unless
``--tasks``: the criterion is held-out loss), then one of them again under 3 different seeds (initialisation and
data order), and compares the spread (max - min) of final held-out loss across architectures with
the spread across seeds. Without a ratio well above 1, no ranking the search makes means anything.
Target for `tiny` x `cpu-tiny`: ratio >= 3. With ``--tasks`` the trials fine-tune the protocol's tasks
as well, and every task metric (each grade's too) gets the same spreads and ratio beside its no-model
baseline: a task carries signal where some grade's ratio is >= 3.

    python bench/signal_noise.py --space tiny --trial cpu-tiny --archs 8 --seeds 3 [--tasks]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import append  # noqa: E402

from nas.protocol import load_protocol  # noqa: E402
from nas.space import load_space, random_samples  # noqa: E402
from nas.trial import run_trial  # noqa: E402


def design_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of signal_noise's design (space, protocol, architectures, seeds), for it and recipe_signal."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--trial", default="cpu-tiny")
    parser.add_argument("--archs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    return parser


def main() -> None:
    parser = design_parser(__doc__)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tasks", action="store_true", help="fine-tune the protocol's tasks too; per-metric spreads")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    archs = first_archs(args.space, args.archs, args.sample_seed)

    def trial(arch, seed: int) -> dict[str, float]:
        protocol = load_protocol(args.trial, [*args.overrides, f"pretrain.seed={seed}"])
        if not args.tasks:
            protocol = protocol.model_copy(update={"tasks": []})
        result = run_trial(arch, protocol)
        print(f"  seed {seed}  {arch.summary():58s} val_loss {result.metrics['val_loss']:.4f}", flush=True)
        return result.metrics | {f"baseline:{k}": v for k, v in result.task_baselines.items()}

    print(f"{len(archs)} architectures, seed 0:")
    arch_runs = [(a, trial(a, 0)) for a in archs]
    reference = archs[0]
    print(f"{args.seeds} seeds of {reference.summary()}:")
    seed_runs = [arch_runs[0][1]] + [trial(reference, s) for s in range(1, args.seeds)]
    arch_losses = [(a, m["val_loss"]) for a, m in arch_runs]
    # With tasks, seeds of the best architecture by held-out loss too: a weak reference that always predicts
    # one class has no seed spread on a task, and would credit any architecture spread.
    best_index = min(range(len(archs)), key=lambda i: arch_runs[i][1]["val_loss"])
    best_seed_runs = [arch_runs[best_index][1]]
    if args.tasks and best_index != 0:
        print(f"{args.seeds} seeds of {archs[best_index].summary()}:")
        best_seed_runs += [trial(archs[best_index], s) for s in range(1, args.seeds)]

    def spreads(name: str) -> tuple[float, float, float]:
        return metric_spreads(name, [m for _, m in arch_runs], [seed_runs, best_seed_runs])

    arch_spread = max(v for _, v in arch_losses) - min(v for _, v in arch_losses)
    seed_spread = max(m["val_loss"] for m in seed_runs) - min(m["val_loss"] for m in seed_runs)
    ratio = arch_spread / seed_spread if seed_spread > 0 else float("inf")
    rows = ["| architecture | params | held-out loss (seed 0) |", "|---|---|---|"]
    rows += [f"| {a.summary()} | {a.param_count():,} | {v:.4f} |" for a, v in sorted(arch_losses, key=lambda x: x[1])]
    verdict = "meets" if ratio >= 3 else "MISSES"
    body = "\n".join(rows) + (
        f"\n\nSeeds 0..{args.seeds - 1} of `{reference.summary()}`: "
        + ", ".join(f"{m['val_loss']:.4f}" for m in seed_runs)
        + f".\n\nSpread across {len(archs)} architectures: {arch_spread:.4f}; across {args.seeds} seeds: "
        f"{seed_spread:.4f}; ratio {ratio:.1f} ({verdict} the >= 3 target). Protocol `{args.trial}` "
        f"({'with' if args.tasks else 'pretraining only, no'} fine-tuning tasks)"
        f"{', overrides ' + ' '.join(args.overrides) if args.overrides else ''}."
    )
    if args.tasks:
        seeded = [reference] + ([archs[best_index]] if best_index != 0 else [])
        body += (
            "\n\nTask metrics: seed spread = the larger of the seed spreads of "
            + " and ".join(f"`{a.summary()}`" for a in seeded)
            + " (seeds 0.."
            + f"{args.seeds - 1}, each seed a whole trial: pretraining and fine-tuning).\n\n"
            + task_table(protocol_of(args), arch_runs, spreads)
        )
    if args.no_record:
        print(body)
    else:
        title = f"signal_noise: `{args.space}` x `{args.trial}` {'task metrics' if args.tasks else 'held-out loss'}"
        append(title, body)


def first_archs(space: str, n: int, sample_seed: int) -> list:
    """The first ``n`` distinct architectures of 200 random draws from ``space`` (seed ``sample_seed``): the
    sample the signal and noise benches share."""
    draws = [s.arch for s in random_samples(load_space(space), 200, sample_seed) if s.arch is not None]
    return list({a.arch_hash(): a for a in draws}.values())[:n]


def metric_spreads(name: str, arch_runs: list[dict], seed_groups: list[list[dict]]) -> tuple[float, float, float]:
    """Spread (max - min) of metric ``name`` across the architectures' runs (seed 0), the largest spread within a
    group of one architecture's seeds, and their ratio (nan when no seed moved the metric: a ratio against
    zero noise is not credited)."""
    arch_values = [m[name] for m in arch_runs]
    arch_spread = max(arch_values) - min(arch_values)
    seed_spread = max(max(v) - min(v) for v in ([m[name] for m in runs] for runs in seed_groups))
    return arch_spread, seed_spread, (arch_spread / seed_spread if seed_spread > 0 else float("nan"))


def protocol_of(args: argparse.Namespace):
    return load_protocol(args.trial, args.overrides)


def task_table(protocol, arch_runs, spreads) -> str:
    """Per task metric (each grade's too): best and median architecture beside the no-model baseline, the
    spreads across architectures and seeds, and their ratio; then, per task, whether some grade has a ratio >= 3."""
    rows = [
        "| task metric | baseline | best arch | median arch | arch spread | seed spread | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    carried: dict[str, list[str]] = {}
    for name in protocol.metric_names():
        task = name.split(".")[0]
        if task not in {t.name for t in protocol.tasks}:
            continue
        values = sorted(m[name] for _, m in arch_runs)
        lower_is_better = name.endswith("perplexity")
        best = values[0] if lower_is_better else values[-1]
        arch_spread, seed_spread, ratio = spreads(name)
        base = arch_runs[0][1].get(f"baseline:{name}", float("nan"))
        rows.append(
            f"| {name} | {base:.3f} | {best:.3f} | {statistics.median(values):.3f} | {arch_spread:.3f} | "
            f"{seed_spread:.3f} | {ratio:.1f} |"
        )
        if ratio >= 3:
            carried.setdefault(task, []).append(name)
    lines = [
        f"- `{t.name}`: "
        + (", ".join(f"`{n}`" for n in carried[t.name]) if t.name in carried else "no metric")
        + " with architecture spread >= 3x seed spread"
        for t in protocol.tasks
    ]
    return "\n".join(rows) + "\n\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
