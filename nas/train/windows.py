"""Which token windows a pretraining run reads: the training batch of each step, a pure function of
(seed, step), and the held-out windows every eval scores."""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["batch_at", "eval_windows"]


def batch_at(ids: np.ndarray, step: int, batch_size: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch of ``step``, a pure function of (seed, step), so a run can resume at any step
    and two architectures see the same data.

    The corpus is cut into windows of ``seq_len + 1`` tokens, read in a shuffled order without
    repeats: a run sees every window once before it sees any twice (each pass, an "epoch", has its
    own order and its own offset of the window boundaries).
    """
    n_windows = max(1, (len(ids) - 1) // seq_len - 1)  # one spare, so every epoch's offset fits
    first = step * batch_size
    limit = max(0, len(ids) - seq_len - 1)  # a corpus of under two windows: the offset must still fit
    starts = [min(limit, _window_start(i, n_windows, seq_len, seed)) for i in range(first, first + batch_size)]
    windows = np.stack([ids[s : s + seq_len + 1] for s in starts]).astype(np.int64)
    chunk = torch.from_numpy(windows)
    return chunk[:, :-1], chunk[:, 1:]


def _window_start(index: int, n_windows: int, seq_len: int, seed: int) -> int:
    epoch, position = divmod(index, n_windows)
    order, offset = _epoch_order(seed, epoch, n_windows, seq_len)
    return int(order[position]) * seq_len + offset


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, n_windows: int, seq_len: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng([seed, epoch, n_windows])
    return rng.permutation(n_windows), int(rng.integers(0, seq_len))


def eval_windows(val: np.ndarray, seq_len: int, eval_tokens: int) -> list[np.ndarray]:
    """``eval_tokens // seq_len`` windows of ``seq_len + 1`` tokens, evenly spaced over ``val``; they
    never overlap, since at most ``(len(val) - 1) // seq_len`` are taken."""
    n_windows = max(1, min(eval_tokens, len(val) - 1) // seq_len)
    last = max(0, len(val) - seq_len - 1)
    starts = np.linspace(0, last, n_windows).astype(np.int64) if n_windows > 1 else np.zeros(1, dtype=np.int64)
    windows = [val[s : s + seq_len + 1] for s in starts]
    return [w for w in windows if len(w) == seq_len + 1]
