"""REST throughput: messages per second through the echo agent, against a bare ASGI app.

Each round starts two servers as subprocesses on 127.0.0.1, one after the other: first the
baseline (tools/bench/asgi_baseline.py on hypercorn's trio worker), then `caxton serve` with
a fresh data folder and the echo agent deployed. This process is only the client: under
trio, `--concurrency` senders with one keep-alive connection each POST the same JSON message
for `--duration` seconds or until `--max-requests` are sent. Against Caxton it then polls
history until every echo reply is stored, which gives the handled rate next to the accept
rate. The servers and this client are separate processes, so on a 2-core machine each side
has about one core.

Run: /work/venv/bin/python tools/bench/rest_throughput.py [--duration 8] [--rounds 2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import attrs
import httpx
import trio

from caxton.api.auth import client_identity

from benchlib import (
    LOOPBACK,
    ServerProcess,
    format_table,
    load_average,
    machine_busy_seconds,
    machine_summary,
    percentile,
)

# Token of the throwaway server this script starts; it never leaves the loopback interface.
TOKEN = "bench-admin-token-0123456789"
GOAL_RATIO = 0.6
HISTORY_POLL_SECONDS = 0.02
SPOT_CHECKED_CONVERSATIONS = 20
# py-spy samples per second with --profile-dir: low, because the profiler needs CPU too.
PROFILE_RATE = 47


@attrs.define
class LoadResult:
    accepted: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = attrs.field(factory=list)
    conversations: list[str] = attrs.field(factory=list)
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    # Busy CPU seconds of the whole machine over the same span: above server plus client
    # CPU, other processes shared the cores.
    machine_cpu: float = 0.0
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed if self.elapsed else 0.0


def message_body(sequence: int) -> dict:
    return {"performative": "request", "receiver": "echo", "content": {"seq": sequence, "text": "ping"}}


class KeepAliveConnection:
    """One HTTP/1.1 keep-alive connection that POSTs JSON and reads Content-Length replies.

    It costs far less client CPU than httpx, which took about 2 ms per request on the machine
    described in docs/benchmarks.md, so one client core can outpace the servers under test. It handles
    only what hypercorn sends back here: a status line, headers and a Content-Length body.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._stream: trio.SocketStream | None = None
        self._buffer = bytearray()
        self._header_prefix = (
            f"Host: {host}:{port}\r\nX-Caxton-Token: {TOKEN}\r\nContent-Type: application/json\r\n"
        ).encode()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Send one POST and return (status, body); reconnect once the server closes the connection."""
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self._host, self._port)
            self._buffer.clear()
        request = (
            f"POST {path} HTTP/1.1\r\n".encode() + self._header_prefix
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        try:
            await self._stream.send_all(request)
            status, headers, payload = await self._read_response()
        except BaseException:
            await self.aclose()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return status, payload

    async def _read_response(self) -> tuple[int, dict[str, str], bytes]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            await self._receive()
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise ConnectionError(f"response without Content-Length (status {status}); this client reads no other framing")
        length = int(headers["content-length"])
        while len(self._buffer) < end + 4 + length:
            await self._receive()
        payload = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        return status, headers, payload

    async def _receive(self) -> None:
        assert self._stream is not None
        data = await self._stream.receive_some(65536)
        if not data:
            raise ConnectionError("server closed the connection before the response was complete")
        self._buffer += data

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()


class HttpxConnection:
    """The same interface on an httpx AsyncClient limited to one connection (`--client httpx`)."""

    def __init__(self, host: str, port: int) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}", headers={"X-Caxton-Token": TOKEN, "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=1), timeout=30, trust_env=False,
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            response = await self._client.post(path, content=body)
        except httpx.HTTPError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from None
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


CLIENTS = {"raw": KeepAliveConnection, "httpx": HttpxConnection}


async def drive_load(
    url: str, path: str, *, client: str, concurrency: int, duration: float, max_requests: int
) -> LoadResult:
    """POST bodies from `concurrency` tasks, one connection each, until `duration` passes or `max_requests` are sent."""
    parsed = httpx.URL(url)
    prefix = parsed.path.rstrip("/")
    connection_class = CLIENTS[client]
    result = LoadResult()
    issued = 0
    deadline = trio.current_time() + duration

    async def sender() -> None:
        nonlocal issued
        connection = connection_class(parsed.host, parsed.port)
        try:
            while issued < max_requests and trio.current_time() < deadline:
                sequence = issued
                issued += 1
                body = json.dumps(message_body(sequence), separators=(",", ":")).encode()
                started = time.perf_counter()
                try:
                    status, payload = await connection.post(prefix + path, body)
                except (OSError, ValueError) as exc:
                    result.errors += 1
                    result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                    continue
                if status != 200:
                    result.errors += 1
                    result.first_error = result.first_error or f"HTTP {status}: {payload[:200]!r}"
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.accepted += 1
                result.conversations.append(json.loads(payload)["conversation_id"])
        finally:
            await connection.aclose()

    cpu_started, started = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(sender)
    result.elapsed = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu_started
    result.latencies.sort()
    return result


def new_client(base_url: str) -> httpx.AsyncClient:
    """Create an httpx client for the few requests outside the measured load: deploy and history polls."""
    return httpx.AsyncClient(base_url=base_url, headers={"X-Caxton-Token": TOKEN}, timeout=30, trust_env=False)


async def measure_baseline(server: ServerProcess, args: argparse.Namespace, profile_dir: Path | None) -> LoadResult:
    load = functools.partial(drive_load, server.url, "/", client=args.client, concurrency=args.concurrency)
    await load(duration=60, max_requests=args.warmup)
    profiler = start_profiler(server.pid, profile_dir / "baseline.raw", args.duration) if profile_dir else None
    cpu_before, machine_before = server.cpu_seconds(), machine_busy_seconds()
    result = await load(duration=args.duration, max_requests=args.max_requests)
    result.server_cpu = server.cpu_seconds() - cpu_before
    result.machine_cpu = machine_busy_seconds() - machine_before
    if profiler is not None:
        stop_profiler(profiler)
    return result


async def deploy_echo(client: httpx.AsyncClient) -> None:
    wasm = (resources.files("caxton.examples") / "echo.wasm").read_bytes()
    files = {"wasm": ("echo.wasm", wasm, "application/wasm")}
    response = await client.post("/agents", files=files, data={"config": json.dumps({"name": "echo"})})
    if response.status_code != 201:
        raise RuntimeError(f"deploying echo.wasm failed: HTTP {response.status_code}: {response.text[:300]}")


async def count_replies(client: httpx.AsyncClient, receiver: str) -> int:
    response = await client.get("/messages", params={"receiver": receiver, "limit": 1})
    response.raise_for_status()
    return response.json()["total"]


async def wait_for_replies(client: httpx.AsyncClient, receiver: str, expected: int, timeout: float) -> int:
    """Poll history until `expected` replies to `receiver` are stored; return the last count."""
    count = 0
    with trio.move_on_after(timeout):
        while True:
            count = await count_replies(client, receiver)
            if count >= expected:
                break
            await trio.sleep(HISTORY_POLL_SECONDS)
    return count


async def spot_check(client: httpx.AsyncClient, conversations: list[str]) -> list[str]:
    """Check that sampled conversations hold a handled request and its inform reply."""
    problems = []
    for conversation in random.sample(conversations, min(SPOT_CHECKED_CONVERSATIONS, len(conversations))):
        response = await client.get("/messages", params={"conversation_id": conversation})
        messages = response.json()["messages"]
        shape = [(m["performative"], m["status"]) for m in messages]
        if shape != [("request", "handled"), ("inform", "delivered")]:
            problems.append(f"{conversation}: {shape}")
    return problems


@attrs.define
class CaxtonResult:
    load: LoadResult
    handled: int
    handled_seconds: float
    # Replies stored by the time the send phase ended: low when the agent falls behind.
    handled_while_sending: int
    problems: list[str]

    @property
    def handled_rate(self) -> float:
        return self.handled / self.handled_seconds if self.handled_seconds else 0.0


async def measure_caxton(server: ServerProcess, args: argparse.Namespace, profile_dir: Path | None) -> CaxtonResult:
    # The sender of REST messages is the token's client identity; echo replies go back to it.
    identity = client_identity(TOKEN)
    api = f"{server.url}/api/v1"
    load_messages = functools.partial(
        drive_load, api, "/messages", client=args.client, concurrency=args.concurrency
    )
    async with new_client(api) as poller:
        await deploy_echo(poller)
        warmup = await load_messages(duration=60, max_requests=args.warmup)
        before = await wait_for_replies(poller, identity, warmup.accepted, args.drain_timeout)
        if before < warmup.accepted:
            raise RuntimeError(f"only {before} of {warmup.accepted} warm-up replies arrived in {args.drain_timeout:g}s")

        profiler = start_profiler(server.pid, profile_dir / "caxton.raw", args.duration) if profile_dir else None
        cpu_before, machine_before = server.cpu_seconds(), machine_busy_seconds()
        started = time.perf_counter()
        load = await load_messages(duration=args.duration, max_requests=args.max_requests)
        load.server_cpu = server.cpu_seconds() - cpu_before
        load.machine_cpu = machine_busy_seconds() - machine_before
        handled_while_sending = await count_replies(poller, identity) - before
        expected = before + load.accepted
        count = await wait_for_replies(poller, identity, expected, args.drain_timeout)
        handled_seconds = time.perf_counter() - started
        if profiler is not None:
            stop_profiler(profiler)
        problems = await spot_check(poller, load.conversations)
    if count < expected:
        problems.insert(0, f"only {count - before} of {load.accepted} replies arrived within {args.drain_timeout:g}s")
    return CaxtonResult(
        load=load, handled=count - before, handled_seconds=handled_seconds,
        handled_while_sending=handled_while_sending, problems=problems,
    )


def start_profiler(pid: int, output: Path, duration: float) -> subprocess.Popen:
    """Start py-spy on a server for the measured phase; it writes collapsed stacks to `output`."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [
        py_spy, "record", "--pid", str(pid), "--nonblocking", "--threads", "--rate", str(PROFILE_RATE),
        "--format", "raw", "--output", str(output), "--duration", str(math.ceil(duration)),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_profiler(profiler: subprocess.Popen) -> None:
    try:
        _, errors = profiler.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        profiler.terminate()
        _, errors = profiler.communicate(timeout=10)
    if profiler.returncode != 0:
        print(f"py-spy failed with exit code {profiler.returncode}: {errors.decode(errors='replace')[-500:]}", file=sys.stderr)


def start_baseline(folder: Path) -> ServerProcess:
    script = Path(__file__).with_name("asgi_baseline.py")
    server = ServerProcess(
        [sys.executable, str(script), "--port", "0"], folder / "baseline.log", r"baseline serving (http://\S+)"
    )
    server.start()
    return server


def start_caxton(folder: Path, log_level: str) -> ServerProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAXTON_")}
    env["CAXTON_TOKEN"] = TOKEN
    command = [
        sys.executable, "-m", "caxton", "serve", "--host", LOOPBACK, "--port", "0",
        "--data-dir", str(folder / "caxton-data"), "--log-level", log_level,
    ]
    server = ServerProcess(command, folder / "caxton.log", r"serving (http://\S+?)/api/v1", env=env)
    server.start()
    return server


def print_report(rounds: list[tuple[LoadResult, CaxtonResult]], args: argparse.Namespace) -> None:
    def row(name: str, load: LoadResult, handled_rate: float | str) -> list[object]:
        return [
            name, load.accepted, load.errors, load.elapsed, load.rate, handled_rate,
            percentile(load.latencies, 0.5) * 1000, percentile(load.latencies, 0.99) * 1000,
            load.server_cpu / load.elapsed if load.elapsed else 0.0,
            load.client_cpu / load.elapsed if load.elapsed else 0.0,
            load.machine_cpu / load.elapsed if load.elapsed else 0.0,
        ]

    headers = [
        "round", "server", "accepted", "errors", "seconds", "accepted/s", "handled/s",
        "p50 ms", "p99 ms", "server CPU", "client CPU", "machine CPU",
    ]
    rows, accept_ratios, handled_ratios = [], [], []
    for number, (baseline, caxton) in enumerate(rounds, 1):
        rows.append([number, *row("baseline ASGI", baseline, "n/a")])
        rows.append([number, *row("caxton + echo", caxton.load, caxton.handled_rate)])
        accept_ratios.append(caxton.load.rate / baseline.rate if baseline.rate else 0.0)
        handled_ratios.append(caxton.handled_rate / baseline.rate if baseline.rate else 0.0)

    print(f"machine: {machine_summary()}")
    print(f"load average at start: {args.load_at_start}")
    print(
        f"client {args.client}, concurrency {args.concurrency}, {args.duration:g}s or at most "
        f"{args.max_requests} requests per server and round"
    )
    print()
    print(format_table(headers, rows))
    print("CPU columns are in cores over the send phase; machine CPU above server plus client means other processes ran.")
    print()
    for number, (_, caxton) in enumerate(rounds, 1):
        print(
            f"round {number}: caxton handled {caxton.handled} of {caxton.load.accepted} accepted messages "
            f"in {caxton.handled_seconds:.2f}s, {caxton.handled_while_sending} of them before the send phase ended; "
            f"ratio accepted/s {accept_ratios[number - 1]:.3f}, handled/s {handled_ratios[number - 1]:.3f}"
        )
    print(f"median ratio accepted/s caxton/baseline: {statistics.median(accept_ratios):.3f} (goal >= {GOAL_RATIO})")
    print(f"median ratio handled/s  caxton/baseline: {statistics.median(handled_ratios):.3f} (goal >= {GOAL_RATIO})")
    for number, (baseline, caxton) in enumerate(rounds, 1):
        for load, name in ((baseline, "baseline"), (caxton.load, "caxton")):
            if load.first_error:
                print(f"round {number}: {name}: first error: {load.first_error}")
        for problem in caxton.problems:
            print(f"round {number}: caxton check failed: {problem}")


def run_round(folder: Path, args: argparse.Namespace, profile_dir: Path | None) -> tuple[LoadResult, CaxtonResult]:
    """Measure the baseline server, then a fresh Caxton server; stop each before the next starts."""
    baseline_server = start_baseline(folder)
    try:
        baseline = trio.run(measure_baseline, baseline_server, args, profile_dir)
    finally:
        baseline_server.stop()
    caxton_server = start_caxton(folder, args.log_level)
    try:
        caxton = trio.run(measure_caxton, caxton_server, args, profile_dir)
    finally:
        code = caxton_server.stop()
        if code not in (0, None):
            print(f"caxton server exited with code {code}; log in {caxton_server.log_path}", file=sys.stderr)
    return baseline, caxton


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Messages per second through Caxton's REST API and echo agent.")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per server and round (default 8)")
    parser.add_argument(
        "--max-requests", type=int, default=50_000, help="maximum requests per server and round (default 50000)"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of baseline then Caxton, each on fresh servers (default 2)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent senders, one connection each (default 32)")
    parser.add_argument("--warmup", type=int, default=300, help="requests sent before measuring (default 300)")
    parser.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds to wait for echo replies after sending (default 30)"
    )
    parser.add_argument(
        "--client", choices=sorted(CLIENTS), default="raw",
        help="load client: raw keep-alive sockets (default) or httpx, one AsyncClient per sender",
    )
    parser.add_argument("--log-level", default="info", help="Caxton server log level, as for `caxton serve` (default info)")
    parser.add_argument(
        "--profile-dir", type=Path, metavar="DIR",
        help="record each server with py-spy during the first round's measured load into DIR/baseline.raw and DIR/caxton.raw",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with server logs and database")

    args = parser.parse_args()
    if args.profile_dir is not None:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    if args.duration <= 0 or args.duration > 300:
        parser.error(f"--duration must be in (0, 300] seconds, got {args.duration:g}")
    if not 1 <= args.concurrency <= 256:
        parser.error(f"--concurrency must be 1 to 256, got {args.concurrency}")
    if not 1 <= args.rounds <= 20:
        parser.error(f"--rounds must be 1 to 20, got {args.rounds}")
    if not 1 <= args.max_requests <= 1_000_000:
        parser.error(f"--max-requests must be 1 to 1000000, got {args.max_requests}")
    return args


def main() -> int:
    args = parse_args()
    args.load_at_start = load_average()
    folder = Path(tempfile.mkdtemp(prefix="caxton-bench-rest-"))
    try:
        rounds = []
        for number in range(args.rounds):
            round_folder = folder / f"round-{number + 1}"
            round_folder.mkdir()
            rounds.append(run_round(round_folder, args, args.profile_dir if number == 0 else None))
        print_report(rounds, args)
        return 1 if any(caxton.problems for _, caxton in rounds) else 0
    finally:
        if args.keep:
            print(f"server logs and data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
