"""Resumable training state in one folder: written atomically, read back on the same or another device.

Each save is a complete ``step-XXXXXXXX/`` folder (``model.safetensors`` with the weights,
``state.pt`` with the optimiser, step, learning curve and RNG state), written under a temporary
name and renamed into place, so a kill at any moment leaves the previous complete save; older
saves are then removed (renamed out of sight first, so a kill never leaves half of one). The step
is also the data position (batches are a pure function of (seed, step)) and the schedule's position
(the learning rate is a function of the step).

A trial keeps one under ``runs/<study>/checkpoints/<arch hash>-<protocol hash>/``; a re-run of the
same architecture under the same protocol resumes from it. `nas train` keeps one in its output folder.

A newest save that does not read back (a file missing, truncated or corrupt, a field of the wrong
type, weights of another shape) is a NasInputError naming the file: resuming never starts over
silently, and never crashes inside the training loop.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasInputError
from nas.train.outcome import EvalPoint

if TYPE_CHECKING:
    import torch

__all__ = ["Checkpoint", "cpu_copy", "rng_state", "set_rng_state"]

WEIGHTS = "model.safetensors"
STATE = "state.pt"


class Checkpoint:
    def __init__(
        self,
        folder: Path,
        every: int,
        key: str = "",
        keep: int = 1,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"checkpoint every {every} steps: must be >= 1")
        self.folder = Path(folder)
        self.every = every
        self.key = key  # what the state belongs to; a state saved for another key is ignored
        self.keep = keep
        self.shapes = shapes  # the model's tensors: a save whose weights differ is damaged

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def saves(self) -> list[Path]:
        """Saves, newest first (a save missing a file is listed: reading it names the file)."""
        if not self.folder.is_dir():
            return []
        return sorted((p for p in self.folder.glob("step-*") if p.is_dir()), key=lambda p: p.name, reverse=True)

    def load(self, device: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The newest save's state with its weights under "model"; None when there is none, or it was
        saved for another key. A damaged save is a NasInputError naming its file."""
        saves = self.saves()
        if not saves:
            return None
        state = _read_state(saves[0], device, mmap=False, hint=self._older(saves))
        if state.get("key", "") != self.key:
            return None
        state["model"] = _read_weights(saves[0], device, self.shapes, self._older(saves))
        return state

    def check(self) -> int | None:
        """Check the newest save without loading its tensors (memory-mapped state, the weights' header);
        its step, or None when there is no save. A damaged save is a NasInputError naming its file."""
        from safetensors import safe_open

        saves = self.saves()
        if not saves:
            return None
        hint = self._older(saves)
        state = _read_state(saves[0], "cpu", mmap=True, hint=hint)
        path = _weights_file(saves[0], hint)
        try:
            with safe_open(str(path), "pt") as weights:
                weights.keys()
        except Exception as exc:  # safetensors raises its own error types for a bad header or size
            raise _damaged(path, exc, hint) from None
        return int(state["step"])

    @staticmethod
    def _older(saves: list[Path]) -> str:
        """What to do about a damaged newest save: remove it, and resume from the one before or the start."""
        return f"remove {saves[0]} to resume from {saves[1].name if len(saves) > 1 else 'the start'}"

    def save(self, state: dict[str, Any]) -> Path | None:
        """Write ``state`` as the newest save; its folder (None: a subclass skipped it, e.g. on a full disk)."""
        import torch
        from safetensors.torch import save_file

        state = dict(state)
        weights = {k: v.detach().contiguous().clone() for k, v in state.pop("model").items()}  # tied: saved twice
        step = int(state["step"])
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".step-{step:08d}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            save_file(weights, tmp / WEIGHTS, metadata={"step": str(step), "key": self.key})
            torch.save({**state, "key": self.key}, tmp / STATE)
        except BaseException:  # a full disk, say: the half-written save goes, the last complete one stays
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = self.folder / f"step-{step:08d}"
        _discard(final)  # a save of the same step (a resumed run's last)
        os.replace(tmp, final)  # a reader never sees half a save; a kill mid-write leaves the last one
        for old in self.saves()[self.keep :]:
            _discard(old)
        return final

    def clear(self) -> None:
        _discard(self.folder)


def _discard(path: Path) -> None:
    """Remove a folder so that no reader sees half of it: renamed out of sight (atomic), then deleted."""
    hidden = path.with_name(f".{path.name}.{os.getpid()}.removed")
    shutil.rmtree(hidden, ignore_errors=True)  # left by a kill in an earlier removal
    try:
        os.replace(path, hidden)
    except FileNotFoundError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


def _damaged(path: Path, exc: BaseException | str, hint: str) -> NasInputError:
    why = exc if isinstance(exc, str) else f"cannot be read ({type(exc).__name__}): truncated or corrupt"
    return NasInputError(path, f"{why}; {hint}")


def _weights_file(save: Path, hint: str) -> Path:
    path = save / WEIGHTS
    if not path.is_file():
        raise _damaged(path, "missing (the save is incomplete)", hint)
    return path


def _read_state(save: Path, device: torch.device | str, mmap: bool, hint: str) -> dict[str, Any]:
    """``state.pt`` of one save, its fields checked."""
    import torch

    path = save / STATE
    if not path.is_file():
        raise _damaged(path, "missing (the save is incomplete)", hint)
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as exc:  # zip, pickle and I/O errors alike: the file does not read back
        raise _damaged(path, exc, hint) from None
    if not isinstance(state, dict):
        raise _damaged(path, f"holds a {type(state).__name__}, not a checkpoint state", hint)
    problems = _state_problems(state)
    if problems:
        raise NasInputError(path, [*problems, ("", hint)])
    if save.name != f"step-{state['step']:08d}":
        raise _damaged(path, f"step {state['step']} does not match its folder {save.name}", hint)
    return state


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _state_problems(state: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, problem) for each field of a saved state that is missing or not what pretraining reads."""
    point_keys = {f.name for f in fields(EvalPoint)} - {"rung"}  # a rung's point is never in the curve

    def point(p: Any) -> bool:
        return isinstance(p, dict) and set(p) == point_keys and all(map(_number, p.values()))

    def pair(p: Any) -> bool:
        return isinstance(p, list | tuple) and len(p) == 2 and all(map(_number, p))

    def optimizer(o: Any) -> bool:
        return isinstance(o, dict) and isinstance(o.get("state"), dict) and isinstance(o.get("param_groups"), list)

    def rng(r: Any) -> bool:
        import torch

        return isinstance(r, dict) and isinstance(r.get("torch"), torch.Tensor) and r["torch"].dtype == torch.uint8

    checks: list[tuple[str, Callable[[Any], bool], str, bool]] = [  # (field, valid, what it must be, required)
        ("key", lambda v: isinstance(v, str), "a string", False),
        ("step", _count, "a whole number >= 0", True),
        ("train_seconds", lambda v: _number(v) and math.isfinite(v), "a finite number", True),
        (
            "curve",
            lambda v: isinstance(v, list) and all(map(point, v)),
            f"a list of eval points {sorted(point_keys)}",
            True,
        ),
        ("optimizer", optimizer, "an optimizer state (state, param_groups)", True),
        ("rng", rng, "the random generators' state", True),
        ("annealed", lambda v: isinstance(v, list) and all(map(pair, v)), "a list of [tokens, loss] pairs", False),
        ("cooldown_seconds", _number, "a number", False),
        ("rung", lambda v: v is None or _count(v), "a rung index", False),
        ("cooldown_tokens", _count, "a whole number >= 0", False),
        ("eval_seconds", _number, "a number", False),
    ]
    problems = []
    for name, valid, what, required in checks:
        if name not in state:
            if required:
                problems.append((name, "missing"))
        elif not valid(state[name]):
            problems.append((name, f"must be {what} (got {type(state[name]).__name__})"))
    return problems


def _read_weights(
    save: Path, device: torch.device | str, shapes: Mapping[str, tuple[int, ...]] | None, hint: str
) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = _weights_file(save, hint)
    try:
        weights = load_file(path, device=str(device))
    except Exception as exc:  # safetensors raises its own error types for a bad header or size
        raise _damaged(path, exc, hint) from None
    if shapes is not None:
        found = {name: tuple(t.shape) for name, t in weights.items()}
        wrong = sorted(set(found) ^ set(shapes)) or sorted(n for n in found if found[n] != tuple(shapes[n]))
        if wrong:
            shown = ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else "")
            raise _damaged(path, f"its tensors do not match the model's ({shown})", hint)
    return weights


def cpu_copy(state: Any) -> Any:
    """A deep copy of a state dict with every tensor on the CPU."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: cpu_copy(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(cpu_copy(v) for v in state)
    return copy.deepcopy(state)


def rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
