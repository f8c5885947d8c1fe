"""How many held-out windows a protocol's evals need: ranking against the whole held-out split, and cost.

A trial's held-out loss (`pretrain.eval_tokens`) is the mean over windows spread evenly over the held-out
split (nas.train.windows.eval_windows). Fewer windows make every eval cheaper, and a trial evaluates many
times: at step 0, every `eval_every` steps, after each cool-down and at the end. This bench trains
--archs architectures of a space under the protocol (one seed each, no evals on the way), computes each
one's loss on every window of the held-out split, and for each window count reports:

- how the subset ranks the architectures against the whole split (Spearman, pairs in the wrong order,
  the largest error of a pairwise difference) and the paired standard error of a difference
  (sd of the per-window differences / sqrt(n), finite-population corrected);
- the evals' share of a default trial's pretraining time: its eval count and eval tokens from the
  protocol's budget and schedule, priced at the forward and training tokens/s measured here.

Architectures longer-windowed than the space allows take the protocol's seq_len (the question is the
protocol's windows, not the space's); the vocabulary is the tokenizer's.

    python bench/eval_windows.py                     # gpu-files x tiny, 6 architectures: ~15 min on 2 cores
    python bench/eval_windows.py --archs 2 --tokens 65536 --no-record   # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import record  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from nas.arch import ArchConfig  # noqa: E402
from nas.data.tokens import prepare_tokens  # noqa: E402
from nas.model import build_model  # noqa: E402
from nas.protocol import Pretrain, load_protocol  # noqa: E402
from nas.space import load_space, random_samples  # noqa: E402
from nas.train.pretrain import pretrain  # noqa: E402
from nas.train.schedule import cooldown_length, cooldown_steps  # noqa: E402
from nas.train.windows import eval_windows  # noqa: E402


def window_losses(model: torch.nn.Module, val: np.ndarray, seq_len: int, micro: int) -> tuple[np.ndarray, float]:
    """The mean loss of every window of the held-out split, and the forward pass's tokens/s."""
    windows = eval_windows(val, seq_len, len(val))
    model.eval()
    losses: list[float] = []
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(windows), micro):
            x = torch.from_numpy(np.stack(windows[i : i + micro]).astype(np.int64))
            logits = model(input_ids=x[:, :-1]).logits.float()
            per_token = torch.nn.functional.cross_entropy(
                logits.view(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="none"
            )
            losses += per_token.view(x.shape[0], -1).mean(1).tolist()
    return np.array(losses), len(windows) * seq_len / (time.perf_counter() - started)


def eval_plan(config: Pretrain) -> tuple[int, int]:
    """(held-out evals, tokens trained, cool-downs included) of a trial at the protocol's token budget."""
    assert config.budget.tokens is not None, "the bench prices a token budget"
    steps = math.ceil(config.budget.tokens / config.batch_tokens)
    cooldowns = cooldown_steps(steps, config.schedule)
    evals = 1 + len({*range(config.eval_every, steps + 1, config.eval_every), steps}) + len(cooldowns)
    trained = steps + sum(cooldown_length(s, config.schedule) for s in cooldowns)
    return evals, trained * config.batch_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trial", default="gpu-files")
    parser.add_argument("--space", default="tiny")
    parser.add_argument("--archs", type=int, default=6, help="architectures, spread over the space's first 40 draws")
    parser.add_argument("--seed", type=int, default=11, help="seed of the architecture draws")
    parser.add_argument("--tokens", type=int, default=1_000_000, help="pretraining tokens per architecture")
    parser.add_argument("--counts", default="16,32,64,128", help="window counts to compare with the whole split")
    parser.add_argument("--set", action="append", default=[], help="protocol overrides (key=value)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    protocol = load_protocol(args.trial, args.set)
    train_sets = [f"pretrain.budget.tokens={args.tokens}", "pretrain.eval_every=1000000", "pretrain.compile=false"]
    quiet = load_protocol(args.trial, [*args.set, *train_sets, "pretrain.schedule.cooldowns=[]"]).pretrain
    quiet = quiet.model_copy(update={"eval_tokens": quiet.seq_len})
    tokens = prepare_tokens(protocol)
    seq, vocab = protocol.pretrain.seq_len, len(tokens.tokenizer)
    draws = [s.arch for s in random_samples(load_space(args.space), 40, args.seed) if s.arch is not None]
    picked = draws[:: max(1, len(draws) // args.archs)][: args.archs]
    losses: dict[str, np.ndarray] = {}
    forward, training = [], []
    for arch in picked:
        arch = ArchConfig(**{**arch.to_dict(), "max_seq_len": max(seq, arch.max_seq_len), "vocab_size": vocab})
        model = build_model(arch, tokens.tokenizer, torch.device("cpu"), 0)
        outcome = pretrain(model, tokens.train, tokens.val, quiet, arch.flops_per_token(seq))
        losses[arch.summary()], fwd = window_losses(model, tokens.val, seq, quiet.micro_batch_size or 8)
        forward.append(fwd)
        training.append(outcome.tokens_per_second)
        print(f"{arch.summary()}: whole-split loss {losses[arch.summary()].mean():.4f}", flush=True)
    names, n_all = list(losses), len(next(iter(losses.values())))
    whole = {k: v.mean() for k, v in losses.items()}
    gaps = [abs(whole[a] - whole[b]) for a, b in itertools.combinations(names, 2)]
    evals, trained = eval_plan(protocol.pretrain)
    cost = float(np.median(training)) / float(np.median(forward))  # a held-out token, in training tokens
    rows = [
        "| windows | eval tokens | Spearman vs whole split | pairs in the wrong order | largest error of a difference "
        "| paired SE of a difference (median, max) | evals' share of a default trial's pretraining |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in [*(int(c) for c in args.counts.split(",") if int(c) < n_all), n_all]:
        idx = np.unique(np.linspace(0, n_all - 1, n).round().astype(int))
        sub = {k: v[idx].mean() for k, v in losses.items()}
        errors, flips, ses = [], 0, []
        for a, b in itertools.combinations(names, 2):
            errors.append(abs((sub[a] - sub[b]) - (whole[a] - whole[b])))
            flips += int(np.sign(sub[a] - sub[b]) != np.sign(whole[a] - whole[b]))
            ses.append(np.std(losses[a] - losses[b], ddof=1) / math.sqrt(len(idx)) * math.sqrt(1 - len(idx) / n_all))
        rho = spearmanr([whole[k] for k in names], [sub[k] for k in names])[0]
        eval_cost = evals * len(idx) * seq * cost
        rows.append(
            f"| {len(idx)}{' (whole split)' if len(idx) == n_all else ''} | {len(idx) * seq:,} | {rho:.3f} | "
            f"{flips} of {len(errors)} | {max(errors):.4f} | {np.median(ses):.4f}, {max(ses):.4f} | "
            f"{100 * eval_cost / (eval_cost + trained):.0f} % |"
        )
    body = "\n".join(rows) + (
        f"\n\n{len(names)} architectures of `{args.space}` (draws of seed {args.seed}), each trained {args.tokens:,} "
        f"tokens under `{args.trial}` (seq_len {seq}, one seed, no evals on the way); whole-split losses "
        f"{min(whole.values()):.3f}-{max(whole.values()):.3f}, pairwise gaps {min(gaps):.4f} (smallest) to "
        f"{max(gaps):.3f}, median {float(np.median(gaps)):.3f}. The held-out split holds {len(tokens.val):,} tokens "
        f"({n_all} windows). A subset is evenly spaced over the split, as a trial's evals are. Share: a default "
        f"`{args.trial}` trial makes {evals} evals and trains {trained:,} tokens (cool-downs included); a held-out "
        f"token costs {cost:.2f} of a training token here (forward {np.median(forward):,.0f} tokens/s, training "
        f"{np.median(training):,.0f}, medians over the architectures)."
    )
    record(f"eval_windows: held-out windows per eval for `{args.trial}`", body, args.no_record)


if __name__ == "__main__":
    main()
