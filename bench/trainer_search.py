"""The user's alternative: the same search written the common way, with transformers.Trainer.

`Trainer.hyperparameter_search(backend="optuna")` with a `model_init` that builds a Llama or Mistral
config from the trial's choices over the same 20-architecture grid (bench/grid.yaml), the same data
(Tiny Shakespeare, nas's tokenizer and token ids: the comparison is of the search, not the data
pipeline), the same budget (200k tokens: 98 steps of 8 x 256), optimiser settings and sampler/pruner
(TPE + Hyperband, eval every 10 steps), against `nas search` (nas.search.run_search, one process) for
the same number of trials. Both train for real, one after the other on the same machine. Reported:
wall time to finish, and the chosen architecture's long-budget loss from bench/ground_truth.json
(its regret against the grid's best).

Needs `pip install accelerate` (Trainer requires it; nas does not).

    python bench/trainer_search.py --trials 12     # about 12 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from _results import record  # noqa: E402
from _shakespeare import GRID, GROUND_TRUTH, shakespeare_protocol  # noqa: E402

from nas.data.tokens import prepare_tokens  # noqa: E402
from nas.search import SearchConfig, run_search  # noqa: E402
from nas.space import load_space  # noqa: E402


class Blocks(torch.utils.data.Dataset):
    """Non-overlapping blocks of token ids, labels = inputs (the usual `group_texts` recipe)."""

    def __init__(self, ids: np.ndarray, block: int, limit: int | None = None) -> None:
        n = len(ids) // block if limit is None else min(len(ids) // block, limit)
        self.data = torch.from_numpy(np.asarray(ids[: n * block], dtype=np.int64).reshape(n, block))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.data[i], "labels": self.data[i]}


def hf_config(params: dict, tokens) -> object:
    """What a user writes by hand: a LlamaConfig, or a MistralConfig for sliding-window attention."""
    import transformers

    d_model = params["n_heads"] * 32
    common = dict(
        vocab_size=tokens.vocab_size,
        hidden_size=d_model,
        intermediate_size=params["ffn_mult"] * d_model,
        num_hidden_layers=params["n_layers"],
        num_attention_heads=params["n_heads"],
        num_key_value_heads=params["n_heads"],
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokens.pad_id,
        eos_token_id=tokens.eos_id,
        bos_token_id=tokens.eos_id,
    )
    if params["attention"] == "sliding":
        return transformers.MistralConfig(sliding_window=32, **common)
    return transformers.LlamaConfig(**common)


def grid_key(n_layers: int, d_model: int, ffn_dim: int, sliding: bool) -> tuple:
    return (n_layers, d_model, ffn_dim, sliding)


def trainer_search(n_trials: int, seed: int) -> tuple[float, tuple, dict]:
    import transformers

    protocol = shakespeare_protocol()
    config = protocol.pretrain
    tokens = prepare_tokens(protocol)
    train = Blocks(tokens.train, config.seq_len)
    val = Blocks(tokens.val, config.seq_len, limit=config.eval_tokens // config.seq_len)
    steps = math.ceil(config.budget.tokens / config.batch_tokens)

    def hp_space(trial: optuna.Trial) -> dict:
        params = {
            "n_layers": trial.suggest_categorical("n_layers", [1, 2, 4]),
            "n_heads": trial.suggest_categorical("n_heads", [2, 4]),
            "ffn_mult": trial.suggest_categorical("ffn_mult", [2, 4]),
            "attention": trial.suggest_categorical("attention", ["full", "sliding"]),
        }
        if params["n_layers"] == 4 and params["n_heads"] == 4:  # the grid's constraint, the way a user writes it
            raise optuna.TrialPruned("outside the grid: 4 layers of width 128")
        return params

    def model_init(trial) -> torch.nn.Module:
        params = (
            hp_space(trial) if trial is not None else {"n_layers": 1, "n_heads": 2, "ffn_mult": 2, "attention": "full"}
        )
        torch.manual_seed(config.seed)
        return transformers.AutoModelForCausalLM.from_config(hf_config(params, tokens))

    with tempfile.TemporaryDirectory() as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.batch_size,
            learning_rate=config.optimizer.lr,
            weight_decay=config.optimizer.weight_decay,
            adam_beta1=config.optimizer.betas[0],
            adam_beta2=config.optimizer.betas[1],
            lr_scheduler_type="cosine",
            warmup_steps=config.schedule.warmup_fraction,
            max_grad_norm=config.grad_clip,
            eval_strategy="steps",
            eval_steps=config.eval_every,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            seed=config.seed,
        )
        trainer = transformers.Trainer(model_init=model_init, args=args, train_dataset=train, eval_dataset=val)
        started = time.perf_counter()
        best = trainer.hyperparameter_search(
            direction="minimize",
            backend="optuna",
            n_trials=n_trials,
            hp_space=hp_space,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.HyperbandPruner(min_resource=config.eval_every, reduction_factor=3),
            storage=f"sqlite:///{tmp}/trainer.db",
            study_name="trainer",
        )
        elapsed = time.perf_counter() - started
        study = optuna.load_study(study_name="trainer", storage=f"sqlite:///{tmp}/trainer.db")
        counts = _accounting(
            study.trials,
            steps=lambda t: max(t.intermediate_values, default=0) if t.state.name != "COMPLETE" else steps,
            archs=lambda t: tuple(sorted(t.params.items())) if t.intermediate_values else None,
        )
    p = best.hyperparameters
    d_model = p["n_heads"] * 32
    key = grid_key(p["n_layers"], d_model, p["ffn_mult"] * d_model, p["attention"] == "sliding")
    return elapsed, key, {"objective": best.objective, "params": p, **counts}


def _accounting(trials, steps, archs) -> dict:
    """Trials by state, optimizer steps trained in all, and how many trained an architecture again."""
    trained = [t for t in trials if archs(t) is not None]
    return {
        "trials": len(trials),
        "complete": sum(t.state.name == "COMPLETE" for t in trained),
        "pruned": sum(t.state.name == "PRUNED" for t in trained),
        "steps": int(sum(steps(t) for t in trained)),
        "repeats": len(trained) - len({archs(t) for t in trained}),
    }


def nas_search(n_trials: int, seed: int) -> tuple[float, tuple, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        config = SearchConfig(
            space=load_space(GRID),
            protocol=shakespeare_protocol(),
            study_name="vs-trainer",
            runs_dir=Path(tmp),
            n_trials=n_trials,
            sampler="tpe",
            pruner="hyperband",
            seed=seed,
        )
        started = time.perf_counter()
        study = run_search(config).study
        elapsed = time.perf_counter() - started
        best = study.best_trial
        batch = config.protocol.pretrain.batch_tokens
        counts = _accounting(
            study.trials,
            steps=lambda t: t.user_attrs["metrics"]["tokens_trained"] // batch,
            archs=lambda t: t.user_attrs["arch_hash"] if t.user_attrs.get("nas_status") == "trained" else None,
        )
    a = best.user_attrs["arch"]
    key = grid_key(a["n_layers"], a["d_model"], a["ffn_dim"], "sliding" in best.user_attrs["summary"])
    return elapsed, key, {"objective": best.value, "summary": best.user_attrs["summary"], **counts}


RAW = Path(__file__).resolve().parent / "trainer_search.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="score the runs in trainer_search.json again")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    labels = {"nas": "nas search (TPE + Hyperband)", "trainer": "Trainer.hyperparameter_search (TPE + Hyperband)"}
    if args.report_only:
        runs = json.loads(RAW.read_text())
    else:  # the searches train for real; their picks are scored against the ground truth afterwards
        runs = {"trials": args.trials, "seed": args.seed}
        for name, run in (("nas", nas_search), ("trainer", trainer_search)):
            elapsed, key, info = run(args.trials, args.seed)
            runs[name] = {"elapsed": elapsed, "key": list(key), **{k: v for k, v in info.items() if k != "params"}}
            print(f"{labels[name]}: {elapsed:.0f}s, pick {key}, trial loss {info['objective']:.4f}", flush=True)
        RAW.write_text(json.dumps(runs, indent=1))

    data = json.loads(GROUND_TRUTH.read_text())
    truth = {}
    for e in data["archs"].values():
        a = e["arch"]
        if "long" in e:
            truth[grid_key(a["n_layers"], a["d_model"], a["ffn_dim"], "sliding" in e["summary"])] = e
    best_long = min(e["long"]["val_loss"] for e in truth.values())
    rows = [
        "| search | wall time (s) | trials (trained: complete, pruned) | steps trained | repeats | pick "
        "| its trial loss | its long-budget loss | regret |"
    ]
    rows.append("|---|---|---|---|---|---|---|---|---|")
    for name, label in labels.items():
        run = runs[name]
        entry = truth[tuple(run["key"])]
        long_loss = entry["long"]["val_loss"]
        rows.append(
            f"| {label} | {run['elapsed']:.0f} | {run['trials']} ({run['complete']}, {run['pruned']}) | {run['steps']} "
            f"| {run['repeats']} | {entry['summary']} | {run['objective']:.4f} | {long_loss:.4f} "
            f"| {100 * (long_loss / best_long - 1):.2f} % |"
        )
    ratio = runs["trainer"]["elapsed"] / runs["nas"]["elapsed"]
    body = "\n".join(rows) + (
        f"\n\n{runs['trials']} trials each (sampler seed {runs['seed']}), Tiny Shakespeare, 200k tokens per trial, "
        f"eval every 10 steps, one process on this machine; Trainer's wall time is {ratio:.2f}x nas's. "
        "Trials counts every trial of the study; the trained ones are those that ran an optimizer step (nas's "
        "infeasible samples and reused duplicates train nothing; Trainer's out-of-grid samples are pruned before "
        "training). Steps trained counts every optimizer step of every trial, pruned ones included; repeats are "
        "trials that trained an architecture an earlier trial had trained (nas reuses a duplicate's values "
        "instead). "
        "nas's trials also measure generation latency and zero-cost proxies and record curves, counts and notes "
        "in the study; Trainer's trials only train and evaluate. The regret is against the grid's best "
        "long-budget loss in `bench/ground_truth.json`; the raw runs are in `bench/trainer_search.json`."
    )
    record("trainer_search: nas search vs Trainer.hyperparameter_search", body, args.no_record)


if __name__ == "__main__":
    main()
