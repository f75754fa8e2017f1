"""Agent batch timings on the bus, while sends run and after they stop.

Runs one bus_throughput.py round with an inbox and in-flight window larger than `--count`,
so every send completes early and the agent then drains its inbox alone. It times each
agent batch on the worker thread (`AgentRunner._handle_batch`) and each wait for its commit
(`MessageService.batch_done`), and prints the averages for batches that started while sends
were still running and for those after. The gap between the two shows what the send path
costs the agent, and the commit wait shows how long the agent idles per batch. The bare
wasmtime loop of bus_throughput.py runs first, for reference.

Run: /work/venv/bin/python tools/bench/bus_phases.py [--count 5000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio

import bus_throughput
from caxton.runtime.runner import AgentRunner

from benchlib import format_table, load_average, machine_summary


@attrs.define
class Span:
    kind: str
    start: float
    end: float
    messages: int


def install_timers(spans: list[Span]) -> None:
    """Wrap the batch handler and the commit counter so each call records a Span."""
    # NOTE: wraps a private AgentRunner method; update this if the runner is restructured.
    handle_batch = AgentRunner._handle_batch

    def timed_handle_batch(self, batch):
        started = time.perf_counter()
        results = handle_batch(self, batch)
        spans.append(Span("handle", started, time.perf_counter(), len(results)))
        return results

    AgentRunner._handle_batch = timed_handle_batch

    counting_batch_done = bus_throughput.CommitCounter._counting_batch_done

    async def timed_batch_done(self, runner, results):
        started = time.perf_counter()
        await counting_batch_done(self, runner, results)
        spans.append(Span("commit", started, time.perf_counter(), len(results)))

    bus_throughput.CommitCounter._counting_batch_done = timed_batch_done


def summarize(spans: list[Span], label: str) -> list[object]:
    handles = [s for s in spans if s.kind == "handle"]
    commits = [s for s in spans if s.kind == "commit"]
    messages = sum(s.messages for s in handles)
    if not handles or not messages:
        return [label, 0, 0, 0.0, 0.0]
    handle_seconds = sum(s.end - s.start for s in handles)
    commit_seconds = sum(s.end - s.start for s in commits)
    return [
        label, len(handles), messages, handle_seconds / messages * 1e6,
        commit_seconds / max(len(commits), 1) * 1e3,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description="Time agent batches on the bus while sends run and after.")
    parser.add_argument("--count", type=int, default=5000, help="messages to send (default 5000)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent MessageService.send tasks (default 64)")
    options = parser.parse_args()
    if not 1 <= options.count <= 50_000:
        parser.error(f"--count must be 1 to 50000, got {options.count}")

    spans: list[Span] = []
    install_timers(spans)
    phase_marks: list[float] = []
    send_all = bus_throughput.send_all

    async def marked_send_all(*args):
        phase_marks.append(time.perf_counter())
        retries = await send_all(*args)
        phase_marks.append(time.perf_counter())
        return retries

    bus_throughput.send_all = marked_send_all
    capacity = options.count + 1000
    settings_loader = bus_throughput.load_settings
    bus_throughput.load_settings = lambda **kwargs: settings_loader(
        environ={"CAXTON_LIMITS_INBOX_SIZE": str(capacity)}, overrides=kwargs["overrides"]
    )
    args = argparse.Namespace(
        count=options.count, warmup=300, concurrency=options.concurrency, window=capacity, timeout=120.0
    )
    load_at_start = load_average()
    bare = bus_throughput.run_bare(options.count, args.warmup)
    with tempfile.TemporaryDirectory(prefix="caxton-bench-phases-") as folder:
        result = trio.run(bus_throughput.run_bus, Path(folder), args)

    # The second send_all call is the timed one; its start and end split the spans.
    timed_start, timed_end = phase_marks[2], phase_marks[3]
    during = [s for s in spans if timed_start <= s.start < timed_end]
    after = [s for s in spans if s.start >= timed_end]
    print(f"machine: {machine_summary()}")
    print(f"load average at start: {load_at_start}")
    print(
        f"{options.count} messages, {options.concurrency} concurrent senders, inbox {capacity}; sends done after "
        f"{result.accept_seconds:.2f}s, all committed after {result.handled_seconds:.2f}s"
    )
    print()
    headers = ["agent batches", "batches", "messages", "handle µs per message", "commit wait ms per batch"]
    print(format_table(headers, [summarize(during, "while sends run"), summarize(after, "after sends finished")]))
    print(f"bare wasmtime loop in the same run: {bare.seconds / bare.count * 1e6:.1f} µs per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
