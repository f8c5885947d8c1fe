"""Fine-tuning recipes by measurement: which steps and learning rate let each task's grades show skill?

Pretrains a few architectures of a space under a protocol (tasks dropped), then fine-tunes each task
from every pretrained model, and from a randomly initialised model of the same architecture, with
every (steps, lr) pair asked for. Prints the per-grade scores beside the no-model baseline, the
seconds each fine-tuning took, and, per recipe, the spread across architectures. Results are written
to a JSON file (resumable: a finished (arch, init, task, recipe) is not run again).

    python bench/task_recipes.py --archs 3 --steps 40 120 --lrs 1e-3 3e-3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from signal_noise import first_archs  # noqa: E402

from nas.data.tasks import load_task_set  # noqa: E402
from nas.model import build_model  # noqa: E402
from nas.protocol import load_protocol  # noqa: E402
from nas.train.baselines import task_baselines  # noqa: E402
from nas.train.finetune import finetune  # noqa: E402
from nas.trial import run_trial  # noqa: E402

HERE = Path(__file__).resolve().parent
HEADLINE = {"classification": "accuracy", "qa": "f1", "generation": "exact_match"}  # choice_accuracy where reported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--trial", default="cpu-tiny")
    parser.add_argument("--archs", type=int, default=3)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, nargs="+", default=[40])
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-3])
    parser.add_argument("--tasks", nargs="*", default=None, help="task names (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="pretraining seed")
    parser.add_argument("--random-init", action="store_true", help="also fine-tune a randomly initialised model")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default=str(HERE / "task_recipes.json"))
    parser.add_argument("--report", action="store_true", help="summarise the JSON file; train nothing")
    parser.add_argument("--record", action="store_true", help="with --report: append it to bench/RESULTS.md")
    args = parser.parse_args()

    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {}
    if args.report:
        body = report(done)
        if args.record:
            from _results import append

            append(f"task_recipes: fine-tuning recipes per grade (`{Path(args.out).name}`)", body)
        print(body)
        return
    protocol = load_protocol(args.trial, [*args.overrides, f"pretrain.seed={args.seed}"])
    archs = first_archs(args.space, args.archs, args.sample_seed)
    tasks = [t for t in protocol.tasks if args.tasks is None or t.name in args.tasks]
    for arch in archs:
        result = run_trial(arch, protocol.model_copy(update={"tasks": []}), keep_model=True)
        from nas.data.tokens import prepare_tokens

        tokenizer = prepare_tokens(protocol).tokenizer
        arch = result.arch
        print(f"{arch.summary()}: val_loss {result.metrics['val_loss']:.4f}", flush=True)
        models = {"pretrained": result.model}
        if args.random_init:
            models["random"] = build_model(arch, tokenizer, "cpu", protocol.pretrain.seed)
        for task in tasks:
            taskset = load_task_set(task, protocol.source)
            base = {k: b.value for k, b in task_baselines(task, taskset, tokenizer).items()}
            for init, model in models.items():
                for steps in args.steps:
                    for lr in args.lrs:
                        key = (
                            f"{arch.arch_hash()}|{args.seed}|{init}|{task.name}|{steps}|{lr:g}|{protocol.content_hash}"
                        )
                        if key not in done:
                            recipe = task.model_copy(update={"steps": steps, "lr": lr})
                            start = time.perf_counter()
                            metrics = finetune(
                                recipe, taskset, model, arch, tokenizer, protocol.pretrain, args.seed + 1
                            )
                            done[key] = {
                                "arch": arch.summary(),
                                "val_loss": result.metrics["val_loss"],
                                "seed": args.seed,
                                "init": init,
                                "task": task.name,
                                "steps": steps,
                                "lr": lr,
                                "seconds": time.perf_counter() - start,
                                "metrics": metrics,
                                "baselines": base,
                            }
                            out.write_text(json.dumps(done, indent=1))
                        row = done[key]
                        head = "choice_accuracy" if "choice_accuracy" in row["metrics"] else HEADLINE[task.kind]
                        grades = [g for g in task.grades()] or [""]
                        cells = "  ".join(
                            f"{g or 'all'} {row['metrics'][f'{g}.{head}' if g else head]:.3f}"
                            f"/{base.get(f'{g}.{head}' if g else head, float('nan')):.3f}"
                            for g in grades
                        )
                        print(
                            f"  {init:10s} {task.name:8s} steps {steps:4d} lr {lr:g}  {cells}  ({row['seconds']:.1f}s)",
                            flush=True,
                        )


def report(done: dict) -> str:
    """Per task, recipe and initialisation: the headline metric per grade, mean (min-max) over the
    architectures, beside the no-model baseline; and the mean seconds of one fine-tuning."""
    groups: dict[tuple, list[dict]] = {}
    for row in done.values():
        groups.setdefault((row["task"], row["steps"], row["lr"], row["init"]), []).append(row)
    lines = [
        "| task | steps | lr | init | archs | " + " | ".join(["grade: mean (min-max) / no model"] * 1) + " | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, steps, lr, init), rows in sorted(groups.items()):
        metrics = rows[0]["metrics"]
        head = next(m for m in ("accuracy", "f1", "choice_accuracy", "exact_match") if m in metrics)
        grades = [k.rsplit(".", 1)[0] for k in metrics if k.endswith("." + head)] or []
        cells = []
        for grade in grades or [""]:
            name = f"{grade}.{head}" if grade else head
            values = [r["metrics"][name] for r in rows]
            base = rows[0]["baselines"].get(name, float("nan"))
            cells.append(
                f"{grade or 'all'} {statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f}) / {base:.3f}"
            )
        seconds = statistics.mean(r["seconds"] for r in rows)
        lines.append(
            f"| {task} {head} | {steps} | {lr:g} | {init} | {len(rows)} | {'; '.join(cells)} | {seconds:.1f} |"
        )
    archs = sorted({(r["arch"], r["val_loss"]) for r in done.values()}, key=lambda x: x[1])
    lines += ["", "Architectures (held-out loss after pretraining): " + "; ".join(f"`{a}` {v:.3f}" for a, v in archs)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
