"""nas.search.usage: where a search's time went, by phase and by placement."""

from __future__ import annotations

import math

from nas.search.records import TrialRecord
from nas.search.usage import busy_seconds, by_placement, placement_lines


def trial(number: int, device: str | None, sharing: int, start: float, end: float, speed: float) -> TrialRecord:
    placement = None if device is None else {"device": device, "sharing": sharing}
    return TrialRecord(
        number,
        "complete",
        "trained",
        [1.0],
        metrics={"tokens_per_second": speed},
        placement=placement,
        started=start,
        finished=end,
    )


def test_trials_per_hour_and_speed_by_placement():
    records = [
        trial(0, "0", 4, 0, 900, 1000.0),  # four workers on GPU 0: four trials in the same 15 minutes
        trial(1, "0", 4, 0, 900, 1200.0),
        trial(2, "0", 4, 60, 900, 1100.0),
        trial(3, "0", 4, 100, 1800, 900.0),
        trial(4, "0", 1, 0, 1800, 4000.0),  # one worker alone: one trial in 30 minutes
        trial(5, None, 1, 0, 10, 5.0),  # a worker started by hand: no placement, not counted
        TrialRecord(6, "fail", "failed", None, placement={"device": "0", "sharing": 4}, started=0, finished=5),
    ]
    alone, packed = by_placement(records)
    assert (alone.device, alone.sharing, alone.trained) == ("0", 1, 1) and alone.trials_per_hour == 2.0
    assert (packed.sharing, packed.trained) == (4, 4) and packed.trials_per_hour == 8.0  # 4 trials in half an hour
    assert packed.tokens_per_second == 1050.0  # the median trial: each one runs slower when sharing
    assert placement_lines([packed]) == [
        "GPU 0, 4 workers: 4 trials trained, 8.0 trials/h, 1,050 tokens/s per trial (median)"
    ]
    cpu = by_placement([trial(0, "cpu", 2, 0, 0, math.nan)])[0]
    assert cpu.where == "CPU, 2 workers" and math.isnan(cpu.trials_per_hour) and math.isnan(cpu.tokens_per_second)


def test_the_report_says_where_the_trials_ran():
    from nas.report.figures import time_text

    records = [trial(n, "0", 2, 0, 1800, 100.0) for n in range(2)]
    for r in records:
        r.phase_seconds = {"pretrain": 60.0, "other": 6.0}
    text = time_text(records)
    assert "2.2 trial-minutes over 2 trained trials" in text
    assert "<li>GPU 0, 2 workers: 2 trials trained, 4.0 trials/h" in text
    assert "Where the trials ran" not in time_text([trial(0, None, 1, 0, 1, 1.0)])


def test_busy_time_leaves_out_the_gap_of_a_resumed_study():
    assert busy_seconds([]) == 0.0
    assert busy_seconds([(0, 10), (5, 20), (8, 9), (30, 40)]) == 30.0  # overlaps once, a gap of 10 s left out
    # two trials an hour, then the study resumed a day later for two more: 4 trials in 2 busy hours
    records = [trial(i, "cpu", 1, start, start + 1800, 10.0) for i, start in enumerate([0, 1800, 86400, 88200])]
    (use,) = by_placement(records)
    assert use.hours == 2.0 and use.trials_per_hour == 2.0
