"""Resumable training state in one folder: written atomically, read back on the same or another device.

Each save is a complete ``step-XXXXXXXX/`` folder (``model.safetensors`` with the weights,
``state.pt`` with the optimiser, step, learning curve and RNG state), written under a temporary
name and renamed into place, so a kill at any moment leaves the previous complete save; older
saves are then removed. The step is also the data position (batches are a pure function of
(seed, step)) and the schedule's position (the learning rate is a function of the step).

A trial keeps one under ``runs/<study>/checkpoints/<arch hash>-<protocol hash>/``; a re-run of the
same architecture under the same protocol resumes from it. `nas train` keeps one in its output folder.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import torch

__all__ = ["Checkpoint", "cpu_copy", "rng_state", "set_rng_state"]

WEIGHTS = "model.safetensors"
STATE = "state.pt"


class Checkpoint:
    def __init__(self, folder: Path, every: int, key: str = "", keep: int = 1) -> None:
        if every < 1:
            raise ValueError(f"checkpoint every {every} steps: must be >= 1")
        self.folder = Path(folder)
        self.every = every
        self.key = key  # what the state belongs to; a state saved for another key is ignored
        self.keep = keep

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def saves(self) -> list[Path]:
        """Complete saves, newest first."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.glob("step-*") if (p / WEIGHTS).is_file() and (p / STATE).is_file()]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def load(self, device: torch.device | str = "cpu") -> dict[str, Any] | None:
        from safetensors.torch import load_file

        for save in self.saves():
            state = torch.load(save / STATE, map_location=device, weights_only=True)
            if state.get("key", "") != self.key:
                return None
            state["model"] = load_file(save / WEIGHTS, device=str(device))
            return state
        return None

    def save(self, state: dict[str, Any]) -> Path:
        from safetensors.torch import save_file

        state = dict(state)
        weights = {k: v.detach().contiguous().clone() for k, v in state.pop("model").items()}  # tied: saved twice
        step = int(state["step"])
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".step-{step:08d}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(weights, tmp / WEIGHTS, metadata={"step": str(step), "key": self.key})
        torch.save({**state, "key": self.key}, tmp / STATE)
        final = self.folder / f"step-{step:08d}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # a reader never sees half a save; a kill mid-write leaves the last one
        for old in self.saves()[self.keep :]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def cpu_copy(state: Any) -> Any:
    """A deep copy of a state dict with every tensor on the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: cpu_copy(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(cpu_copy(v) for v in state)
    return copy.deepcopy(state)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
