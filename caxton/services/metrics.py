"""Live figures per agent and for the system, their sampled history, and Prometheus.

One `AgentStats` per agent is the single source of the counters: it starts from the counts
in the store and grows after each committed batch, so the JSON API and the Prometheus
exposition always agree. A sampler task stores a snapshot every interval, which is what
`period=` queries return.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import resource
import time
from collections import deque
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from caxton.domain.errors import InvalidRequest
from caxton.domain.timefmt import format_time, now, parse_time
from caxton.runtime.directory import Directory
from caxton.runtime.instance import Outcome
from caxton.services.events import EventHub
from caxton.store import metrics as metric_rows
from caxton.store.db import Database

logger = logging.getLogger(__name__)

PERIODS = {"5m": 300, "1h": 3600, "24h": 86400}
# An agent whose inbox or memory passes these shares of its capacity raises a system.alert.
QUEUE_ALERT_SHARE = 0.8
MEMORY_ALERT_SHARE = 0.9
# How often thresholds are checked; alerts fire on crossing, not on every check.
ALERT_CHECK_SECONDS = 1.0
# Window for `rate_per_second`: long enough to smooth batches, short enough to follow load.
RATE_WINDOW_SECONDS = 10.0
# Handler latency buckets in seconds, from a fast wasm call to the default 5 s time limit.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PERFORMANCE_FIELDS = ("agent_id", "messages_processed", "messages_failed", "average_latency_ms", "rate_per_second", "cpu_usage")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@attrs.define
class AgentStats:
    processed: int = 0
    failed: int = 0
    latency_seconds: float = 0.0
    latency_count: int = 0
    cpu_seconds: float = 0.0
    fuel_consumed: int = 0
    handled_times: deque = attrs.field(factory=deque)

    def rate(self, at: float) -> float:
        while self.handled_times and self.handled_times[0] < at - RATE_WINDOW_SECONDS:
            self.handled_times.popleft()
        return len(self.handled_times) / RATE_WINDOW_SECONDS


class MetricsService:
    def __init__(
        self, db: Database, directory: Directory, events: EventHub, *, sample_interval: float, retention: float
    ) -> None:
        self._db = db
        self._directory = directory
        self._events = events
        self._alerting: set[tuple[str, str]] = set()
        self._last_sampled: dict[str, tuple] = {}
        self.sample_interval = sample_interval
        self.retention = retention
        self._stats: dict[str, AgentStats] = {}
        self._system_times: deque[tuple[float, int]] = deque()
        self._cpu_mark = (time.monotonic(), _process_cpu())
        self._cpu_percent = 0.0
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(self))
        self.latency = Histogram(
            "caxton_handler_latency_seconds", "Wall time of one handle_message call",
            ["agent_id"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.http_requests = Counter(
            "caxton_http_requests", "HTTP requests by route template, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self.queue_depth = Gauge(
            "caxton_bus_queue_depth", "Messages queued in all agent inboxes", registry=self.registry
        )
        self.queue_depth.set_function(self.queue_size)

    def load_counts(self, counts: dict[str, tuple[int, int, float, int]]) -> None:
        """Start each agent's counters from its stored (processed, failed, cpu, fuel) totals."""
        for agent_id, (processed, failed, cpu_seconds, fuel) in counts.items():
            stats = self._stats.setdefault(agent_id, AgentStats())
            stats.processed, stats.failed = processed, failed
            stats.cpu_seconds, stats.fuel_consumed = cpu_seconds, fuel

    def forget(self, agent_id: str) -> None:
        self._stats.pop(agent_id, None)

    def record_batch(self, agent_id: str, outcomes: list[Outcome]) -> None:
        """Count a committed batch; called on the trio thread after the store commit."""
        stats = self._stats.setdefault(agent_id, AgentStats())
        at = time.monotonic()
        histogram = self.latency.labels(agent_id=agent_id)
        for outcome in outcomes:
            if outcome.ok:
                stats.processed += 1
            else:
                stats.failed += 1
            stats.latency_seconds += outcome.wall_seconds
            stats.latency_count += 1
            stats.cpu_seconds += outcome.cpu_seconds
            stats.fuel_consumed += outcome.fuel_consumed
            stats.handled_times.append(at)
            histogram.observe(outcome.wall_seconds)
        self._system_times.append((at, len(outcomes)))

    def stats(self, agent_id: str) -> AgentStats:
        return self._stats.setdefault(agent_id, AgentStats())

    def all_stats(self) -> dict[str, AgentStats]:
        return dict(self._stats)

    def memory_of(self, agent_id: str) -> int:
        runner = self._directory.runner(agent_id)
        return runner.memory_used if runner else 0

    def queue_size(self) -> int:
        return sum(len(runner.inbox) for runner in self._directory.runners())

    def system_rate(self, at: float) -> float:
        while self._system_times and self._system_times[0][0] < at - RATE_WINDOW_SECONDS:
            self._system_times.popleft()
        return sum(count for _, count in self._system_times) / RATE_WINDOW_SECONDS

    def cpu_usage_percent(self) -> float:
        """Process CPU use since the previous reading, as a percentage of one core."""
        mark, cpu = time.monotonic(), _process_cpu()
        elapsed = mark - self._cpu_mark[0]
        if elapsed >= 0.5:
            self._cpu_percent = (cpu - self._cpu_mark[1]) / elapsed * 100
            self._cpu_mark = (mark, cpu)
        return round(self._cpu_percent, 1)

    def agent_snapshot(self, agent_id: str) -> dict[str, Any]:
        stats = self.stats(agent_id)
        runner = self._directory.runner(agent_id)
        average = stats.latency_seconds / stats.latency_count * 1000 if stats.latency_count else 0.0
        return {
            "agent_id": agent_id,
            "messages_processed": stats.processed,
            "messages_failed": stats.failed,
            "average_latency_ms": round(average, 3),
            "rate_per_second": round(stats.rate(time.monotonic()), 3),
            "cpu_usage": round(runner.cpu_millicores() / 1000, 3) if runner else 0.0,
            "cpu_seconds_total": round(stats.cpu_seconds, 6),
            "fuel_consumed_total": stats.fuel_consumed,
            "memory_usage_mb": round((runner.memory_used if runner else 0) / 2**20, 3),
            "queue_size": len(runner.inbox) if runner else 0,
            "uptime_seconds": round(runner.uptime_seconds()) if runner else 0,
            "restarts": runner.restarts if runner else 0,
        }

    def system_snapshot(self, agent_counts: dict[str, int]) -> dict[str, Any]:
        return {
            "timestamp": format_time(now()),
            "agents": agent_counts,
            "messages": {
                "rate_per_second": round(self.system_rate(time.monotonic()), 3),
                "queue_size": self.queue_size(),
                "processed_total": sum(s.processed for s in self._stats.values()),
                "failed_total": sum(s.failed for s in self._stats.values()),
            },
            "resources": {
                "cpu_usage_percent": self.cpu_usage_percent(),
                "memory_used_mb": round(_resident_bytes() / 2**20, 1),
            },
        }

    async def history(self, subject: str, period: str) -> dict[str, Any]:
        """Return the samples of the last `period`, one per sample interval.

        An agent's unchanged figures are stored once, so gaps in the stored rows are filled
        by repeating the sample before them.
        """
        seconds = parse_period(period)
        since = format_time(now() - dt.timedelta(seconds=seconds))
        stored = await self._db.read(lambda c: metric_rows.samples_since(c, subject, since))
        if subject != metric_rows.SYSTEM:
            before = await self._db.read(lambda c: metric_rows.sample_before(c, subject, since))
            stored = fill_gaps(([before] if before else []) + stored, since, self.sample_interval)
        samples = stored
        return {"period": period, "interval_seconds": self.sample_interval, "samples": samples}

    def check_thresholds(self) -> None:
        """Publish a system.alert when an agent's queue or memory crosses its threshold."""
        for runner in self._directory.runners():
            agent_id = runner.agent_id
            queue_share = len(runner.inbox) / runner.inbox.capacity
            memory_share = runner.memory_used / runner.spec.limits.memory
            self._alert(agent_id, "queue", queue_share >= QUEUE_ALERT_SHARE,
                        f"inbox of agent {runner.spec.name} is {queue_share:.0%} full ({len(runner.inbox)} messages)")
            self._alert(agent_id, "memory", memory_share >= MEMORY_ALERT_SHARE,
                        f"agent {runner.spec.name} uses {memory_share:.0%} of its memory limit")

    def _alert(self, agent_id: str, kind: str, active: bool, message: str) -> None:
        key = (agent_id, kind)
        if active and key not in self._alerting:
            self._alerting.add(key)
            logger.warning("alert: %s", message)
            self._events.publish("system.alert", message, subjects=(agent_id,), agent_id=agent_id, alert=kind, state="raised")
        elif not active and key in self._alerting:
            self._alerting.discard(key)
            self._events.publish(
                "system.alert", f"{kind} alert of agent {agent_id} cleared", subjects=(agent_id,),
                agent_id=agent_id, alert=kind, state="cleared",
            )

    async def run(self, agent_counts, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check alert thresholds every second and store a snapshot every sample interval."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_thresholds)
            task_status.started()
            await self._sample(agent_counts)

    async def _watch_thresholds(self) -> None:
        while True:
            await trio.sleep(ALERT_CHECK_SECONDS)
            self.check_thresholds()

    async def _sample(self, agent_counts) -> None:
        logger.info("metrics sampler started (every %gs, kept %gs)", self.sample_interval, self.retention)
        while True:
            await trio.sleep(self.sample_interval)
            at = format_time(now())
            samples = {metric_rows.SYSTEM: _flatten(self.system_snapshot(await agent_counts()))}
            for runner in self._directory.runners():
                snapshot = self.agent_snapshot(runner.agent_id)
                # An idle agent's figures do not change: store a sample only when they do,
                # and let `history` repeat the last one, so thousands of idle agents cost
                # no rows. Uptime always grows, so it does not count as a change.
                key = tuple(value for name, value in snapshot.items() if name != "uptime_seconds")
                if self._last_sampled.get(runner.agent_id) != key:
                    self._last_sampled[runner.agent_id] = key
                    samples[runner.agent_id] = snapshot
            cutoff = format_time(now() - dt.timedelta(seconds=self.retention))

            def store(connection, at=at, samples=samples, cutoff=cutoff) -> None:
                metric_rows.insert_samples(connection, at, samples)
                metric_rows.prune_before(connection, cutoff)

            try:
                await self._db.write(store, durable=False)
            except Exception:  # noqa: BLE001 - a lost sample must not stop the sampler
                logger.exception("cannot store metric samples taken at %s", at)


def fill_gaps(samples: list[dict[str, Any]], since: str, interval: float) -> list[dict[str, Any]]:
    """Repeat each sample at every interval until the next one (or now), from `since` on."""
    if not samples:
        return []
    step = dt.timedelta(seconds=interval)
    start = parse_time(since)
    end = now()
    filled: list[dict[str, Any]] = []
    for index, sample in enumerate(samples):
        moment = parse_time(sample["timestamp"])
        following = parse_time(samples[index + 1]["timestamp"]) if index + 1 < len(samples) else end + step
        while moment < following and moment <= end:
            if moment >= start:
                filled.append({**sample, "timestamp": format_time(moment)})
            moment += step
    return filled


def parse_period(period: str) -> int:
    if period not in PERIODS:
        raise InvalidRequest("period", f"unknown period {period[:16]!r}; use {', '.join(PERIODS)}")
    return PERIODS[period]


def _flatten(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {
        "agents_total": snapshot["agents"].get("total", 0),
        "agents_running": snapshot["agents"].get("running", 0),
        "rate_per_second": snapshot["messages"]["rate_per_second"],
        "queue_size": snapshot["messages"]["queue_size"],
        "cpu_usage_percent": snapshot["resources"]["cpu_usage_percent"],
        "memory_used_mb": snapshot["resources"]["memory_used_mb"],
    }


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _StatsCollector:
    """Exposes the `AgentStats` counters, so Prometheus reads the same numbers as the JSON API."""

    def __init__(self, service: MetricsService) -> None:
        self._service = service

    def collect(self):
        processed = CounterMetricFamily("caxton_messages_processed", "Messages handled successfully", labels=["agent_id"])
        failed = CounterMetricFamily("caxton_messages_failed", "Messages whose handler failed", labels=["agent_id"])
        cpu = CounterMetricFamily("caxton_agent_cpu_seconds", "CPU time spent in handlers", labels=["agent_id"])
        fuel = CounterMetricFamily("caxton_agent_fuel_consumed", "Wasm fuel units burned by handlers", labels=["agent_id"])
        memory = GaugeMetricFamily("caxton_agent_memory_bytes", "Linear memory of the agent's instance", labels=["agent_id"])
        for agent_id, stats in self._service.all_stats().items():
            processed.add_metric([agent_id], stats.processed)
            failed.add_metric([agent_id], stats.failed)
            cpu.add_metric([agent_id], stats.cpu_seconds)
            fuel.add_metric([agent_id], stats.fuel_consumed)
            memory.add_metric([agent_id], self._service.memory_of(agent_id))
        yield from (processed, failed, cpu, fuel, memory)
