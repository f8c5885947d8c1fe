"""What a search reports: its summary and last line, the interrupt that carries it, and the callbacks the
CLI listens to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

__all__ = ["Callbacks", "SearchInterrupted", "SearchSummary", "stopped_line"]


@dataclass
class SearchSummary:
    study: optuna.Study
    trained: int
    new_trained: int
    stopped_because: str
    run_dir: Path
    elapsed: float
    n_trials: int = 0

    @property
    def complete(self) -> bool:
        return self.trained >= self.n_trials

    @property
    def final_line(self) -> str:
        """What the search did: "N trials trained (...)", or why it stopped short and how to go on."""
        return (
            self.stopped_because if self.complete else stopped_line(self.trained, self.n_trials, self.stopped_because)
        )


def stopped_line(trained: int, n_trials: int, reason: str) -> str:
    """The last line of a search that stopped short of ``n_trials`` trained trials."""
    return f"stopped after {trained} of {n_trials} trained trials: {reason}; re-run the same command to continue"


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C ended the search (still a KeyboardInterrupt); ``summary`` says where the study stood."""

    def __init__(self, summary: SearchSummary) -> None:
        super().__init__(summary.final_line)
        self.summary = summary


@dataclass
class Callbacks:
    """What the CLI listens to (all optional)."""

    trial_started: Callable[[int, str], None] = lambda number, summary: None
    stage: Callable[[str], None] = lambda name: None
    step: Callable[[int, float, float], None] = lambda step, loss, tps: None
    trial_finished: Callable[[FrozenTrial, optuna.Study], None] = lambda trial, study: None
    log: Callable[[str], None] = lambda line: None
