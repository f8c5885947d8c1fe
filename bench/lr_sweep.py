"""Learning-rate fairness of the long-run recipe (issue 13): is the recipe's peak learning rate fair to every shape?

The 8 "sweep" architectures of bench/gt_split.json (widths 64-256, a shallow and a deep one per width)
are trained on the Gutenberg books at the long budget (8T, bench/_gutenberg.py: WSD schedule, 2 books
held out) at the recipe's peak learning rate for their width (text-files' pretrain.optimizer: lr, scaled
by lr_width_base / d_model above lr_width_base) with seeds 0 and 1 (the seed spread), and at that lr / 3
and x 3. Runs go in the order that informs soonest: the recipe's seed 0, its seed 1, the lower points,
the upper points, a second seed for any other lr that beat the recipe by more than its seed spread, the
recipe's seed 2. Runs at an earlier recipe's lrs (one lr, 3e-3, for every width, and its / 3 and x 3)
stay in the file and in the report's table: every measured lr counts against the recipe. The recipe
runs use exactly the ground truth's 8T protocol, so the ground truth reuses them.
Results go to bench/lr_sweep.json, rewritten atomically after every run; a restarted sweep skips the
runs already there. --report prints, per architecture, the loss at each lr, the recipe's lr, the best
lr, the gap (recipe's mean over seeds minus the best other lr's) against the seed spread, and the verdict.

    nice -n 19 python bench/lr_sweep.py --threads 1                   # all runs (about 5 h on one core)
    nice -n 19 python bench/lr_sweep.py --threads 1 --part 1/2        # -> bench/lr_sweep.part1of2.json
    python bench/lr_sweep.py --merge bench/lr_sweep.part1of2.json --merge bench/lr_sweep.part2of2.json
    python bench/lr_sweep.py --report [--record]                      # --record appends it to RESULTS.md
    python bench/lr_sweep.py --tokens 8192 --out /tmp/lr_smoke.json   # a smoke test (never into bench/)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gutenberg import (
    EVAL_EVERY_LONG,
    LONG_FACTOR,
    SHORT_TOKENS,
    budget_protocol,
    fixed_lr,
    gutenberg_protocol,
    recipe_lr,
)
from gt_archs import SPLIT, load_split, run_seconds

HERE = Path(__file__).resolve().parent
OUT = HERE / "lr_sweep.json"
LR_FACTORS = (1 / 3, 3.0)  # the sweep's other points: the recipe's lr at that width / 3 and x 3 (lower first)
EXTRA_SEEDS = (1, 2)
PART_LIMIT_S = 2 * 3600
SOURCE = "?"  # nas_source() at start, recorded with every run


def planned_runs(
    split: dict[str, Any], recipe: Callable[[int], float] = recipe_lr, done: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every run of the sweep, in the order that informs soonest; ``recipe(d_model)`` is the recipe's
    peak lr at that width (the runs at it carry ``recipe: True``). A grid lr whose seed-0 run in ``done``
    (the runs so far, by key) beats the recipe's mean by more than its seed spread gets a seed 1 too."""
    archs = [split["by_hash"][h] for h in split["sweep"]]
    at = {e["hash"]: recipe(e["arch"].d_model) for e in archs}
    runs = [(e, at[e["hash"]], 0) for e in archs]
    runs += [(e, at[e["hash"]], EXTRA_SEEDS[0]) for e in archs]  # a seed pair per architecture: the spread, soonest
    runs += [(e, at[e["hash"]] * f, 0) for f in LR_FACTORS for e in archs]
    runs += [(e, x, EXTRA_SEEDS[0]) for e, x in challengers(done or {}, at, archs)]
    runs += [(e, at[e["hash"]], s) for s in EXTRA_SEEDS[1:] for e in archs]
    return [
        {"key": f"{e['hash']}/lr={x:.4g}/seed={s}", "entry": e, "lr": x, "seed": s, "recipe": x == at[e["hash"]]}
        for e, x, s in runs
    ]


def challengers(
    done: dict[str, Any], at: dict[str, float], archs: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], float]]:
    """(architecture, lr) of the single-seed grid runs in ``done`` that beat the recipe's mean (``at``: the
    recipe's lr by architecture hash) by more than the recipe's seed spread: each one is checked with a
    second seed before it counts."""
    found = []
    for e in archs:
        runs = [r for r in done.values() if r["arch_hash"] == e["hash"] and r["val_loss"] is not None]
        own = [r["val_loss"] for r in runs if math.isclose(r["lr"], at[e["hash"]])]
        if len(own) < 2:
            continue
        bar = statistics.fmean(own) - (max(own) - min(own))
        for x in sorted({r["lr"] for r in runs if not math.isclose(r["lr"], at[e["hash"]])}):
            seeds = [r for r in runs if math.isclose(r["lr"], x)]
            if len(seeds) == 1 and seeds[0]["seed"] == 0 and seeds[0]["val_loss"] < bar:
                found.append((e, x))
    return found


def part_of(
    runs: list[dict[str, Any]], part: int, parts: int, seconds: Callable[[dict[str, Any]], float] | None = None
) -> list[dict[str, Any]]:
    """Runs of part ``part`` (1-based) of ``parts``: longest-first greedy balance of the estimated
    ``seconds`` of each run (default: an 8T run of its architecture), each part keeping the runs' order."""
    cost = seconds or (lambda r: run_seconds(r["entry"]["arch"], LONG_FACTOR))
    loads = [0.0] * parts
    owner: dict[str, int] = {}
    for run in sorted(runs, key=lambda r: -cost(r)):
        k = loads.index(min(loads))
        owner[run["key"]] = k
        loads[k] += cost(run)
    if max(loads) > PART_LIMIT_S:
        print(f"warning: the longest part is estimated at {max(loads) / 3600:.1f} h (> 2 h): use more parts")
    return [r for r in runs if owner[r["key"]] == part - 1]


def curve_rows(result: Any) -> list[list[Any]]:
    """A trial result's held-out curve as strict-JSON rows [step, tokens, val_loss, train_loss, lr]."""
    return [[p.step, p.tokens, finite_or_none(p.val_loss), finite_or_none(p.train_loss), p.lr] for p in result.curve]


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None  # strict JSON has no NaN


def train(run: dict[str, Any], tokens: int | None) -> dict[str, Any]:
    from nas.trial import run_trial

    arch, lr, seed = run["entry"]["arch"], run["lr"], run["seed"]
    extra = [] if run["recipe"] else fixed_lr(lr)  # the recipe's own protocol (as the ground truth's), or lr fixed
    if tokens is None:
        protocol = budget_protocol(LONG_FACTOR, seed=seed, extra=extra)
    else:
        protocol = gutenberg_protocol(tokens, seed=seed, eval_every=max(1, tokens // 2048 // 4), extra=extra)
    if not math.isclose(protocol.pretrain.optimizer.peak_lr(arch.d_model), lr):
        raise SystemExit(f"{run['key']}: the protocol's peak lr is not the run's")
    started = time.perf_counter()
    result = run_trial(arch, protocol)
    loss = result.metrics.get("val_loss", math.nan)
    return {
        "arch_hash": arch.arch_hash(),
        "summary": arch.summary(),
        "d_model": arch.d_model,
        "n_layers": arch.n_layers,
        "non_embedding_params": arch.non_embedding_params(),
        "lr": lr,
        "seed": seed,
        "status": result.status,
        "cause": result.cause,
        "val_loss": loss if math.isfinite(loss) else None,
        "tokens": int(result.metrics.get("tokens_trained", 0)),
        "train_seconds": result.metrics.get("train_seconds"),
        "tokens_per_second": result.metrics.get("tokens_per_second"),
        "wall_seconds": time.perf_counter() - started,
        "curve": [
            [p.step, p.tokens, finite_or_none(p.val_loss), finite_or_none(p.train_loss), p.lr] for p in result.curve
        ],
        "protocol_hash": protocol.content_hash,
        "nas_source": SOURCE,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def nas_source() -> str:
    """Git HEAD plus a hash of nas/**/*.py as they are now (the tree may hold uncommitted work)."""
    import hashlib
    import subprocess

    root = HERE.parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    digest = hashlib.sha256()
    for path in sorted((root / "nas").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{head.stdout.strip() or '?'}+{digest.hexdigest()[:12]}"


def save(data: dict[str, Any], out: Path) -> None:
    """Write ``data`` atomically, every run stamped with the machine it ran on (_results.stamp_machines)."""
    from _results import stamp_machines

    stamp_machines(data.get("runs", {}))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out)


def report(data: dict[str, Any], recipe: Callable[[int], float] = recipe_lr) -> str:
    """Per architecture: the loss at each lr (mean over its seeds), the recipe's lr at its width, the best
    lr, the gap (the recipe's mean minus the best other lr's) and the recipe's seed spread; the verdict."""
    by_arch: dict[str, list[dict[str, Any]]] = {}
    for run in data["runs"].values():
        by_arch.setdefault(run["arch_hash"], []).append(run)
    lrs = sorted({round(r["lr"], 10) for r in data["runs"].values()})
    head = " | ".join(f"lr {x:.2g}" for x in lrs)
    rows = [
        f"| architecture | non-emb params | {head} | recipe lr | best lr | gap recipe - best | seed spread (n) |",
        "|---" * (6 + len(lrs)) + "|",
    ]
    gaps, spreads, verdicts = [], [], []
    for runs in sorted(by_arch.values(), key=lambda rs: (rs[0]["d_model"], rs[0]["n_layers"])):
        first = runs[0]
        own = recipe(first["d_model"])
        losses: dict[float, list[float]] = {}
        for r in runs:
            losses.setdefault(round(r["lr"], 10), []).append(r["val_loss"] if r["val_loss"] is not None else math.inf)
        mean = {x: statistics.fmean(v) for x, v in losses.items()}
        at = next((x for x in mean if math.isclose(x, own)), None)
        seeds = [v for v in losses.get(at, []) if math.isfinite(v)] if at is not None else []
        cells = [
            "-"
            if x not in mean
            else ("diverged" if not math.isfinite(mean[x]) else f"{mean[x]:.4f}")
            + (f" ({len(losses[x])})" if len(losses.get(x, [])) > 1 else "")
            for x in lrs
        ]
        others = {x: v for x, v in mean.items() if x != at}
        spread = max(seeds) - min(seeds) if len(seeds) >= 2 else None
        best = min(mean, key=lambda x: mean[x]) if mean else None
        gap = mean[at] - min(others.values()) if at is not None and others else None
        complete = at is not None and len(others) >= 2 and spread is not None and gap is not None
        if complete and gap is not None and spread is not None:
            gaps.append(gap)
            spreads.append(spread)
            verdicts.append((first["summary"], gap, spread))
        rows.append(
            f"| {first['summary']} | {first['non_embedding_params']:,} | {' | '.join(cells)} | {own:.2g} | "
            f"{f'{best:.2g}' if best is not None else '-'} | {f'{gap:+.4f}' if gap is not None else '-'} | "
            f"{f'{spread:.4f}' if spread is not None else '-'} ({len(seeds)}) |"
        )
    text = "\n".join(rows) + (
        "\n\nEach cell: the mean held-out loss at 8T over that lr's seeds (their count in brackets when > 1). "
        "Gap > 0: another lr beat the recipe's."
    )
    if not verdicts:
        return text + "\n\nVerdict: not enough runs yet (an architecture needs 2 other lrs and >= 2 recipe seeds)."
    pooled = statistics.median(spreads)
    beaten = [(s, g, sp) for s, g, sp in verdicts if g > sp]
    beaten_pooled = [(s, g, sp) for s, g, sp in verdicts if g > pooled]
    text += (
        f"\n\n{len(verdicts)} architectures complete. Gap recipe - best other lr: median "
        f"{statistics.median(gaps):+.4f}, max {max(gaps):+.4f}; seed spread (max - min over the recipe's seeds): "
        f"median {pooled:.4f}, max {max(spreads):.4f}.\n"
    )
    if beaten:
        text += (
            "Verdict: the recipe is NOT fair to every shape: another lr beats it by more than the seed spread for "
            + ("; ".join(f"{s} (gap {g:.4f} > spread {sp:.4f})" for s, g, sp in beaten) + ".")
        )
    else:
        text += "Verdict: the recipe is fair: no other lr beats it by more than that architecture's seed spread."
    text += f" Against the median spread {pooled:.4f}: {len(beaten_pooled)} of {len(verdicts)} beaten."
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--part", help="K/N: run only part K of N (balanced by estimated time, each <= 2 h)")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/lr_sweep.json, or .partKofN.json)")
    parser.add_argument("--merge", type=Path, action="append", default=[], help="fold in another part's JSON")
    parser.add_argument("--report", action="store_true", help="print the report and stop")
    parser.add_argument("--record", action="store_true", help="with --report: append it to bench/RESULTS.md")
    parser.add_argument("--tokens", type=int, help="smoke test: this budget instead of 8T (--out outside bench/)")
    parser.add_argument("--limit", type=int, help="stop after this many new runs")
    args = parser.parse_args()
    part = tuple(int(v) for v in args.part.split("/")) if args.part else None
    out = args.out or (HERE / f"lr_sweep.part{part[0]}of{part[1]}.json" if part else OUT)
    if args.tokens and out.resolve().parent == HERE:
        raise SystemExit("--tokens is a smoke test: give --out outside bench/ (e.g. /tmp/lr_smoke.json)")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault(
        "meta",
        {
            "what": "learning-rate fairness sweep of issue 13 (bench/lr_sweep.py)",
            "split": SPLIT.name,
            "recipe_lr": recipe_lr(),
            "tokens": args.tokens or SHORT_TOKENS * LONG_FACTOR,
            "eval_every": EVAL_EVERY_LONG if not args.tokens else None,
            "data": "20 Gutenberg books (../shared/data/gutenberg), 2 held out; text-files protocol, WSD schedule",
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
    data.setdefault("runs", {})
    for other in args.merge:
        for key, run in json.loads(other.read_text()).get("runs", {}).items():
            data["runs"].setdefault(key, run)
    if args.merge:
        save(data, out)
    if args.report:
        body = report(data)
        if args.record:
            from _results import record

            record("lr_sweep: is the recipe's learning rate fair to every shape?", body, no_record=False)
        else:
            print(body)
        return
    from _results import machine

    global SOURCE
    SOURCE = nas_source()
    data["meta"].update(machine=machine(), threads=torch.get_num_threads())
    optimizer = budget_protocol(LONG_FACTOR).pretrain.optimizer
    data["meta"].pop("lr_grid", None)  # a design of this session's: a fixed grid 1e-3, 3e-3, 9e-3 at every width
    data["meta"].update(recipe_lr=optimizer.lr, lr_width_base=optimizer.lr_width_base, lr_factors=list(LR_FACTORS))
    split, done = load_split(), 0
    while args.limit is None or done < args.limit:
        runs = planned_runs(split, done=data["runs"])  # planned again after every run: a challenger joins in order
        todo = part_of(runs, *part) if part else runs
        left = [r for r in todo if r["key"] not in data["runs"]]
        if not left:
            break
        run = left[0]
        entry = train(run, args.tokens)
        data["runs"][run["key"]] = entry
        save(data, out)
        done += 1
        loss = f"{entry['val_loss']:.4f}" if entry["val_loss"] is not None else entry["cause"]
        print(
            f"[{len(todo) - len(left) + 1}/{len(todo)}] {entry['summary']:56s} lr {run['lr']:.2g} seed {run['seed']} "
            f"{loss} ({entry['wall_seconds']:.0f}s, {entry['tokens_per_second']:.0f} tok/s)",
            flush=True,
        )
    if not args.part and all(r["key"] in data["runs"] for r in planned_runs(split, done=data["runs"])):
        data["meta"]["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        save(data, out)
    print(report(data))


if __name__ == "__main__":
    main()
