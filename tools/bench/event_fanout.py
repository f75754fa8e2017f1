"""Event fan-out: message events delivered to 1, 10 and 100 WebSocket subscribers under load.

The script starts one `caxton serve` subprocess on 127.0.0.1 and deploys the echo agent.
For each subscriber count in `--subscribers`, it starts a subscriber process that opens that
many WebSocket connections to /ws with trio-websocket, each subscribed to `message.*`. This
process then sends echo requests over REST for `--duration` seconds, with the raw keep-alive
client of rest_throughput.py, and waits until every echo reply is stored. The subscriber
process counts the event frames each connection receives.

Each echo request makes four `message.*` events: `message.sent` and `message.delivered` for
the request, then the same two for the reply to the REST client. Every subscriber should
therefore receive four events per handled message; frames of type `overflow` report events
the server dropped because that connection read too slowly.

The result is the message rate with 100 subscribers divided by the rate with 0 subscribers
in the same round.

Run: /work/venv/bin/python tools/bench/event_fanout.py [--subscribers 0,1,10,100] [--duration 8] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import trio

from benchlib import (
    format_table,
    load_average,
    machine_busy_seconds,
    machine_summary,
    process_cpu_seconds,
    start_caxton_server,
)

# One echo request makes four message.* events (see the module docstring).
EVENTS_PER_MESSAGE = 4
READY_TIMEOUT_SECONDS = 60.0
# After the last reply is stored, the subscribers receive the events still queued on the
# server. The phase ends when their counts stay unchanged for EVENT_QUIET_SECONDS, or after
# EVENT_DRAIN_SECONDS at most.
EVENT_QUIET_SECONDS = 1.0
EVENT_DRAIN_SECONDS = 60.0


# --- subscriber process -------------------------------------------------------------------


async def run_subscribers(args: argparse.Namespace) -> None:
    """Open `args.count` subscribed connections, then reply to each line on stdin with the counts so far.

    The line `stop` also closes the connections and ends the process.
    """
    from trio_websocket import ConnectionClosed, open_websocket_url

    counters = [Counter() for _ in range(args.count)]
    dropped = [0] * args.count
    subscribe = json.dumps({"type": "subscribe", "events": ["message.*"]})

    async def connection(index: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_websocket_url(args.url) as websocket:
            await websocket.send_message(subscribe)
            reply = json.loads(await websocket.get_message())
            if reply.get("type") != "subscribed":
                raise RuntimeError(f"connection {index}: subscribe failed: {reply}")
            task_status.started()
            counter = counters[index]
            try:
                while True:
                    frame = await websocket.get_message()
                    # The server writes "type" first, so the prefix names the event without
                    # a full JSON parse; that keeps this client's CPU per frame low.
                    if frame.startswith('{"type":"'):
                        kind = frame[9 : frame.index('"', 9)]
                    else:
                        kind = json.loads(frame).get("type", "unknown")
                    counter[kind] += 1
                    if kind == "overflow":
                        dropped[index] += json.loads(frame).get("dropped", 0)
            except ConnectionClosed:
                counter["closed"] += 1

    def snapshot(command: str) -> dict:
        totals = Counter()
        for counter in counters:
            totals.update(counter)
        per_connection = [sum(v for k, v in counter.items() if k.startswith("message.")) for counter in counters]
        return {
            "command": command, "time": time.monotonic(), "cpu": time.process_time(), "totals": dict(totals),
            "dropped": sum(dropped), "per_connection_min": min(per_connection, default=0),
            "per_connection_max": max(per_connection, default=0),
        }

    async with trio.open_nursery() as nursery:
        for index in range(args.count):
            await nursery.start(connection, index)
        print(json.dumps({"command": "ready"}), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        while True:
            data = await stdin.receive_some()
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                command = line.decode().strip()
                print(json.dumps(snapshot(command)), flush=True)
                if command == "stop":
                    nursery.cancel_scope.cancel()
                    return
        nursery.cancel_scope.cancel()


def parse_subscriber_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="event_fanout.py subscribe", description="WebSocket subscribers (started by the benchmark).")
    parser.add_argument("--url", required=True, help="ws:// URL of /ws, with the token parameter")
    parser.add_argument("--count", type=int, required=True)
    return parser.parse_args(argv)


class SubscriberProcess:
    """The subscriber process, driven by lines on its stdin; each line gets one JSON line back."""

    def __init__(self, ws_url: str, count: int, log_path: Path) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "subscribe", "--url", ws_url, "--count", str(count)]
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1
        )

    def read(self, timeout: float) -> dict:
        """Read one report line, or raise RuntimeError when the process ends or `timeout` passes."""
        deadline = time.monotonic() + timeout
        # A pipe read blocks, so wait in a thread and check the deadline here.
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        if not result or not result[0]:
            raise RuntimeError(f"subscriber process gave no report within {timeout:g}s (exit code {self.process.poll()})")
        return json.loads(result[0])

    def command(self, text: str, timeout: float = 30.0) -> dict:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return self.read(timeout)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


# --- benchmark -----------------------------------------------------------------------------


def run_phase(server, count: int, args: argparse.Namespace, folder: Path, rest) -> dict:
    """Measure one subscriber count: start the subscribers, send load, wait for replies and events."""
    ws_url = server.url.replace("http://", "ws://").removesuffix("/api/v1") + f"/ws?token={rest.TOKEN}"
    subscribers = SubscriberProcess(ws_url, count, folder / f"subscribers-{count}.log") if count else None
    try:
        if subscribers:
            ready = subscribers.read(READY_TIMEOUT_SECONDS)
            if ready.get("command") != "ready":
                raise RuntimeError(f"unexpected first report from the subscriber process: {ready}")
        identity = rest.client_identity(rest.TOKEN)
        before = trio.run(count_replies, rest, server.url, identity)
        start = subscribers.command("start") if subscribers else None
        client_cpu = subscribers.cpu_seconds() if subscribers else 0.0
        profiler = None
        if args.profile_dir is not None:
            profiler = rest.start_profiler(server.pid, args.profile_dir / f"subscribers-{count}.raw", args.duration)
        server_cpu, machine_cpu = server.cpu_seconds(), machine_busy_seconds()
        started = time.perf_counter()
        load = trio.run(send_load, rest, server.url, args)
        send_seconds = time.perf_counter() - started
        if profiler is not None:
            rest.stop_profiler(profiler)
        end = subscribers.command("end") if subscribers else None
        server_cpu = server.cpu_seconds() - server_cpu
        machine_cpu = machine_busy_seconds() - machine_cpu
        client_cpu = (subscribers.cpu_seconds() - client_cpu) if subscribers else 0.0
        replies = trio.run(wait_replies, rest, server.url, identity, before + load.accepted, args.drain_timeout) - before
        handled_seconds = time.perf_counter() - started
        stop = drain_seconds = None
        if subscribers:
            drain_seconds = wait_for_quiet(subscribers)
            stop = subscribers.command("stop")
    finally:
        if subscribers:
            subscribers.close()
    return {
        "subscribers": count, "load": load, "send_seconds": send_seconds, "replies": replies,
        "handled_seconds": handled_seconds, "server_cores": server_cpu / send_seconds,
        "client_cores": client_cpu / send_seconds, "machine_cores": machine_cpu / send_seconds,
        "start": start, "end": end, "stop": stop, "drain_seconds": drain_seconds,
    }


def wait_for_quiet(subscribers: SubscriberProcess) -> float:
    """Wait until the subscribers' event counts stop changing; return the seconds waited."""
    started = time.monotonic()
    previous = None
    while time.monotonic() - started < EVENT_DRAIN_SECONDS:
        report = subscribers.command("poll")
        current = (sum(report["totals"].values()), report["dropped"])
        if current == previous:
            break
        previous = current
        time.sleep(EVENT_QUIET_SECONDS)
    return time.monotonic() - started


async def count_replies(rest, url: str, identity: str) -> int:
    async with rest.new_client(url) as client:
        return await rest.count_replies(client, identity)


async def wait_replies(rest, url: str, identity: str, expected: int, timeout: float) -> int:
    async with rest.new_client(url) as client:
        return await rest.wait_for_replies(client, identity, expected, timeout)


async def send_load(rest, url: str, args: argparse.Namespace):
    return await rest.drive_load(
        url, "/messages", client="raw", concurrency=args.concurrency, duration=args.duration, max_requests=args.max_requests
    )


async def prepare(rest, url: str, args: argparse.Namespace) -> None:
    """Deploy echo and send warm-up messages, then wait for their replies."""
    identity = rest.client_identity(rest.TOKEN)
    async with rest.new_client(url) as client:
        await rest.deploy_echo(client)
        warmup = await rest.drive_load(url, "/messages", client="raw", concurrency=args.concurrency, duration=60, max_requests=args.warmup)
        replies = await rest.wait_for_replies(client, identity, warmup.accepted, args.drain_timeout)
        if replies < warmup.accepted:
            raise RuntimeError(f"only {replies} of {warmup.accepted} warm-up replies arrived in {args.drain_timeout:g}s")


def measure(folder: Path, args: argparse.Namespace) -> list[list[dict]]:
    # rest_throughput.py contains the load client, the echo deploy and the reply polling. Its
    # TOKEN is the token that client sends, so the server here uses it too.
    import rest_throughput as rest

    server = start_caxton_server(folder, rest.TOKEN, log_level=args.log_level)
    rounds = []
    try:
        trio.run(prepare, rest, server.url, args)
        for number in range(args.rounds):
            # Odd rounds run the counts in reverse, so drift over the run does not always
            # favour the same count.
            order = args.subscribers if number % 2 == 0 else list(reversed(args.subscribers))
            phases = []
            for count in order:
                phase = run_phase(server, count, args, folder, rest)
                phases.append(phase)
                print_progress(number + 1, phase)
            rounds.append(sorted(phases, key=lambda phase: phase["subscribers"]))
    finally:
        code = server.stop()
        if code not in (0, None):
            print(f"caxton server exited with code {code}; log in {server.log_path}", file=sys.stderr)
    return rounds


def events_in(phase: dict, first: str, last: str) -> int:
    if phase[first] is None or phase[last] is None:
        return 0
    return sum(
        value - phase[first]["totals"].get(kind, 0)
        for kind, value in phase[last]["totals"].items()
        if kind.startswith("message.")
    )


def print_progress(round_number: int, phase: dict) -> None:
    load = phase["load"]
    print(
        f"  round {round_number}, {phase['subscribers']} subscribers: {load.accepted} accepted in {phase['send_seconds']:.1f}s, "
        f"{phase['replies']} replies, {events_in(phase, 'start', 'stop'):,} events received"
        + (f", the last {phase['drain_seconds']:.1f}s after the last reply" if phase["drain_seconds"] is not None else ""),
        flush=True,
    )


def print_report(rounds: list[list[dict]], args: argparse.Namespace) -> None:
    print()
    print(f"machine: {machine_summary()}")
    print(f"load average at start: {args.load_at_start}")
    print(f"load: {args.concurrency} REST senders for {args.duration:g}s per subscriber count; subscribers match message.*")
    print()
    headers = [
        "round", "subscribers", "accepted/s", "handled/s", "429 or errors", "events/s total", "events/s per subscriber",
        "events per message per subscriber", "dropped", "server CPU", "subscriber CPU", "machine CPU",
    ]
    rows = []
    for number, phases in enumerate(rounds, 1):
        for phase in phases:
            count = phase["subscribers"]
            load = phase["load"]
            during = events_in(phase, "start", "end")
            total = events_in(phase, "start", "stop")
            per_message = total / count / phase["replies"] if count and phase["replies"] else 0.0
            dropped = phase["stop"]["dropped"] - phase["start"]["dropped"] if count else 0
            rows.append([
                number, count, load.rate, phase["replies"] / phase["handled_seconds"], load.errors,
                during / phase["send_seconds"], during / phase["send_seconds"] / count if count else 0.0,
                per_message, dropped, phase["server_cores"], phase["client_cores"], phase["machine_cores"],
            ])
    print(format_table(headers, rows))
    print(
        "events/s count the message.* frames received while the load ran; events per message count them until the "
        f"subscribers received no more for {EVENT_QUIET_SECONDS:g}s (expected {EVENTS_PER_MESSAGE}). Dropped events are "
        "those the server reported in overflow frames. CPU columns are in cores over the send phase."
    )
    for number, phases in enumerate(rounds, 1):
        for phase in phases:
            if phase["load"].first_error:
                print(f"round {number}, {phase['subscribers']} subscribers: first error: {phase['load'].first_error}")
            if phase["replies"] < phase["load"].accepted:
                print(
                    f"round {number}, {phase['subscribers']} subscribers: only {phase['replies']} of "
                    f"{phase['load'].accepted} replies arrived within --drain-timeout"
                )
            if phase["stop"] is not None:
                spread = (phase["stop"]["per_connection_min"], phase["stop"]["per_connection_max"])
                print(f"round {number}, {phase['subscribers']} subscribers: events per connection from {spread[0]:,} to {spread[1]:,}")
    print()
    print_ratios(rounds)


def print_ratios(rounds: list[list[dict]]) -> None:
    """Print each round's message rates with subscribers divided by its rates with none."""
    if not any(phase["subscribers"] == 0 for phases in rounds for phase in phases):
        print("no run with 0 subscribers, so no ratio")
        return
    for number, phases in enumerate(rounds, 1):
        base = next(phase for phase in phases if phase["subscribers"] == 0)
        handled_base = base["replies"] / base["handled_seconds"]
        for phase in phases:
            if phase["subscribers"] == 0:
                continue
            accepted = phase["load"].rate / base["load"].rate if base["load"].rate else 0.0
            handled = (phase["replies"] / phase["handled_seconds"]) / handled_base if handled_base else 0.0
            print(
                f"round {number}: message rate with {phase['subscribers']} subscribers / with 0: "
                f"accepted {accepted:.2f}, handled {handled:.2f}"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Event frames delivered to WebSocket subscribers while echo messages flow.")
    parser.add_argument(
        "--subscribers", default="0,1,10,100",
        help="comma-separated subscriber counts, each measured with its own subscriber process (default 0,1,10,100)",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of REST load per subscriber count (default 8)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="maximum requests per subscriber count (default 50000)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent REST senders, one connection each (default 16)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over all counts; even rounds run them in reverse (default 1)")
    parser.add_argument("--warmup", type=int, default=300, help="requests sent before the first count (default 300)")
    parser.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds to wait for echo replies after sending (default 30)"
    )
    parser.add_argument("--log-level", default="warning", help="Caxton server log level, as for `caxton serve` (default warning)")
    parser.add_argument(
        "--profile-dir", type=Path, metavar="DIR",
        help="record the server with py-spy during each send phase into DIR/subscribers-N.raw (N: subscriber count)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with logs and database")
    args = parser.parse_args()
    if args.profile_dir is not None:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    try:
        args.subscribers = [int(part) for part in args.subscribers.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--subscribers must be comma-separated integers, got {args.subscribers!r}")
    if not args.subscribers or any(not 0 <= count <= 500 for count in args.subscribers):
        parser.error("--subscribers needs at least one count, each from 0 to 500")
    if not 0 < args.duration <= 120:
        parser.error(f"--duration must be in (0, 120] seconds, got {args.duration:g}")
    if not 1 <= args.concurrency <= 256:
        parser.error(f"--concurrency must be 1 to 256, got {args.concurrency}")
    if not 1 <= args.rounds <= 10:
        parser.error(f"--rounds must be 1 to 10, got {args.rounds}")
    if not 1 <= args.max_requests <= 1_000_000:
        parser.error(f"--max-requests must be 1 to 1000000, got {args.max_requests}")
    return args


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "subscribe":
        trio.run(run_subscribers, parse_subscriber_args(sys.argv[2:]))
        return 0
    args = parse_args()
    args.load_at_start = load_average()
    folder = Path(tempfile.mkdtemp(prefix="caxton-bench-fanout-"))
    try:
        rounds = measure(folder, args)
        print_report(rounds, args)
        return 0
    finally:
        if args.keep:
            print(f"server log and data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
