"""Where a task metric's seed noise comes from: pretraining, or fine-tuning?

signal_noise.py's seed spread reruns whole trials, so it mixes two sources: the pretraining seed
(initialisation and data order) and the fine-tuning seed (the new head's initialisation and the batch
order). This bench pretrains each of the first ``--archs`` distinct architectures of a sample under
``--pretrain-seeds`` seeds, fine-tunes each pretrained model under ``--finetune-seeds`` seeds, and prints,
per metric, the mean, the standard deviation and the range over the fine-tuning seeds of every pretrained
model, then the two parts of the variance: within a pretrained model (fine-tuning alone) and between the
pretrained models' means of one architecture (pretraining), against the gap between the architectures' means.

    python bench/finetune_noise.py --archs 2 --pretrain-seeds 2 --finetune-seeds 5 --task qa
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import append  # noqa: E402
from signal_noise import first_archs  # noqa: E402

from nas.data.tasks import load_task_set  # noqa: E402
from nas.data.tokens import prepare_tokens  # noqa: E402
from nas.protocol import load_protocol  # noqa: E402
from nas.train.finetune import finetune  # noqa: E402
from nas.trial import run_trial  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--trial", default="cpu-tiny")
    parser.add_argument("--task", default="qa")
    parser.add_argument("--archs", type=int, default=2)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--pretrain-seeds", type=int, default=2)
    parser.add_argument("--finetune-seeds", type=int, default=5)
    parser.add_argument("--metrics", nargs="+", default=["near.f1", "mid.f1", "f1", "exact_match", "perplexity"])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    if args.finetune_seeds < 2:
        parser.error("--finetune-seeds: at least 2 (a spread needs two runs)")

    protocol = load_protocol(args.trial, args.overrides)
    task = next((t for t in protocol.tasks if t.name == args.task), None)
    if task is None:
        sys.exit(f"no enabled task {args.task!r} in {args.trial} (enable it with --set tasks.{args.task}.enabled=true)")
    tokenizer = prepare_tokens(protocol).tokenizer
    taskset = load_task_set(task, protocol.source)
    archs = first_archs(args.space, args.archs, args.sample_seed)
    # scores[arch][pretraining seed] = one {metric: value} per fine-tuning seed
    scores: dict[str, list[list[dict[str, float]]]] = {}
    lines = []
    for arch in archs:
        for pseed in range(args.pretrain_seeds):
            pretrain = protocol.pretrain.model_copy(update={"seed": pseed})
            result = run_trial(arch, protocol.model_copy(update={"tasks": [], "pretrain": pretrain}), keep_model=True)
            runs = [
                finetune(task, taskset, result.model, result.arch, tokenizer, pretrain, 1000 + fseed)
                for fseed in range(args.finetune_seeds)
            ]
            scores.setdefault(arch.summary(), []).append(runs)
            cells = []
            for name in args.metrics:
                values = [r[name] for r in runs]
                spread = f"({min(values):.3f}-{max(values):.3f})"
                cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} {spread}")
            line = f"| `{arch.summary()}` | {pseed} | {result.metrics['val_loss']:.3f} | " + " | ".join(cells) + " |"
            print(line, flush=True)
            lines.append(line)
    head = "| architecture | pretraining seed | held-out loss | " + " | ".join(
        f"{args.task}.{m}: mean ± sd (range)" for m in args.metrics
    )
    table = [head + " |", "|" + "---|" * (3 + len(args.metrics)), *lines]
    parts = [
        "",
        "| metric | fine-tuning sd (within a model) | sd of a model's mean over its fine-tuning seeds (pretraining, "
        f"plus fine-tuning / {args.finetune_seeds}) | gap between the shapes' means |",
        "|---|---|---|---|",
    ]
    for name in args.metrics:
        within = statistics.mean(statistics.variance([r[name] for r in runs]) for m in scores.values() for runs in m)
        means = {a: [statistics.mean(r[name] for r in runs) for runs in m] for a, m in scores.items()}
        between = (
            f"{statistics.mean(statistics.variance(v) for v in means.values()) ** 0.5:.3f}"
            if args.pretrain_seeds > 1
            else "-"
        )
        grand = [statistics.mean(v) for v in means.values()]
        parts.append(f"| {args.task}.{name} | {within**0.5:.3f} | {between} | {max(grand) - min(grand):.3f} |")
    body = "\n".join(
        [
            f"{len(archs)} architectures (sample seed {args.sample_seed}) x {args.pretrain_seeds} pretraining seeds x "
            f"{args.finetune_seeds} fine-tuning seeds, task `{args.task}` of `{args.trial}`"
            + (f", overrides {' '.join(args.overrides)}" if args.overrides else "")
            + ".",
            "",
            *table,
            *parts,
        ]
    )
    print(body)
    if not args.no_record:
        append(f"finetune_noise: `{args.space}` x `{args.trial}` {args.task}, pretraining vs fine-tuning seeds", body)


if __name__ == "__main__":
    main()
