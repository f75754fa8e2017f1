"""Rate-limit buckets and the limiter, driven by hand-set times: no clock, no sockets."""

from __future__ import annotations

import pytest

from caxton.domain.ratelimit import Bucket, Category, Decision, Rate, RateLimiter, RateLimits

# A monotonic-clock reading of about eleven days, where a float resolves only about 0.1 ns.
LATE = 1_000_000.0


def test_burst_then_reject():
    bucket = Bucket(Rate(10, 60.0))
    remaining = [bucket.check(100.0).remaining for _ in range(10)]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    rejected = bucket.check(100.0)
    assert rejected == Decision(allowed=False, limit=10, remaining=0, retry_after=6.0)


def test_refill_one_interval():
    bucket = Bucket(Rate(10, 60.0))
    for _ in range(10):
        assert bucket.check(0.0).allowed
    assert not bucket.check(5.999).allowed
    admitted = bucket.check(6.0)
    assert admitted.allowed
    assert admitted.remaining == 0


def test_refill_full_burst_after_period():
    bucket = Bucket(Rate(3, 1.0))
    for _ in range(3):
        bucket.check(10.0)
    assert bucket.is_full(11.0)
    assert [bucket.check(11.0).remaining for _ in range(3)] == [2, 1, 0]
    assert not bucket.check(11.0).allowed


def test_idle_time_does_not_exceed_burst():
    bucket = Bucket(Rate(2, 1.0))
    bucket.check(0.0)
    admitted = [bucket.check(3600.0).allowed for _ in range(3)]
    assert admitted == [True, True, False]


def test_retry_after_shrinks_with_time():
    bucket = Bucket(Rate(1, 60.0))
    bucket.check(0.0)
    assert bucket.check(0.0).retry_after == pytest.approx(60.0)
    assert bucket.check(45.5).retry_after == pytest.approx(14.5)
    assert bucket.check(60.0).allowed


def test_rejection_changes_nothing():
    bucket = Bucket(Rate(2, 10.0))
    bucket.check(0.0)
    bucket.check(0.0)
    for _ in range(100):
        assert not bucket.check(1.0).allowed
    # Had the rejections counted, the bucket would still be empty at t=5.
    assert bucket.check(5.0).allowed


def test_allowed_decision_has_no_retry_after():
    decision = Bucket(Rate(5, 1.0)).check(0.0)
    assert decision == Decision(allowed=True, limit=5, remaining=4, retry_after=0.0)


def test_exact_at_late_clock_readings():
    # 1000/s at a large clock reading: float arithmetic would drift over a thousand steps.
    bucket = Bucket(Rate(1000, 1.0))
    remaining = [bucket.check(LATE).remaining for _ in range(1000)]
    assert remaining == list(range(999, -1, -1))
    assert not bucket.check(LATE).allowed
    assert not bucket.check(LATE + 0.000999).allowed
    assert bucket.check(LATE + 0.001).allowed


def test_sustained_rate_exact():
    bucket = Bucket(Rate(1000, 1.0))
    for _ in range(1000):
        bucket.check(LATE)
    # Over the next second, one request every millisecond keeps pace with the refill.
    admitted = sum(bucket.check(LATE + step / 1000).allowed for step in range(1, 1001))
    assert admitted == 1000


def test_negative_start_time_is_full():
    assert Bucket(Rate(1, 1.0)).check(-50.0).allowed


def test_principals_have_separate_buckets():
    limiter = RateLimiter(RateLimits(agent_operations=(2, 60.0)))
    for _ in range(2):
        assert limiter.check("client_a", Category.AGENT_OPERATIONS, 0.0).allowed
    assert not limiter.check("client_a", Category.AGENT_OPERATIONS, 0.0).allowed
    assert limiter.check("client_b", Category.AGENT_OPERATIONS, 0.0).allowed


def test_categories_have_separate_buckets():
    limiter = RateLimiter(RateLimits(agent_operations=(1, 60.0), messages=(3, 1.0), metrics=(4, 60.0)))
    assert limiter.check("client_a", Category.AGENT_OPERATIONS, 0.0).allowed
    assert not limiter.check("client_a", Category.AGENT_OPERATIONS, 0.0).allowed
    assert limiter.check("client_a", Category.MESSAGES, 0.0).limit == 3
    assert limiter.check("client_a", Category.METRICS, 0.0).limit == 4
    assert limiter.check("client_a", Category.DEFAULT, 0.0).limit == 1000


def test_default_limits_match_reference():
    limits = RateLimits()
    assert limits.agent_operations == Rate(10, 60.0)
    assert limits.messages == Rate(1000, 1.0)
    assert limits.metrics == Rate(100, 60.0)
    assert limits.for_category(Category.DEFAULT) == Rate(1000, 1.0)


def test_eviction_keeps_bound():
    limiter = RateLimiter(RateLimits(messages=(5, 1.0)), max_buckets=3)
    for index in range(50):
        limiter.check(f"client_{index}", Category.MESSAGES, float(index))
        assert len(limiter) <= 3
    assert limiter.forced_evictions == 0


def test_eviction_drops_full_buckets_first():
    limiter = RateLimiter(RateLimits(messages=(2, 10.0)), max_buckets=2)
    limiter.check("client_idle", Category.MESSAGES, 0.0)
    limiter.check("client_busy", Category.MESSAGES, 9.0)
    limiter.check("client_busy", Category.MESSAGES, 9.0)
    # At t=10 the idle bucket is full again and the busy one is empty.
    limiter.check("client_new", Category.MESSAGES, 10.0)
    assert limiter.forced_evictions == 0
    assert not limiter.check("client_busy", Category.MESSAGES, 10.0).allowed


def test_forced_eviction_takes_nearest_to_full():
    limiter = RateLimiter(RateLimits(messages=(1, 10.0)), max_buckets=2)
    limiter.check("client_early", Category.MESSAGES, 0.0)
    limiter.check("client_late", Category.MESSAGES, 5.0)
    limiter.check("client_new", Category.MESSAGES, 6.0)
    assert limiter.forced_evictions == 1
    assert len(limiter) == 2
    # The late bucket kept its state, while the early one was evicted and starts full.
    assert not limiter.check("client_late", Category.MESSAGES, 6.0).allowed
    assert limiter.check("client_early", Category.MESSAGES, 6.0).allowed
    assert limiter.forced_evictions == 2
    assert len(limiter) == 2


def test_limits_accept_settings_tuples():
    limits = RateLimits(agent_operations=(3, 60.0), messages=(7, 1), metrics=Rate(2, 3600.0))
    assert limits.agent_operations == Rate(3, 60.0)
    assert limits.messages == Rate(7, 1.0)
    assert limits.metrics == Rate(2, 3600.0)


@pytest.mark.parametrize(
    ("rate", "text"),
    [(Rate(10, 60.0), "10/min"), (Rate(1000, 1.0), "1000/s"), (Rate(5, 3600.0), "5/hour"), (Rate(3, 2.5), "3/2.5s")],
)
def test_rate_formats_like_settings(rate, text):
    assert str(rate) == text


@pytest.mark.parametrize(
    ("count", "period"),
    [(0, 60.0), (-1, 60.0), (1, 0.0), (1, -1.0), (1, float("inf")), (1, float("nan")), (1, 1e-12)],
)
def test_rate_rejects_invalid(count, period):
    with pytest.raises(ValueError):
        Rate(count, period)


def test_limiter_rejects_zero_bound():
    with pytest.raises(ValueError, match="max_buckets"):
        RateLimiter(max_buckets=0)
