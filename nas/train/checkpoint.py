"""Resumable training state in one folder: written atomically, read back on the same or another device.

A trial keeps one under ``runs/<study>/checkpoints/<arch hash>-<protocol hash>/``: weights, optimiser,
step (the data position: batches are a pure function of (seed, step)), the learning curve so far and
the RNG state. A re-run of the same architecture under the same protocol resumes from it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = ["Checkpoint", "rng_state", "set_rng_state"]

STATE = "state.pt"


class Checkpoint:
    def __init__(self, folder: Path, every: int, key: str = "") -> None:
        if every < 1:
            raise ValueError(f"checkpoint every {every} steps: must be >= 1")
        self.folder = Path(folder)
        self.every = every
        self.key = key  # what the state belongs to; a state saved for another key is ignored

    @property
    def path(self) -> Path:
        return self.folder / STATE

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def load(self, device: torch.device | str = "cpu") -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location=device, weights_only=True)
        return state if state.get("key", "") == self.key else None

    def save(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{STATE}.{os.getpid()}.tmp"
        torch.save({**state, "key": self.key}, tmp)
        os.replace(tmp, self.path)  # a reader never sees half a file; a kill mid-write leaves the old one

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
