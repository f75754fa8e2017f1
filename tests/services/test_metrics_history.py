"""Filling gaps in stored agent samples, which are stored only when they change."""

from __future__ import annotations

import datetime as dt

from caxton.domain.timefmt import format_time, now
from caxton.services.metrics import fill_gaps


def _at(seconds_ago: float) -> str:
    return format_time(now() - dt.timedelta(seconds=seconds_ago))


def test_fill_gaps_repeats_until_next_sample():
    samples = [{"timestamp": _at(60), "n": 1}, {"timestamp": _at(30), "n": 2}]
    filled = fill_gaps(samples, since=_at(100), interval=10)
    assert [sample["n"] for sample in filled] == [1, 1, 1, 2, 2, 2, 2]


def test_fill_gaps_starts_at_since():
    samples = [{"timestamp": _at(300), "n": 7}]
    filled = fill_gaps(samples, since=_at(50), interval=10)
    # One sample per 10 s over the last 50 s: 5, or 6 when one lands exactly on `since`.
    assert 5 <= len(filled) <= 6
    assert all(sample["n"] == 7 for sample in filled)


def test_fill_gaps_empty():
    assert fill_gaps([], since=_at(10), interval=10) == []
