"""Pure policies for running untrusted agents: CPU share throttling and restart backoff.

Both take the current time as an argument and do no I/O, so they are tested without
threads or sleeps. The runner asks them what to do and does the waiting itself.
"""

from __future__ import annotations

from collections import deque

import attrs

# CPU debt an agent may run up before it is throttled: lets short bursts through at full
# speed while the long-run average stays at the agent's share.
CPU_BURST_SECONDS = 0.05


@attrs.define
class CpuBudget:
    """A token bucket of CPU seconds that refills at `millicores / 1000` per wall second.

    An agent with `100m` earns 0.1 CPU seconds each second. Handling a message spends what
    it used; while the balance is negative the agent must wait until it is earned back.
    """

    millicores: int
    balance: float = CPU_BURST_SECONDS
    updated_at: float | None = None

    @property
    def share(self) -> float:
        return self.millicores / 1000

    def _refill(self, now: float) -> None:
        if self.updated_at is not None:
            self.balance = min(CPU_BURST_SECONDS, self.balance + (now - self.updated_at) * self.share)
        self.updated_at = now

    def charge(self, cpu_seconds: float, now: float) -> None:
        """Spend `cpu_seconds` used by a handler that ended at `now`.

        Credit earned while the handler ran pays for it before the burst cap applies, so an
        agent that keeps exactly to its share is never throttled, however long its handlers.
        """
        earned = 0.0 if self.updated_at is None else (now - self.updated_at) * self.share
        self.balance = min(CPU_BURST_SECONDS, self.balance + earned - cpu_seconds)
        self.updated_at = now

    def exhausted(self, now: float) -> bool:
        self._refill(now)
        return self.balance < 0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next message may start; 0 when within budget."""
        self._refill(now)
        return 0.0 if self.balance >= 0 else -self.balance / self.share


@attrs.frozen
class RestartDecision:
    give_up: bool
    delay: float
    restarts_in_window: int


@attrs.define
class RestartPolicy:
    """Exponential backoff for instance restarts, and a crash-loop limit.

    The n-th restart within `window` seconds waits `initial * 2**(n-1)` seconds (at most
    `maximum`). More than `max_restarts` restarts within the window gives up.
    """

    max_restarts: int
    window: float
    initial: float
    maximum: float
    _history: deque[float] = attrs.field(factory=deque)

    def on_restart(self, now: float) -> RestartDecision:
        while self._history and self._history[0] < now - self.window:
            self._history.popleft()
        self._history.append(now)
        count = len(self._history)
        if count > self.max_restarts:
            return RestartDecision(give_up=True, delay=0.0, restarts_in_window=count)
        delay = min(self.maximum, self.initial * 2 ** (count - 1))
        return RestartDecision(give_up=False, delay=delay, restarts_in_window=count)
