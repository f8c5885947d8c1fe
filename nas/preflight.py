"""Everything about a study's inputs that can be checked without training, checked once before it starts.

A bad task file, a corpus too short for one sequence, or a ``seq_len`` longer than the space's
architectures allow would otherwise fail every trial after its pretraining; here it costs seconds
and one message naming the file and key (exit 2). ``nas search`` runs this before the first trial,
``nas protocols run`` before its trial, and ``nas protocols validate --data`` on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas.errors import NasInputError
from nas.userfiles import check_file, expand_paths

if TYPE_CHECKING:
    from nas.arch import ArchConfig
    from nas.protocol import TrialProtocol
    from nas.space import SearchSpace

__all__ = ["check_inputs", "check_seq_len", "check_space_fits"]

PROBE = 64  # architectures drawn to check the space against the protocol


def check_seq_len(protocol: TrialProtocol, archs: list[ArchConfig], what: str) -> None:
    """Refuse a protocol whose ``pretrain.seq_len`` exceeds the ``max_seq_len`` of any of ``archs`` (from ``what``)."""
    seq_len = protocol.pretrain.seq_len
    short = sorted({a.max_seq_len for a in archs if a.max_seq_len < seq_len})
    if short:
        lengths = ", ".join(map(str, short))
        raise NasInputError(
            protocol.source,
            [
                (
                    "pretrain.seq_len",
                    f"{seq_len} exceeds max_seq_len {lengths} of {what}; lower pretrain.seq_len "
                    "(--set pretrain.seq_len=N) or raise max_seq_len in the space",
                )
            ],
        )


def check_space_fits(protocol: TrialProtocol, space: SearchSpace) -> None:
    """:func:`check_seq_len` on a sample of ``space``: what a dry run checks too, since it reads no data."""
    from nas.space import random_samples

    archs = [s.arch for s in random_samples(space, PROBE, 0) if s.arch is not None]
    check_seq_len(protocol, archs, f"architectures of space '{space.name}' ({space.source})")


def check_inputs(
    protocol: TrialProtocol, space: SearchSpace | None = None, arch: ArchConfig | None = None
) -> dict[str, int]:
    """Read and parse the corpus and every enabled task's data, check that each split of the corpus holds at
    least one training sequence, and that ``seq_len`` fits ``space`` (a sample of it) or ``arch``.

    Returns the token counts ``{"train": n, "val": n}``; raises NasInputError naming the file and key.
    The corpus is tokenized and cached as a trial would (nas.data.tokens), so the first trial reuses it.
    """
    from nas.data.tasks import load_task_set
    from nas.data.tokens import prepare_tokens

    if arch is not None:
        check_seq_len(protocol, [arch], "the architecture")
    if space is not None:
        check_space_fits(protocol, space)
    if protocol.data.files is not None and protocol.data.source == "files":
        key = "data.files.paths"
        for path in expand_paths(protocol.data.files.paths, protocol.source, key):  # before the cache key
            check_file(path, protocol.source, key)
    for task in protocol.tasks:
        load_task_set(task, protocol.source)
    tokens = prepare_tokens(protocol)
    counts = {"train": len(tokens.train), "val": len(tokens.val)}
    need = protocol.pretrain.seq_len + 1  # inputs and their next-token targets
    for split, count in counts.items():
        if count < need:
            key = "data.validation.fraction" if split == "val" else "data"
            raise NasInputError(
                protocol.source,
                [
                    (
                        key,
                        f"the corpus's {split} split holds {count} tokens, fewer than one sequence "
                        f"(pretrain.seq_len + 1 = {need}); give more text or a shorter seq_len",
                    )
                ],
            )
    return counts
