"""A search trial's checkpoint: saves hold Ctrl-C until complete, and a save the disk refuses is skipped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.search.config import SearchConfig
from nas.search.workers import sigint


def held_checkpoint(config: SearchConfig, arch: Any, log: Callable[[str], None]) -> Any:
    """The trial's checkpoint (None when off); a save in progress holds Ctrl-C until it is complete. A save
    that the disk refuses (full) is skipped: training goes on, and a retry resumes from an earlier save."""
    from nas.train.checkpoint import Checkpoint

    class HeldCheckpoint(Checkpoint):
        def save(self, state: dict[str, Any]) -> Path | None:
            with sigint.held():
                try:
                    return super().save(state)
                except OSError as exc:
                    log(f"checkpoint at step {state.get('step')} not saved ({exc.strerror or exc}); training goes on")
                    return None

    every = config.protocol.pretrain.eval_every if config.checkpoint_every is None else config.checkpoint_every
    key = f"{arch.arch_hash()}-{config.protocol.content_hash}"
    return HeldCheckpoint(config.run_dir / "checkpoints" / key, every, key=key) if every else None
