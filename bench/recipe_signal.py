"""Which fine-tuning recipe lets a task separate architectures? signal_noise's design, several recipes, one pretraining.

For each sample seed, pretrains the first ``--archs`` distinct architectures of a ``--space`` sample (seed 0),
then seeds 1..``--seeds``-1 of the first architecture and of the one with the lowest held-out loss, exactly as
``signal_noise.py --tasks`` does; then fine-tunes every pretrained model under each ``--recipe`` (a label and
``--set`` overrides of the protocol's tasks) through the trial's own task path (``evaluate_tasks``: fine-tuning
seed = pretraining seed + task index + 1, so a recipe's scores are those a whole trial would report). Per recipe
and sample: signal_noise's task table (each metric's architecture spread against its seed spread, and the
no-model baseline); then a summary across samples: per recipe, the best ratio, the best architecture's score on
``--skill`` (the skill target's metric) and the task's seconds per model.

Recipes share the pretrained models, so they differ only in fine-tuning; choose a recipe on some sample seeds
and confirm it on others (a ratio of ranges over 3 seeds is noisy: the best of many recipes flatters itself).

    python bench/recipe_signal.py --sample-seeds 0 1 2 \\
        --recipe "default:" --recipe "lr1e-3:tasks.qa.lr=1e-3" --recipe "lr1e-3 40:tasks.qa.lr=1e-3;tasks.qa.steps=40"
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import append  # noqa: E402
from signal_noise import design_parser, first_archs, metric_spreads, task_table  # noqa: E402

from nas.data.tokens import prepare_tokens  # noqa: E402
from nas.protocol import load_protocol  # noqa: E402
from nas.train.baselines import protocol_baselines  # noqa: E402
from nas.train.finetune import evaluate_tasks  # noqa: E402
from nas.trial import run_trial  # noqa: E402


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """ "label:key=value;key=value" -> (label, overrides); "label:" is the protocol as it is."""
    label, sep, rest = text.partition(":")
    if not sep or not label.strip():
        raise argparse.ArgumentTypeError(f"--recipe {text!r}: expected LABEL:key=value;key=value (or LABEL:)")
    return label.strip(), [o.strip() for o in rest.split(";") if o.strip()]


def main() -> None:
    parser = design_parser(__doc__)
    parser.add_argument("--sample-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--recipe", dest="recipes", type=parse_recipe, action="append", required=True)
    parser.add_argument("--skill", default="qa.near.f1", help="the metric whose best value the summary shows")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applies to every recipe")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds: at least 2 (a spread needs two runs)")

    base = load_protocol(args.trial, args.overrides)
    tokenizer = prepare_tokens(base).tokenizer
    protocols = {label: load_protocol(args.trial, [*args.overrides, *extra]) for label, extra in args.recipes}
    for label, protocol in protocols.items():
        if not protocol.tasks:
            sys.exit(f"recipe {label!r}: no enabled task in {args.trial}")
    sections, summary = [], []
    for sample in args.sample_seeds:
        archs, models, seeded = pretrain_sample(base, args.space, sample, args.archs, args.seeds)
        for label, protocol in protocols.items():
            scores, seconds = fine_tune_all(protocol, archs, models, tokenizer)
            baselines = {f"baseline:{k}": b.value for k, b in protocol_baselines(protocol, tokenizer).items()}
            arch_runs = [(archs[i], scores[(i, 0)] | baselines) for i in range(len(archs))]
            groups = [[scores[(i, s)] for s in range(args.seeds)] for i in seeded]

            def spreads(name: str, runs=arch_runs, groups=groups) -> tuple[float, float, float]:
                return metric_spreads(name, [m for _, m in runs], groups)

            names = [n for n in protocol.metric_names() if n.split(".")[0] in {t.name for t in protocol.tasks}]
            ratios = {n: spreads(n)[2] for n in names}
            top = max((n for n in names if ratios[n] == ratios[n]), key=ratios.__getitem__, default=None)
            skill = [m[args.skill] for _, m in arch_runs if args.skill in m]
            summary.append(
                f"| {label} | {sample} | "
                + (f"{ratios[top]:.1f} (`{top}`)" if top else "-")
                + f" | {max(skill) if skill else float('nan'):.3f} | {statistics.mean(seconds):.1f} |"
            )
            seeds_of = " and ".join(f"`{archs[i].summary()}`" for i in seeded)
            sections.append(
                f"**Recipe `{label}`, sample seed {sample}** (seeds of {seeds_of}):\n\n"
                + task_table(protocol, arch_runs, spreads)
            )
            print(summary[-1], flush=True)
    recipes = "; ".join(f"`{label}`: " + (" ".join(extra) or "the protocol as it is") for label, extra in args.recipes)
    body = "\n\n".join(
        [
            f"`{args.space}` x `{args.trial}`"
            + (f" with {' '.join(args.overrides)}" if args.overrides else "")
            + f", {args.archs} architectures per sample, {args.seeds} seeds of the first and of the best; recipes: "
            + recipes
            + ".",
            f"| recipe | sample seed | best ratio (metric) | best architecture's `{args.skill}` "
            "| task seconds per model |\n|---|---|---|---|---|\n" + "\n".join(summary),
            *sections,
        ]
    )
    print(body)
    if not args.no_record:
        append(f"recipe_signal: `{args.space}` x `{args.trial}` fine-tuning recipes, architecture vs seed spread", body)


def pretrain_sample(base, space: str, sample: int, n_archs: int, n_seeds: int):
    """signal_noise's trials, pretrained only: the first ``n_archs`` distinct architectures of sample ``sample``
    (seed 0), then seeds 1.. of the first and of the lowest held-out loss. Returns (architectures,
    ``{(index, seed): (model, held-out loss)}``, the indices seeded)."""
    archs = first_archs(space, n_archs, sample)
    models: dict[tuple[int, int], tuple] = {}

    def pretrain(index: int, seed: int) -> None:
        protocol = base.model_copy(update={"tasks": [], "pretrain": base.pretrain.model_copy(update={"seed": seed})})
        result = run_trial(archs[index], protocol, keep_model=True)
        models[(index, seed)] = (result.model, result.metrics["val_loss"])
        print(f"  sample {sample} seed {seed}  {archs[index].summary():58s} val_loss {result.metrics['val_loss']:.4f}")

    for i in range(len(archs)):
        pretrain(i, 0)
    best = min(range(len(archs)), key=lambda i: models[(i, 0)][1])
    seeded = sorted({0, best})
    for seed in range(1, n_seeds):
        for i in seeded:
            pretrain(i, seed)
    return archs, models, seeded


def fine_tune_all(protocol, archs, models, tokenizer) -> tuple[dict[tuple[int, int], dict[str, float]], list[float]]:
    """Every pretrained model fine-tuned on ``protocol``'s tasks as its trial would be (seed = its pretraining
    seed + task index + 1): ``{(index, seed): metrics}`` and the seconds each took."""
    scores, seconds = {}, []
    for (i, seed), (model, val_loss) in models.items():
        seeded = protocol.model_copy(update={"pretrain": protocol.pretrain.model_copy(update={"seed": seed})})
        started = time.perf_counter()
        scores[(i, seed)] = evaluate_tasks(seeded, model, archs[i], tokenizer) | {"val_loss": val_loss}
        seconds.append(time.perf_counter() - started)
    return scores, seconds


if __name__ == "__main__":
    main()
