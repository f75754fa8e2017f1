"""Per-token rate limits as a pure state machine that takes the current time as an argument.

A `RateLimiter` keeps one bucket per (principal identity, category). Each bucket runs the
generic cell rate algorithm (GCRA), a token bucket stored as a single number: the theoretical
arrival time (TAT) of the next request. A rate of `count` per `period` seconds admits a burst
of `count` requests, then one more every `period / count` seconds. A rejected request leaves
the bucket unchanged.

Nothing here reads a clock or does I/O. Callers pass `now` in seconds from a monotonic clock,
so tests step time by hand.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs

_NANOSECONDS_PER_SECOND = 1_000_000_000
# Buckets the limiter keeps before it evicts. Principals come from the configured tokens and
# each has at most one bucket per category (four), so real servers stay far below this.
# At the bound the table takes about 3 MB (tracemalloc, CPython 3.11, 10,000 identities).
MAX_BUCKETS = 10_000


class Category(enum.StrEnum):
    """A group of operations that share one limit. The first three are named after `rate_limits` settings."""

    AGENT_OPERATIONS = "agent_operations"
    MESSAGES = "messages"
    METRICS = "metrics"
    DEFAULT = "default"


def _check_period(_instance: Any, _attribute: Any, period: float) -> None:
    if not math.isfinite(period) or period < 1 / _NANOSECONDS_PER_SECOND:
        raise ValueError(f"rate period must be a finite number of seconds, at least 1 ns, got {period!r}")


@attrs.frozen
class Rate:
    """A limit of `count` requests per `period` seconds, with bursts of up to `count`."""

    count: int = attrs.field(validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)])
    period: float = attrs.field(converter=float, validator=_check_period)

    def __str__(self) -> str:
        """Format as the settings write it: `10/min`, `1000/s`, `5/hour`, else `3/2.5s`."""
        units = {1.0: "s", 60.0: "min", 3600.0: "hour"}
        if self.period in units:
            return f"{self.count}/{units[self.period]}"
        return f"{self.count}/{self.period:g}s"


def _to_rate(value: Rate | tuple[int, float]) -> Rate:
    """Accept a `Rate` or the `(count, period_seconds)` tuple that `Settings` holds."""
    if isinstance(value, Rate):
        return value
    count, period = value
    return Rate(count, period)


# The limit for requests outside the three categories the API reference names. The reference
# shows GET /agents reporting `X-RateLimit-Limit: 1000` without a period or a setting. At 1000
# per second it leaves room for polling clients but still stops a runaway loop.
# NOTE: the per-second period is a choice, not from the reference, and no setting changes it.
DEFAULT_RATE = Rate(1000, 1.0)


@attrs.frozen
class RateLimits:
    """The rate for each category; the defaults are those of the API reference."""

    agent_operations: Rate = attrs.field(default=Rate(10, 60.0), converter=_to_rate)
    messages: Rate = attrs.field(default=Rate(1000, 1.0), converter=_to_rate)
    metrics: Rate = attrs.field(default=Rate(100, 60.0), converter=_to_rate)
    default: Rate = attrs.field(default=DEFAULT_RATE, converter=_to_rate)

    def for_category(self, category: Category) -> Rate:
        return getattr(self, category.value)


@attrs.frozen
class Decision:
    """The outcome of one check.

    `remaining` counts the further requests admitted at once (0 when rejected), and
    `retry_after` is the seconds until a rejected request would be admitted (0.0 when allowed).
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after: float


def _to_nanoseconds(seconds: float) -> int:
    return round(seconds * _NANOSECONDS_PER_SECOND)


class Bucket:
    """The GCRA state for one (principal, category).

    All arithmetic is on integers in units of 1/count nanoseconds. In those units the
    emission interval (`period / count`) is exactly `period` in nanoseconds, so a long run of
    requests adds no rounding error. Floats can drift by several nanoseconds over a thousand
    additions at clock readings near 1e5 s, which is enough to flip a decision at the boundary.
    """

    __slots__ = ("rate", "_interval", "_window", "_tat")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._interval = _to_nanoseconds(rate.period)
        # The full burst: `count` intervals, which is the period in these units.
        self._window = self._interval * rate.count
        # None until the first request, so any `now`, even a negative one, starts a full bucket.
        self._tat: int | None = None

    def _scaled(self, now: float) -> int:
        return _to_nanoseconds(now) * self.rate.count

    def check(self, now: float) -> Decision:
        """Admit one request at `now` and return the decision. A rejection changes nothing."""
        now_scaled = self._scaled(now)
        start = now_scaled if self._tat is None else max(self._tat, now_scaled)
        tat = start + self._interval
        count = self.rate.count
        if tat - now_scaled > self._window:
            wait = tat - self._window - now_scaled
            retry_after = wait / count / _NANOSECONDS_PER_SECOND
            return Decision(allowed=False, limit=count, remaining=0, retry_after=retry_after)
        self._tat = tat
        remaining = (self._window - (tat - now_scaled)) // self._interval
        return Decision(allowed=True, limit=count, remaining=remaining, retry_after=0.0)

    def full_at(self) -> float:
        """Return the time, in the caller's seconds, at which the whole burst is available again."""
        if self._tat is None:
            return -math.inf
        return self._tat / self.rate.count / _NANOSECONDS_PER_SECOND

    def is_full(self, now: float) -> bool:
        """Return whether the whole burst is available at `now`, so the bucket equals a new one."""
        return self._tat is None or self._tat <= self._scaled(now)


class RateLimiter:
    """Buckets keyed by (principal identity, category), at most `max_buckets` of them.

    When a new key arrives at the bound, every full bucket is evicted. A full bucket behaves
    exactly like a new one, so evicting it loses nothing. Only when no bucket is full does the
    limiter evict the one nearest to full. That principal then gets its burst back early, and
    `forced_evictions` counts these events so the caller can log them.
    """

    def __init__(self, limits: RateLimits | None = None, *, max_buckets: int = MAX_BUCKETS) -> None:
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be at least 1, got {max_buckets}")
        self.limits = limits or RateLimits()
        self.max_buckets = max_buckets
        self.forced_evictions = 0
        self._buckets: dict[tuple[str, Category], Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, principal: str, category: Category, now: float) -> Decision:
        """Admit or reject one request by `principal` in `category` at `now` (seconds)."""
        key = (principal, category)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._evict(now)
            bucket = Bucket(self.limits.for_category(category))
            self._buckets[key] = bucket
        return bucket.check(now)

    def _evict(self, now: float) -> None:
        full = [key for key, bucket in self._buckets.items() if bucket.is_full(now)]
        for key in full:
            del self._buckets[key]
        if full:
            return
        nearest = min(self._buckets, key=lambda key: self._buckets[key].full_at())
        del self._buckets[nearest]
        self.forced_evictions += 1
