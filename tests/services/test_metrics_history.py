"""Filling gaps in stored agent samples, which are stored only when they change."""

from __future__ import annotations

import datetime as dt

from caxton.domain.timefmt import format_time, now
from caxton.services.metrics import fill_gaps


def _at(seconds_ago: float) -> str:
    return format_time(now() - dt.timedelta(seconds=seconds_ago))


def test_fill_gaps_repeats_until_next_sample():
    # Times sit 5 s off the 10 s grid, so clock reads between the lines change nothing.
    samples = [{"timestamp": _at(65), "n": 1}, {"timestamp": _at(35), "n": 2}]
    filled = fill_gaps(samples, since=_at(100), interval=10)
    assert [sample["n"] for sample in filled] == [1, 1, 1, 2, 2, 2, 2]


def test_fill_gaps_starts_at_since():
    samples = [{"timestamp": _at(305), "n": 7}]
    filled = fill_gaps(samples, since=_at(52), interval=10)
    # Repeats fall 45, 35, 25, 15 and 5 seconds ago; the one 55 seconds ago is before `since`.
    assert len(filled) == 5
    assert all(sample["n"] == 7 for sample in filled)


def test_fill_gaps_empty():
    assert fill_gaps([], since=_at(10), interval=10) == []
