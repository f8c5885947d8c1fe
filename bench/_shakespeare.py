"""The benchmarks' trial protocol: `text-files` pointed at Tiny Shakespeare in ../shared/data.

The short (trial) budget is the protocol's own 200k tokens; the long budget that stands for "trained
for real" is LONG_FACTOR times that. Fine-tuning tasks are dropped: the criterion is held-out loss.
"""

from __future__ import annotations

import json
from pathlib import Path

from nas.protocol import TrialProtocol, load_protocol

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
GRID = Path(__file__).resolve().parent / "grid.yaml"
GROUND_TRUTH = Path(__file__).resolve().parent / "ground_truth.json"
SHORT_TOKENS = 200_000
EVAL_EVERY = 10
LONG_FACTOR = 8


def shakespeare_protocol(
    tokens: int = SHORT_TOKENS, seed: int = 0, eval_every: int = EVAL_EVERY, extra: list[str] | None = None
) -> TrialProtocol:
    if not SHAKESPEARE.exists():
        raise SystemExit(f"{SHAKESPEARE} is missing: the benchmarks need ../shared/data beside the repository")
    overrides = [
        f"cache_dir={ROOT / 'runs' / 'cache'}",
        f"data.files.paths={json.dumps([str(SHAKESPEARE)])}",
        "data.files.sample_by=paragraph",
        f"pretrain.budget.tokens={tokens}",
        f"pretrain.eval_every={eval_every}",
        "pretrain.eval_tokens=16384",
        f"pretrain.seed={seed}",
        *(extra or []),
    ]
    protocol = load_protocol("text-files", overrides=overrides)
    return protocol.model_copy(update={"tasks": []})


def grid_archs() -> list:
    """Every architecture of bench/grid.yaml, in a fixed order (sampled the way a grid search does)."""
    import optuna

    from nas.search import grid_space
    from nas.space import load_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space(GRID)
    grid = grid_space(space)
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    archs = {}

    def objective(trial: optuna.Trial) -> float:
        sample = space.sample(trial)
        if sample.arch is not None:
            archs.setdefault(sample.arch.arch_hash(), sample.arch)
        return 0.0

    study.optimize(objective)  # the grid sampler stops the study when every cell was seen
    return sorted(archs.values(), key=lambda a: (a.n_layers, a.d_model, a.ffn_dim, a.summary()))
