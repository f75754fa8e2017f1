"""Bus throughput: messages per second through MessageService into the echo agent, in process.

Starts the store, the engine and the services with `caxton.server.run_services`, the code
`caxton serve` runs, but no HTTP layer, deploys caxton/examples/echo.wasm, and sends `--count` requests through
`MessageService.send` from `--concurrency` tasks. The clock stops when the last batch of
outcomes is committed, counted by wrapping `MessageService.batch_done`.

The baseline, in the same run, is a bare wasmtime-py loop over the same module on one
thread: build the message JSON, alloc, write it into guest memory, call handle_message, and
parse the reply that `caxton.send_message` hands back. It stores nothing.

Run: /work/venv/bin/python tools/bench/bus_throughput.py [--count 5000] [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import attrs
import trio
import wasmtime

from caxton.config import load_settings
from caxton.domain.errors import ResourceLimitExceeded
from caxton.domain.timefmt import format_time, now
from caxton.server import DATABASE_FILE, run_services
from caxton.services.messages import MessageService

from benchlib import format_table, load_average, machine_busy_seconds, machine_summary

GOAL_RATIO = 0.8
CLIENT_IDENTITY = "client_bench"
# Pause before retrying a send that found the inbox full. The in-flight window normally keeps
# the inbox from filling, so a retry means the window is set above the inbox capacity.
FULL_INBOX_BACKOFF_SECONDS = 0.01


def echo_wasm() -> bytes:
    return (resources.files("caxton.examples") / "echo.wasm").read_bytes()


def request_body(sequence: int) -> dict:
    return {"performative": "request", "receiver": "echo", "content": {"seq": sequence, "text": "ping"}}


class CommitCounter:
    """Counts committed outcomes by wrapping `MessageService.batch_done` on one instance.

    Agent runners hand every handled batch to `batch_done`, which returns once the batch's
    outcomes and replies are committed. `window` bounds the messages sent but not yet
    committed: a sender takes a slot before `send`, and each committed outcome gives one
    back. Like a client that waits for replies, this keeps the agent's inbox below its
    capacity instead of retrying 429s.
    """

    def __init__(self, messages: MessageService, window: int) -> None:
        self.window = trio.Semaphore(window, max_value=window)
        self.committed = 0
        self.batches = 0
        self._target = 0
        self._reached = trio.Event()
        self._batch_done = messages.batch_done
        # An instance attribute shadows the method, so the runners' calls come here.
        messages.batch_done = self._counting_batch_done

    def expect(self, target: int) -> trio.Event:
        """Return an event set once `target` outcomes in total have been committed."""
        self._target, self._reached = target, trio.Event()
        if self.committed >= target:
            self._reached.set()
        return self._reached

    async def _counting_batch_done(self, runner, results) -> None:
        await self._batch_done(runner, results)
        self.committed += len(results)
        self.batches += 1
        for _ in results:
            self.window.release()
        if self.committed >= self._target:
            self._reached.set()


@attrs.define
class BusResult:
    count: int
    accept_seconds: float
    handled_seconds: float
    full_inbox_retries: int
    batches: int
    cpu_seconds: float
    machine_cpu_seconds: float
    handled_in_store: int
    replies_in_store: int

    @property
    def rate(self) -> float:
        return self.count / self.handled_seconds


async def send_all(messages: MessageService, counter: CommitCounter, first: int, count: int, concurrency: int) -> int:
    """Send `count` requests from `concurrency` tasks; return how often a full inbox was retried."""
    next_sequence = first
    end = first + count
    retries = 0

    async def sender() -> None:
        nonlocal next_sequence, retries
        while next_sequence < end:
            body = request_body(next_sequence)
            next_sequence += 1
            size = len(json.dumps(body, separators=(",", ":")))
            await counter.window.acquire()
            while True:
                try:
                    await messages.send(body, size=size, client_identity=CLIENT_IDENTITY)
                    break
                except ResourceLimitExceeded:
                    retries += 1
                    await trio.sleep(FULL_INBOX_BACKOFF_SECONDS)

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, count)):
            nursery.start_soon(sender)
    return retries


def count_states(connection: sqlite3.Connection, start_seq: int) -> tuple[int, int]:
    """Count the handled requests and delivered replies stored after sequence number `start_seq`."""
    row = connection.execute(
        "SELECT SUM(state = 'handled' AND performative = 'request'), "
        "SUM(state = 'delivered' AND performative = 'inform') FROM messages WHERE seq > ?",
        (start_seq,),
    ).fetchone()
    return int(row[0] or 0), int(row[1] or 0)


async def run_bus(data_dir: Path, args: argparse.Namespace) -> BusResult:
    """Start the store, runtime and services, deploy echo, warm up, then time `args.count` sends."""
    settings = load_settings(environ={}, overrides={"host": "127.0.0.1", "port": 0, "data_dir": str(data_dir)})
    async with run_services(settings) as services:
        # A second connection reads the counts; WAL lets it read beside the server's writer.
        reader = sqlite3.connect(settings.data_dir / DATABASE_FILE)
        messages = services.messages
        counter = CommitCounter(messages, args.window)
        with trio.fail_after(args.timeout):
            await services.agents.deploy(echo_wasm(), filename="echo.wasm", config={"name": "echo"})
            await send_all(messages, counter, 0, args.warmup, args.concurrency)
            await counter.expect(args.warmup).wait()
        start_seq = reader.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()[0]

        reached = counter.expect(args.warmup + args.count)
        batches_before = counter.batches
        cpu_started, started, machine_started = time.process_time(), time.perf_counter(), machine_busy_seconds()
        with trio.fail_after(args.timeout):
            retries = await send_all(messages, counter, args.warmup, args.count, args.concurrency)
            accept_seconds = time.perf_counter() - started
            await reached.wait()
        handled_seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        machine_cpu_seconds = machine_busy_seconds() - machine_started

        handled, replies = count_states(reader, start_seq)
        reader.close()
        return BusResult(
            count=args.count, accept_seconds=accept_seconds, handled_seconds=handled_seconds,
            full_inbox_retries=retries, batches=counter.batches - batches_before, cpu_seconds=cpu_seconds,
            machine_cpu_seconds=machine_cpu_seconds,
            handled_in_store=handled, replies_in_store=replies,
        )


@attrs.define
class BareResult:
    count: int
    seconds: float
    replies: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def run_bare(count: int, warmup: int) -> BareResult:
    """Call echo.wasm in a plain loop on one thread, with the JSON work the server does per message."""
    # Default engine settings: unlike WasmEngine, no epoch interruption and no memory limits.
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, echo_wasm())
    replies: list[dict] = []

    def send_message(caller: wasmtime.Caller, pointer: int, length: int) -> int:
        memory = caller.get("memory")
        assert isinstance(memory, wasmtime.Memory)
        replies.append(json.loads(memory.read(caller, pointer, pointer + length)))
        return 0

    linker = wasmtime.Linker(engine)
    send_type = wasmtime.FuncType([wasmtime.ValType.i32(), wasmtime.ValType.i32()], [wasmtime.ValType.i32()])
    linker.define_func("caxton", "send_message", send_type, send_message, access_caller=True)
    instance = linker.instantiate(store, module)
    exports = instance.exports(store)
    memory, alloc, handle = exports["memory"], exports["alloc"], exports["handle_message"]

    def handle_one(sequence: int) -> None:
        # The fields the server's Message.to_json sends to the guest, with fresh ids each time.
        message = {
            "message_id": f"msg_{secrets.token_hex(8)}",
            "performative": "request",
            "sender": CLIENT_IDENTITY,
            "receiver": "agent_bench",
            "content": request_body(sequence)["content"],
            "conversation_id": f"conv_{secrets.token_hex(8)}",
            "reply_with": None, "in_reply_to": None, "reply_by": None,
            "protocol": None, "language": None, "ontology": None,
            "timestamp": format_time(now()),
        }
        payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        pointer = alloc(store, len(payload))
        memory.write(store, payload, pointer)
        status = handle(store, pointer, len(payload))
        if status != 0:
            raise RuntimeError(f"echo handle_message returned {status} for message {sequence}")

    for sequence in range(warmup):
        handle_one(sequence)
    replies.clear()
    started = time.perf_counter()
    for sequence in range(warmup, warmup + count):
        handle_one(sequence)
    seconds = time.perf_counter() - started
    return BareResult(count=count, seconds=seconds, replies=len(replies))


def print_report(rounds: list[tuple[BareResult, BusResult]], args: argparse.Namespace) -> bool:
    """Print the table and ratios; return False when a check on the outcome failed."""
    print(f"machine: {machine_summary()}")
    print(f"load average at start: {args.load_at_start}")
    print(
        f"{args.count} messages per path and round after {args.warmup} warm-up messages; "
        f"bus: {args.concurrency} concurrent senders, at most {args.window} messages in flight"
    )
    print()
    rows, ratios = [], []
    for number, (bare, bus) in enumerate(rounds, 1):
        rows.append([number, "bare wasmtime loop", bare.count, bare.seconds, "n/a", bare.rate, bare.seconds / bare.count * 1e6])
        rows.append([
            number, "bus: send + handle + commit", bus.count, bus.handled_seconds, bus.count / bus.accept_seconds,
            bus.rate, bus.handled_seconds / bus.count * 1e6,
        ])
        ratios.append(bus.rate / bare.rate)

    print(format_table(["round", "path", "messages", "seconds", "accepted/s", "handled/s", "µs per message"], rows))
    print()

    ok = True
    for number, (bare, bus) in enumerate(rounds, 1):
        print(
            f"round {number}: ratio {ratios[number - 1]:.3f}; bus: {bus.batches} agent batches "
            f"({bus.count / max(bus.batches, 1):.1f} messages each), {bus.full_inbox_retries} sends retried "
            f"on a full inbox, CPU {bus.cpu_seconds / bus.handled_seconds:.2f} cores in this process "
            f"and {bus.machine_cpu_seconds / bus.handled_seconds:.2f} on the whole machine"
        )
        if bare.replies != bare.count:
            print(f"round {number}: bare check failed: {bare.replies} replies for {bare.count} messages")
            ok = False
        if bus.handled_in_store != bus.count or bus.replies_in_store != bus.count:
            print(
                f"round {number}: bus check failed: store holds {bus.handled_in_store} handled requests and "
                f"{bus.replies_in_store} inform replies for {bus.count} messages"
            )
            ok = False
    print(f"median ratio handled/s bus/bare: {statistics.median(ratios):.3f} (goal >= {GOAL_RATIO})")
    return ok


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Messages per second through Caxton's in-process message bus.")
    parser.add_argument("--count", type=int, default=5000, help="messages to time per path and round (default 5000)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of bare loop then bus, each bus on a fresh store (default 3)"
    )
    parser.add_argument("--warmup", type=int, default=300, help="messages sent before timing (default 300)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent MessageService.send tasks (default 64)")
    parser.add_argument(
        "--window", type=int, default=500,
        help="most messages sent and not yet committed (default 500, half the default inbox size of 1000)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds the warm-up, and then the timed bus run, may each take before the run fails (default 60)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder with the database")

    args = parser.parse_args()
    if not 1 <= args.count <= 1_000_000:
        parser.error(f"--count must be 1 to 1000000, got {args.count}")
    if not 1 <= args.rounds <= 20:
        parser.error(f"--rounds must be 1 to 20, got {args.rounds}")
    if not 1 <= args.concurrency <= 1024:
        parser.error(f"--concurrency must be 1 to 1024, got {args.concurrency}")
    if not 1 <= args.window <= 100_000:
        parser.error(f"--window must be 1 to 100000, got {args.window}")
    if args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, got {args.warmup}")
    return args


def main() -> int:
    args = parse_args()
    args.load_at_start = load_average()
    folder = Path(tempfile.mkdtemp(prefix="caxton-bench-bus-"))
    try:
        rounds = []
        for number in range(args.rounds):
            bare = run_bare(args.count, args.warmup)
            bus = trio.run(run_bus, folder / f"round-{number + 1}", args)
            rounds.append((bare, bus))
        return 0 if print_report(rounds, args) else 1
    finally:
        if args.keep:
            print(f"data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
