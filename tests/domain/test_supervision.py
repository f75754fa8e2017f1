"""CPU budget and restart policy, as pure state machines."""

from __future__ import annotations

import pytest

from caxton.domain.supervision import CPU_BURST_SECONDS, CpuBudget, RestartPolicy


def test_budget_allows_burst_then_throttles():
    budget = CpuBudget(millicores=100)
    budget.charge(CPU_BURST_SECONDS, now=0.0)
    assert budget.delay(0.0) == 0.0
    budget.charge(0.01, now=0.0)
    assert budget.delay(0.0) == pytest.approx(0.1)


def test_budget_refills_at_share():
    budget = CpuBudget(millicores=250)
    budget.charge(0.5, now=0.0)
    assert budget.delay(0.0) == pytest.approx((0.5 - CPU_BURST_SECONDS) / 0.25)
    assert budget.delay(1.0) == pytest.approx((0.5 - CPU_BURST_SECONDS - 0.25) / 0.25)
    assert budget.delay(2.0) == 0.0


def test_budget_caps_saved_credit():
    budget = CpuBudget(millicores=1000)
    budget.charge(0.0, now=0.0)
    budget.charge(0.0, now=100.0)
    assert budget.balance == CPU_BURST_SECONDS


def test_budget_long_run_average_is_share():
    budget = CpuBudget(millicores=100)
    now, used = 0.0, 0.0
    while now < 10.0:
        now += budget.delay(now)
        budget.charge(0.02, now)
        used += 0.02
        now += 0.02
    assert used / now == pytest.approx(0.1, abs=0.02)


def test_restart_backoff_doubles():
    policy = RestartPolicy(max_restarts=5, window=60, initial=0.1, maximum=1.0)
    delays = [policy.on_restart(float(i)).delay for i in range(4)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert policy.on_restart(4.0).delay == 1.0


def test_restart_gives_up_in_crash_loop():
    policy = RestartPolicy(max_restarts=2, window=60, initial=0.1, maximum=1.0)
    assert not policy.on_restart(0.0).give_up
    assert not policy.on_restart(1.0).give_up
    decision = policy.on_restart(2.0)
    assert decision.give_up
    assert decision.restarts_in_window == 3


def test_restart_window_forgets_old_failures():
    policy = RestartPolicy(max_restarts=2, window=10, initial=0.1, maximum=1.0)
    policy.on_restart(0.0)
    policy.on_restart(1.0)
    decision = policy.on_restart(20.0)
    assert not decision.give_up
    assert decision.delay == pytest.approx(0.1)


def test_budget_full_core_never_throttles_long_handlers():
    budget = CpuBudget(millicores=1000, updated_at=0.0)
    now = 0.0
    for _ in range(20):
        now += 0.2
        budget.charge(0.2, now)
        assert budget.delay(now) == 0.0
