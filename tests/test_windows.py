import numpy as np
import torch

from nas.train.windows import batch_at, eval_windows


def test_batches_are_a_pure_function_of_seed_and_step():
    ids = np.arange(1000, dtype=np.uint16)
    x, y = batch_at(ids, 5, 4, 16, seed=0)
    assert x.shape == y.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))
    assert torch.equal(batch_at(ids, 5, 4, 16, seed=0)[0], x)
    assert not torch.equal(batch_at(ids, 6, 4, 16, seed=0)[0], x)


def test_an_epoch_reads_every_window_once_before_any_twice():
    ids = np.arange(1601, dtype=np.int64)  # 100 windows of 16 (+1), one kept spare for the epoch offset
    seq, batch, n_windows = 16, 9, 99
    starts = []
    for step in range(25):  # 225 windows: two full epochs and a part
        x, _ = batch_at(ids, step, batch, seq, seed=3)
        starts += [int(row[0]) for row in x]
    first, second = starts[:n_windows], starts[n_windows : 2 * n_windows]
    assert len(set(first)) == n_windows and len(set(second)) == n_windows  # no repeat inside an epoch
    assert len({s % seq for s in first}) == 1 and len({s % seq for s in second}) == 1  # one offset per epoch
    assert first != second  # each epoch has its own order (and offset)
    assert all(0 <= s <= len(ids) - seq - 1 for s in starts)


def test_a_corpus_shorter_than_two_windows_still_gives_full_windows():
    ids = np.arange(20, dtype=np.int64)
    for step in range(5):
        x, y = batch_at(ids, step, 3, 16, seed=step)
        assert x.shape == (3, 16) and torch.equal(y - x, torch.ones_like(x))


def test_eval_windows_are_spread_over_the_whole_held_out_split():
    val = np.arange(10_001, dtype=np.int64)
    windows = eval_windows(val, 100, 1000)  # 10 windows out of 100 possible
    starts = [int(w[0]) for w in windows]
    assert len(windows) == 10 and all(len(w) == 101 for w in windows)
    assert starts[0] == 0 and starts[-1] == len(val) - 101  # from the first document to the last
    assert all(b - a >= 100 for a, b in zip(starts, starts[1:], strict=False))  # never overlapping
    every = eval_windows(val[:1001], 100, 10**6)  # more asked than there is: all 10, back to back
    assert [int(w[0]) for w in every] == list(range(0, 1000, 100))
