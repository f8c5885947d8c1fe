"""Where a search's time went: seconds by phase over the trained trials, and throughput by placement
(the device a worker ran on and how many workers shared it), as `nas status` and the report show them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from nas.search.records import TrialRecord

__all__ = ["PlacementUse", "busy_seconds", "by_placement", "placement_lines", "time_by_phase", "time_shares"]


def time_by_phase(records: Iterable[TrialRecord]) -> dict[str, float]:
    """Where the search's time went: each phase's seconds summed over the trained trials ("other" last)."""
    total: dict[str, float] = {}
    for record in records:
        if record.trained:
            for name, seconds in record.phase_seconds.items():
                total[name] = total.get(name, 0.0) + seconds
    if "other" in total:
        total["other"] = total.pop("other")
    return total


def time_shares(phase_seconds: dict[str, float]) -> str:
    """ "pretrain 61 % · task qa 20 % · …": the phases by their share of the total, largest first (under
    0.5 % left out); "" when no time was recorded."""
    total = sum(phase_seconds.values())
    if total <= 0:
        return ""
    ranked = sorted(phase_seconds.items(), key=lambda item: -item[1])
    return " · ".join(f"{name} {100 * seconds / total:.0f} %" for name, seconds in ranked if seconds >= total / 200)


@dataclass(frozen=True)
class PlacementUse:
    """The trained trials of one placement: ``device`` ("0", "cpu") shared by ``sharing`` workers."""

    device: str
    sharing: int
    trained: int
    hours: float  # busy time: the union of its trials' [start, end] spans (a resumed study's idle gap left out)
    tokens_per_second: float  # median over the trials: one trial's pretraining speed

    @property
    def trials_per_hour(self) -> float:
        return self.trained / self.hours if self.hours > 0 else float("nan")

    @property
    def where(self) -> str:
        device = "CPU" if self.device == "cpu" else f"GPU {self.device}"
        return f"{device}, {self.sharing} worker{'s' if self.sharing > 1 else ''}"


def by_placement(records: Iterable[TrialRecord]) -> list[PlacementUse]:
    """The trained trials grouped by placement (those of workers `nas search` started), by device then sharing."""
    groups: dict[tuple[str, int], list[TrialRecord]] = {}
    for r in records:
        if r.trained and r.placement is not None and r.started is not None and r.finished is not None:
            groups.setdefault((r.placement["device"], r.placement["sharing"]), []).append(r)
    uses = []
    for (device, sharing), group in sorted(groups.items()):
        spans = [(r.started, r.finished) for r in group if r.started is not None and r.finished is not None]
        speeds = [r.metric("tokens_per_second") for r in group]
        speed = statistics.median([s for s in speeds if s == s] or [float("nan")])
        uses.append(PlacementUse(device, sharing, len(group), busy_seconds(spans) / 3600, speed))
    return uses


def busy_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """The length of the union of the [start, end] ``spans``: time when at least one of them ran."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def placement_lines(uses: list[PlacementUse]) -> list[str]:
    """One line per placement: "GPU 0, 4 workers: 12 trials trained, 40.3 trials/h, 52,100 tokens/s per trial"."""
    return [
        f"{u.where}: {u.trained} trials trained, {u.trials_per_hour:,.1f} trials/h, "
        f"{u.tokens_per_second:,.0f} tokens/s per trial (median)"
        for u in uses
    ]
