"""RFC 3339 timestamps in UTC, the only time format the APIs emit."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def format_time(moment: dt.datetime) -> str:
    """Format as `2024-01-15T10:30:00.123Z`: millisecond precision keeps history ordered."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def parse_time(text: str) -> dt.datetime:
    """Parse an RFC 3339 time; a time without an offset is rejected, not guessed.

    Raises ValueError with the reason.
    """
    if not isinstance(text, str) or "T" not in text.upper():
        raise ValueError(f"expected an RFC 3339 time such as 2024-01-15T10:30:00Z, got {text!r}")
    moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset; add Z or +00:00")
    try:
        return moment.astimezone(dt.timezone.utc)
    except OverflowError:
        raise ValueError(f"time {text!r} is outside the years 1 to 9999 in UTC") from None
