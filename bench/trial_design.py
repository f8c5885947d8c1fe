"""Which trial, at the same token budget T, ranks the architectures as the long budget does? (issue 13)

The ground truth (bench/gt_train.py) shows that a trial of T = 196,608 tokens at the recipe's 2,048
tokens per step (96 optimizer steps) ranks the 8T losses barely better than chance: at 96 steps every
model is still in its first, unigram-to-bigram phase, and the ranking only settles after a few hundred
steps (the 8T runs' own cool-downs at 1.25T / 2.5T / 5T rank the 8T loss at Spearman 0.25 / 0.80 / 0.96
on the first 16 architectures). A trial can take more optimizer steps from the same T tokens (the same
FLOPs) with a smaller batch: early in training the critical batch size is small, so a small batch is
the more token-efficient one. This script trains each design's T-budget trial on the ground truth's
architectures and ranks the trial losses against the 8T losses.

Designs are chosen on the "develop" half of bench/gt_split.json only; `--half report` then runs the
chosen design on the report half, once, for the figure that is reported (issue 13's point 4).

    nice -n 19 python bench/trial_design.py --threads 1                        # every design, develop half
    nice -n 19 python bench/trial_design.py --threads 1 --design b512 --half report
    python bench/trial_design.py --report [--record]                            # Spearman per design and half
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gutenberg import SHORT_TOKENS, at_recipe_lr, fixed_lr, gutenberg_protocol
from gt_archs import load_split
from lr_sweep import curve_rows, finite_or_none, nas_source, save
from prediction_fidelity import rank_cell

HERE = Path(__file__).resolve().parent
OUT = HERE / "trial_design.json"
GROUND_TRUTH = HERE / "ground_truth_gutenberg.json"
LR_SWEEP = HERE / "lr_sweep.json"
# name -> (batch tokens, peak lr or None for the recipe's); every design trains T tokens with WSD and
# cool-downs at 1/4 and 1/2 of T, as the ground truth's T runs do
DESIGNS: dict[str, tuple[int, float | None]] = {
    "b2048": (2048, None),  # the ground truth's own T run (read from ground_truth_gutenberg.json)
    "b512": (512, None),
    "b256": (256, None),
}
COOLDOWNS = [0.25, 0.5]
EVALS = 8
SOURCE = "?"


def protocol(design: str, seed: int = 0) -> Any:
    batch, lr = DESIGNS[design]
    steps = SHORT_TOKENS // batch
    extra = [f"pretrain.batch_tokens={batch}", f"pretrain.schedule.cooldowns={json.dumps(COOLDOWNS)}"]
    extra += fixed_lr(lr) if lr is not None else []  # a design's own lr is the same at every width
    return gutenberg_protocol(SHORT_TOKENS, seed=seed, eval_every=max(1, steps // EVALS), extra=extra)


def train(entry: dict[str, Any], design: str, seed: int) -> dict[str, Any]:
    from nas.trial import run_trial

    arch = entry["arch"]
    proto = protocol(design, seed)
    started = time.perf_counter()
    result = run_trial(arch, proto)
    return {
        "arch_hash": entry["hash"],
        "summary": entry["summary"],
        "half": entry["half"],
        "non_embedding_params": entry["non_embedding_params"],
        "design": design,
        "seed": seed,
        "lr": proto.pretrain.optimizer.peak_lr(arch.d_model),
        "status": result.status,
        "cause": result.cause,
        "val_loss": finite_or_none(result.metrics.get("val_loss", math.nan)),
        "annealed": [[int(t), finite_or_none(v)] for t, v in result.annealed],
        "curve": curve_rows(result),
        "train_seconds": result.metrics.get("train_seconds"),
        "wall_seconds": time.perf_counter() - started,
        "protocol_hash": proto.content_hash,
        "nas_source": SOURCE,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def long_losses() -> dict[str, dict[int, float]]:
    """arch hash -> {seed: final 8T loss} from the ground truth and the lr sweep's recipe-lr runs."""
    out: dict[str, dict[int, float]] = {}
    gt = json.loads(GROUND_TRUTH.read_text())
    for r in gt["runs"].values():
        if (
            r["factor"] == 8
            and r["status"] == "complete"
            and r["val_loss"] is not None
            and at_recipe_lr(r, r["d_model"])
        ):
            out.setdefault(r["arch_hash"], {})[r["seed"]] = r["val_loss"]
    if LR_SWEEP.exists():
        for r in json.loads(LR_SWEEP.read_text())["runs"].values():
            if at_recipe_lr(r, r["d_model"]) and r["status"] == "complete" and r["val_loss"] is not None:
                out.setdefault(r["arch_hash"], {}).setdefault(r["seed"], r["val_loss"])
    return out


def trial_losses(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """design -> {arch hash: seed-0 trial loss}; b2048 from the ground truth's T runs."""
    out: dict[str, dict[str, float]] = {d: {} for d in DESIGNS}
    for r in json.loads(GROUND_TRUTH.read_text())["runs"].values():
        if r["factor"] == 1 and r["seed"] == 0 and r["val_loss"] is not None and at_recipe_lr(r, r["d_model"]):
            out["b2048"][r["arch_hash"]] = r["val_loss"]
    width = {e["hash"]: e["arch"].d_model for e in load_split()["archs"]}
    for r in data.get("runs", {}).values():
        lr = DESIGNS[r["design"]][1]
        fresh = math.isclose(r["lr"], lr) if lr is not None else at_recipe_lr(r, width[r["arch_hash"]])
        if r["seed"] == 0 and r["val_loss"] is not None and fresh:  # a stale run waits to be redone
            out[r["design"]][r["arch_hash"]] = r["val_loss"]
    return out


def report(data: dict[str, Any]) -> str:
    split = load_split()
    half = {e["hash"]: e["half"] for e in split["archs"]}
    params = {e["hash"]: e["non_embedding_params"] for e in split["archs"]}
    truth = {h: statistics.fmean(v.values()) for h, v in long_losses().items()}
    trials = trial_losses(data)
    n_truth = sum(h in truth for h in half)
    designs = "; ".join(
        f"{d}: {b:,} tokens/step ({SHORT_TOKENS // b} steps), lr {lr or 'recipe'}" for d, (b, lr) in DESIGNS.items()
    )
    lines = [
        f"Designs (every one trains T = {SHORT_TOKENS:,} tokens, WSD, cool-downs at {COOLDOWNS}): {designs}. "
        "Designs are compared on the develop half; the one chosen there (the best trial-loss ranking) is the "
        "only one run on the report half."
        + (f" PARTIAL: {n_truth} of {len(half)} architectures have an 8T run so far." if n_truth < len(half) else ""),
        "",
        "Spearman [90 % bootstrap CI] / Kendall [CI] (n) of the trial's T-budget loss against the mean 8T loss "
        "(the seeds available); `params`: non-embedding parameters (more is better) on the same architectures.",
        "",
        "| design | half | trial loss | params |",
        "|---|---|---|---|",
    ]
    for design, losses in trials.items():
        for which in ("develop", "report", "all"):
            hs = [h for h in losses if h in truth and which in ("all", half[h])]
            halves = {half[h] for h in hs}
            if len(hs) < 4 or (which == "all" and len(halves) < 2):  # "all" of one half repeats that half
                continue
            trial = rank_cell([(losses[h], truth[h]) for h in hs])
            size = rank_cell([(-params[h], truth[h]) for h in hs])
            lines.append(f"| {design} | {which} | {trial} | {size} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--design", action="append", choices=[d for d in DESIGNS if d != "b2048"])
    parser.add_argument("--half", choices=["develop", "report"], default="develop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    data = json.loads(OUT.read_text()) if OUT.exists() else {"meta": {"short_tokens": SHORT_TOKENS}, "runs": {}}
    if args.report:
        body = report(data)
        if args.record:
            from _results import record

            record("trial_design: which T-budget trial ranks like the long budget", body, no_record=False)
        else:
            print(body)
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import nas.trial  # noqa: F401  (loaded before its source is hashed)

    global SOURCE
    SOURCE = nas_source()
    split = load_split()
    designs = args.design or [d for d in DESIGNS if d != "b2048"]
    entries = [e for e in split["archs"] if e["half"] == args.half]
    for design in designs:
        for entry in entries:
            key = f"{entry['hash']}/{design}/seed={args.seed}"
            lr = protocol(design, args.seed).pretrain.optimizer.peak_lr(entry["arch"].d_model)
            if key in data["runs"] and math.isclose(data["runs"][key]["lr"], lr):
                continue
            run = train(entry, design, args.seed)
            if key in data["runs"]:  # at an earlier recipe's lr: kept aside, out of the figures
                data.setdefault("superseded", {}).setdefault(key, []).append(data["runs"][key])
            data["runs"][key] = run
            save(data, OUT)
            print(f"{design:12s} {run['summary']:56s} {run['val_loss']} ({run['wall_seconds']:.0f}s)", flush=True)
    print(report(data))


if __name__ == "__main__":
    main()
