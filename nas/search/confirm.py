"""The confirmation phase (a protocol's ``confirm: {top: K, seeds: S}``): when a search has its ``n_trials``,
the K best architectures are trained S more times each with new pretraining seeds. The leaderboard then ranks
each by the mean over its runs, and the repeats give the study's seed noise, which marks the trials that tie
with the best (nas.search.ranking).

A confirmation is an Optuna trial enqueued with its original's parameters and the attribute ``confirm``
({of, repeat, seed}). It is never pruned, never counts among the ``n_trials``, and its status is
"confirmation" once trained. The K are the best by their single runs, so they do not move as the means come in.
Several workers may run the phase at once: each enqueues the confirmations that nobody holds, and of two
trials that run the same one, the later-numbered stands down (told FAIL as surplus). A confirmation that
fails GIVE_UP_AFTER times is left out, and the phase ends without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.search.records import Status, TrialRecord, confirm_attrs, confirm_of, status_of

__all__ = ["SEED_STRIDE", "Phase", "protocol_for", "advance", "standing_down_for", "trained_line"]

SEED_STRIDE = 100_003  # a confirmation's pretraining seed: the protocol's + SEED_STRIDE x its repeat
GIVE_UP_AFTER = 2  # failures of one confirmation, then the phase goes on without it


def protocol_for(protocol: Any, repeat: int) -> Any:
    """The protocol a confirmation trains with: the same, with the pretraining seed of its repeat (its own
    checkpoint too, as the content hash changes)."""
    pretrain = protocol.pretrain.model_copy(update={"seed": protocol.pretrain.seed + SEED_STRIDE * repeat})
    return protocol.model_copy(update={"pretrain": pretrain})


@dataclass
class Phase:
    """Where the confirmations stand: ``queued`` wait for a worker, ``running`` are held by one."""

    queued: int = 0
    running: int = 0
    trained: int = 0
    given_up: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return not (self.queued or self.running)

    def line(self) -> str:
        left = f"; left out after {GIVE_UP_AFTER} failures each: {', '.join(self.given_up)}" if self.given_up else ""
        return f"{self.trained} confirmation{'s' if self.trained != 1 else ''} trained{left}"


def advance(study: optuna.Study, protocol: Any, trials: list[FrozenTrial]) -> Phase:
    """Enqueue every confirmation of the protocol's ``confirm`` that no trial holds (trained, running or queued),
    and say where the phase stands. ``trials``: the study's trials, as just read."""
    from nas.search.ranking import rank_records

    phase = Phase()
    if protocol.confirm is None:
        return phase
    records = [TrialRecord.from_trial(t) for t in trials]
    top = rank_records(study, records, pool=False)[: protocol.confirm.top]
    held: dict[tuple[int, int], list[FrozenTrial]] = {}
    for t in trials:
        if (confirm := confirm_of(t)) is not None:
            held.setdefault((confirm["of"], confirm["repeat"]), []).append(t)
    by_number = {t.number: t for t in trials}
    for row in top:
        for repeat in range(1, protocol.confirm.seeds + 1):
            mine = held.get((row.number, repeat), [])
            if any(t.state == TrialState.COMPLETE and status_of(t) == Status.CONFIRMATION for t in mine):
                phase.trained += 1
            elif any(t.state == TrialState.RUNNING for t in mine):
                phase.running += 1
            elif any(t.state == TrialState.WAITING for t in mine):
                phase.queued += 1
            elif sum(t.state == TrialState.FAIL and status_of(t) == Status.FAILED for t in mine) >= GIVE_UP_AFTER:
                phase.given_up.append(f"trial {row.number} repeat {repeat}")
            else:
                seed = protocol.pretrain.seed + SEED_STRIDE * repeat
                study.enqueue_trial(by_number[row.number].params, user_attrs=confirm_attrs(row.number, repeat, seed))
                phase.queued += 1
    return phase


def standing_down_for(study: optuna.Study, trial: FrozenTrial) -> int | None:
    """The trial that holds the same confirmation as ``trial`` (trained, or running with a lower number), if any:
    ``trial`` then stands down. Each writes its claim before reading, so of two at once the later one sees the other."""
    mine = confirm_of(trial)
    if mine is None:
        return None
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        theirs = confirm_of(other)
        if other.number == trial.number or theirs is None or theirs["of"] != mine["of"]:
            continue
        if theirs["repeat"] != mine["repeat"]:
            continue
        if status_of(other) == Status.CONFIRMATION or (
            other.state == TrialState.RUNNING and other.number < trial.number
        ):
            return other.number
    return None


def trained_line(trials: list[FrozenTrial]) -> str:
    """ "; N confirmations trained" for the study's ``trials`` ("" when none is): a search's last line adds it."""
    n = sum(1 for t in trials if t.state == TrialState.COMPLETE and status_of(t) == Status.CONFIRMATION)
    return f"; {Phase(trained=n).line()}" if n else ""
