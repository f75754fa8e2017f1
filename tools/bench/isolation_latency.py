"""API latency while one agent spins at its CPU limit, against the idle latency of the same server.

The script starts one `caxton serve` subprocess on 127.0.0.1 and deploys two agents: the
echo agent and a spinner with `resources.cpu` 1000m. A probe client, in its own process,
sends sequential requests in turn to GET /api/v1/agents/{echo id}, GET /api/v1/health and
POST /api/v1/messages (to echo), with a short pause between requests. The probe runs three
times on the same server:

1. idle: the spinner is deployed but has no messages;
2. spinning: the spinner burns a full core (see `--spinner`);
3. idle again, after the spinner has finished, to show the drift between phases 1 and 3.

The result is the p99 latency of phase 2 divided by that of phase 1 (goal: at most 2).

Run: /work/venv/bin/python tools/bench/isolation_latency.py [--idle-seconds 15] [--spin-seconds 20] [--spinner spin-forever]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import wasmtime

from benchlib import (
    BlockingHttpConnection,
    ServerProcess,
    format_table,
    load_average,
    machine_busy_seconds,
    machine_summary,
    percentile,
    run_queue_wait_seconds,
    start_caxton_server,
    thread_cpu_seconds,
)

# Token of the throwaway server this script starts; it never leaves the loopback interface.
TOKEN = "bench-isolation-token-0123456789"
GOAL_RATIO = 2.0
SPINNER_NAME = "spinner"
ENDPOINTS = ("GET /agents/{id}", "GET /health", "POST /messages")

# The modules SPIN_FOREVER and CPU_HOG from tests/wat.py, copied so that this script does not
# import the test tree. Unlike the original, this CPU_HOG resets the bump allocator on every
# message, as send_reply in tests/wat.py does. The original runs out of its one page of
# memory after a few hundred messages, which fails a message and restarts the agent.
_REACTOR_PRELUDE = """
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $len)))
    (local.get $ptr))
"""
SPIN_FOREVER_BODY = """
  (func (export "handle_message") (param i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0))
"""
CPU_HOG_BODY = """
  (func (export "handle_message") (param i32 i32) (result i32)
    (local $i i32)
    (global.set $next (i32.const 1024))
    (loop $busy
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $busy (i32.lt_u (local.get $i) (i32.const 30000000))))
    (i32.const 0))
"""
SPINNERS = {"spin-forever": SPIN_FOREVER_BODY, "cpu-hog": CPU_HOG_BODY}

# Seconds between posting the spinner's first message and starting the probe, so that the
# spinner is already running on its worker thread.
SPIN_SETTLE_SECONDS = 1.0
# The spin-forever spinner's time limit is the spin phase plus this margin, which covers
# the settle time and the probe's start-up. Its one message then fails with a timeout
# shortly after the probe ends, and the spinner goes idle for phase 3.
SPIN_TIMEOUT_MARGIN_SECONDS = 6.0
# cpu-hog: messages kept queued for the spinner, checked every FEED_INTERVAL_SECONDS.
FEED_BACKLOG = 20
FEED_INTERVAL_SECONDS = 0.1


def spinner_wasm(kind: str) -> bytes:
    return bytes(wasmtime.wat2wasm(f"(module {_REACTOR_PRELUDE} {SPINNERS[kind]})"))


# --- probe: runs in its own process --------------------------------------------------------


def run_probe(args: argparse.Namespace) -> int:
    """Send sequential requests for `args.seconds` and print the latencies per endpoint as JSON."""
    parts = urlsplit(args.url)
    prefix = parts.path.rstrip("/")
    connection = BlockingHttpConnection(parts.hostname, parts.port, {"X-Caxton-Token": args.token})
    body = json.dumps({"performative": "request", "receiver": "echo", "content": {"probe": True}}).encode()
    requests = [
        ("GET", f"{prefix}/agents/{args.agent_id}", None),
        ("GET", f"{prefix}/health", None),
        ("POST", f"{prefix}/messages", body),
    ]
    latencies: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
    errors = 0
    first_error = None
    pause = args.interval_ms / 1000

    for number in range(args.warmup):
        method, path, payload = requests[number % len(requests)]
        connection.request(method, path, payload)

    cpu_started = time.process_time()
    started = time.perf_counter()
    deadline = started + args.seconds
    sent = 0
    while time.perf_counter() < deadline and sent < args.max_requests:
        index = sent % len(requests)
        method, path, payload = requests[index]
        sent += 1
        before = time.perf_counter()
        try:
            status, response = connection.request(method, path, payload)
        except (OSError, ConnectionError) as exc:
            errors += 1
            first_error = first_error or f"{method} {path}: {type(exc).__name__}: {exc}"
            continue
        elapsed = time.perf_counter() - before
        if status != 200:
            errors += 1
            first_error = first_error or f"{method} {path}: HTTP {status}: {response[:200]!r}"
            continue
        latencies[ENDPOINTS[index]].append(elapsed * 1000)
        if pause:
            time.sleep(pause)
    connection.close()
    result = {
        "latencies_ms": latencies,
        "errors": errors,
        "first_error": first_error,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }
    json.dump(result, sys.stdout)
    return 0


def parse_probe_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="isolation_latency.py probe", description="Latency probe (started by the benchmark).")
    parser.add_argument("--url", required=True, help="API root, such as http://127.0.0.1:PORT/api/v1")
    parser.add_argument("--token", required=True)
    parser.add_argument("--agent-id", required=True, help="id of the agent for GET /agents/{id}")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--max-requests", type=int, required=True)
    parser.add_argument("--interval-ms", type=float, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    return parser.parse_args(argv)


# --- benchmark: starts the server, the spinner and the probes -------------------------------


class Api:
    """Blocking calls to the server under test, outside the measured probe."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.prefix = parts.path.rstrip("/")
        self._connection = BlockingHttpConnection(parts.hostname, parts.port, {"X-Caxton-Token": TOKEN})

    def get(self, path: str) -> dict:
        status, body = self._connection.request("GET", self.prefix + path)
        if status != 200:
            raise RuntimeError(f"GET {path} failed: HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    def send(self, receiver: str, content: object) -> None:
        body = json.dumps({"performative": "request", "receiver": receiver, "content": content}).encode()
        status, response = self._connection.request("POST", self.prefix + "/messages", body)
        if status != 200:
            raise RuntimeError(f"POST /messages to {receiver} failed: HTTP {status}: {response[:300]!r}")

    def close(self) -> None:
        self._connection.close()


def deploy(url: str, wasm: bytes, config: dict) -> str:
    """Deploy a module with a multipart POST and return the agent id."""
    # httpx builds the multipart body; the measured requests use BlockingHttpConnection.
    with httpx.Client(base_url=url, headers={"X-Caxton-Token": TOKEN}, timeout=60, trust_env=False) as client:
        response = client.post(
            "/agents",
            files={"wasm": (f"{config['name']}.wasm", wasm, "application/wasm")},
            data={"config": json.dumps(config)},
        )
    if response.status_code != 201:
        raise RuntimeError(f"deploying {config['name']} failed: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()["agent_id"]


class Feeder(threading.Thread):
    """Keeps `FEED_BACKLOG` messages queued for the cpu-hog spinner until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(name="spinner-feeder", daemon=True)
        self._api = Api(url)
        self._stop_event = threading.Event()
        self.sent = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                queued = self._api.get(f"/agents/{SPINNER_NAME}")["metrics"]["queue_size"]
                for _ in range(max(0, FEED_BACKLOG - queued)):
                    self._api.send(SPINNER_NAME, {"feed": self.sent})
                    self.sent += 1
                self._stop_event.wait(FEED_INTERVAL_SECONDS)
        except (OSError, ConnectionError, RuntimeError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._api.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


def run_phase(name: str, server: ServerProcess, echo_id: str, args: argparse.Namespace, seconds: float) -> dict:
    """Run one probe process against the server and return its result with CPU figures added."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "probe", "--url", server.url, "--token", TOKEN,
        "--agent-id", echo_id, "--seconds", str(seconds), "--max-requests", str(args.max_requests),
        "--interval-ms", str(args.interval_ms), "--warmup", str(args.warmup),
    ]
    threads_before = thread_cpu_seconds(server.pid)
    wait_before = run_queue_wait_seconds(server.pid)
    server_cpu, machine_cpu, started = server.cpu_seconds(), machine_busy_seconds(), time.perf_counter()
    completed = subprocess.run(command, capture_output=True, timeout=seconds + 60, check=False)
    elapsed = time.perf_counter() - started
    threads_after = thread_cpu_seconds(server.pid)
    wait = run_queue_wait_seconds(server.pid) - wait_before
    server_cpu = server.cpu_seconds() - server_cpu
    machine_cpu = machine_busy_seconds() - machine_cpu
    if completed.returncode != 0:
        raise RuntimeError(f"probe for phase {name} failed with exit code {completed.returncode}: {completed.stderr.decode()[-1500:]}")

    result = json.loads(completed.stdout)
    result["name"] = name
    result["server_cores"] = server_cpu / elapsed
    result["machine_cores"] = machine_cpu / elapsed
    # The main thread runs trio, HTTP and the services. The other threads are agent workers,
    # the store and the epoch ticker. With spin-forever the busiest of them in the spinning
    # phase is the spinner's worker, which runs the guest without holding the GIL.
    used = {tid: cpu - threads_before.get(tid, 0.0) for tid, cpu in threads_after.items()}
    result["trio_thread_cores"] = used.pop(server.pid, 0.0) / elapsed
    result["trio_thread_wait"] = wait / elapsed
    result["other_thread_cores"] = sum(used.values()) / elapsed
    result["busiest_other_cores"] = max(used.values(), default=0.0) / elapsed

    for values in result["latencies_ms"].values():
        values.sort()
    result["all_ms"] = sorted(value for values in result["latencies_ms"].values() for value in values)
    return result


def server_cores(server: ServerProcess, seconds: float) -> float:
    before = server.cpu_seconds()
    time.sleep(seconds)
    return (server.cpu_seconds() - before) / seconds


def handled_count(api: Api) -> int:
    """Return the spinner's processed plus failed messages."""
    metrics = api.get(f"/agents/{SPINNER_NAME}")["metrics"]
    return metrics["messages_processed"] + metrics["messages_failed"]


def wait_until_idle(api: Api, expected: int, timeout: float) -> str:
    """Wait until the spinner has processed or failed `expected` messages in all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handled_count(api) >= expected:
            return "idle"
        time.sleep(0.2)
    return f"still busy after {timeout:g}s"


def measure(folder: Path, args: argparse.Namespace) -> tuple[list[dict], dict]:
    spin_timeout = args.spin_seconds + SPIN_TIMEOUT_MARGIN_SECONDS if args.spinner == "spin-forever" else args.hog_timeout
    server = start_caxton_server(folder, TOKEN, log_level=args.log_level)
    notes: dict = {"spinner_timeout": spin_timeout}
    try:
        echo_wasm = (resources.files("caxton.examples") / "echo.wasm").read_bytes()
        echo_id = deploy(server.url, echo_wasm, {"name": "echo"})
        deploy(
            server.url, spinner_wasm(args.spinner),
            {"name": SPINNER_NAME, "resources": {"cpu": args.spinner_cpu, "timeout": f"{spin_timeout:g}s"}},
        )
        api = Api(server.url)
        phases = [run_phase("idle", server, echo_id, args, args.idle_seconds)]

        handled_before = handled_count(api)
        sent = 0
        feeder = None
        if args.spinner == "spin-forever":
            api.send(SPINNER_NAME, {"spin": True})
            sent = 1
        else:
            feeder = Feeder(server.url)
            feeder.start()
        notes["server_cores_before_probe"] = server_cores(server, SPIN_SETTLE_SECONDS)
        try:
            phases.append(run_phase("spinning", server, echo_id, args, args.spin_seconds))
        finally:
            if feeder is not None:
                feeder.stop()
                sent = feeder.sent
                notes["feeder_sent"] = feeder.sent
                notes["feeder_error"] = feeder.error

        # Phase 3 starts only after the spinner has finished every message it was sent,
        # including the batch it was running when the spinning probe ended.
        idle_timeout = spin_timeout + 30 if args.spinner == "spin-forever" else FEED_BACKLOG * args.hog_timeout + 30
        notes["spinner_after_spin_phase"] = wait_until_idle(api, handled_before + sent, idle_timeout)
        spinner = api.get(f"/agents/{SPINNER_NAME}")
        notes["spinner_status"] = spinner["status"]
        notes["spinner_metrics"] = spinner["metrics"]
        phases.append(run_phase("idle after", server, echo_id, args, args.after_seconds))
        api.close()
    finally:
        code = server.stop()
        if code not in (0, None):
            print(f"caxton server exited with code {code}; log in {server.log_path}", file=sys.stderr)
    return phases, notes


def print_report(phases: list[dict], notes: dict, args: argparse.Namespace) -> bool:
    """Print the tables and ratios; return True when every probe request succeeded."""
    print(f"machine: {machine_summary()}")
    print(f"load average at start: {args.load_at_start}")
    print(
        f"spinner: {args.spinner}, cpu {args.spinner_cpu}, timeout {notes['spinner_timeout']:g}s; probe pause "
        f"{args.interval_ms:g} ms between requests"
    )
    print()
    headers = [
        "phase", "endpoint", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms",
        "server CPU", "trio thread", "trio run-queue wait", "other threads", "busiest other thread",
        "probe CPU", "machine CPU",
    ]
    rows = []
    for phase in phases:
        cpu = [
            phase["server_cores"], phase["trio_thread_cores"], phase["trio_thread_wait"],
            phase["other_thread_cores"], phase["busiest_other_cores"],
            phase["cpu_seconds"] / phase["seconds"], phase["machine_cores"],
        ]
        for endpoint in ENDPOINTS:
            values = phase["latencies_ms"][endpoint]
            rows.append([phase["name"], endpoint, len(values), "", *latency_columns(values), *[""] * len(cpu)])
        rows.append([phase["name"], "all", len(phase["all_ms"]), phase["errors"], *latency_columns(phase["all_ms"]), *cpu])
    print(format_table(headers, rows))
    print(
        "CPU columns are in cores over the phase; machine CPU above server plus probe means other processes ran. "
        "Trio run-queue wait is the share of the phase in which the server's main thread was runnable but had no core."
    )
    print(f"server CPU in the {SPIN_SETTLE_SECONDS:g}s before the spinning probe: {notes['server_cores_before_probe']:.2f} cores")
    if "feeder_sent" in notes:
        print(f"messages fed to the spinner: {notes['feeder_sent']}" + (f"; feeder error: {notes['feeder_error']}" if notes["feeder_error"] else ""))
    print(
        f"spinner after the spinning phase: {notes['spinner_after_spin_phase']}, status {notes['spinner_status']}, "
        f"processed {notes['spinner_metrics']['messages_processed']}, failed {notes['spinner_metrics']['messages_failed']}, "
        f"restarts {notes['spinner_metrics']['restarts']}, throttled {notes['spinner_metrics']['throttled_seconds']}s"
    )
    print()

    idle, spinning, after = phases
    for label, fraction in (("p99", 0.99), ("p50", 0.5)):
        parts = []
        for endpoint in (*ENDPOINTS, "all"):
            base = idle["all_ms"] if endpoint == "all" else idle["latencies_ms"][endpoint]
            loaded = spinning["all_ms"] if endpoint == "all" else spinning["latencies_ms"][endpoint]
            parts.append(f"{endpoint} {ratio(loaded, base, fraction)}")
        print(f"{label} spinning/idle: " + ", ".join(parts))
    print(f"p99 idle after/idle: {ratio(after['all_ms'], idle['all_ms'], 0.99)} (drift between the two idle phases)")
    headline = percentile(spinning["all_ms"], 0.99) / percentile(idle["all_ms"], 0.99) if idle["all_ms"] else float("nan")
    verdict = "met" if headline <= GOAL_RATIO else "not met"
    print(f"ratio p99 spinning/idle, all endpoints: {headline:.2f} (goal <= {GOAL_RATIO:g}: {verdict})")
    ok = True
    for phase in phases:
        if phase["errors"]:
            ok = False
            print(f"phase {phase['name']}: {phase['errors']} failed requests; first: {phase['first_error']}")
    return ok


def latency_columns(values: list[float]) -> list[float]:
    if not values:
        return [0.0, 0.0, 0.0, 0.0]
    return [percentile(values, 0.5), percentile(values, 0.9), percentile(values, 0.99), values[-1]]


def ratio(loaded: list[float], base: list[float], fraction: float) -> str:
    reference = percentile(base, fraction)
    return f"{percentile(loaded, fraction) / reference:.2f}" if reference else "n/a"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="API latency while one agent spins at its CPU limit, against idle latency.")
    parser.add_argument("--idle-seconds", type=float, default=15.0, help="length of the first idle phase in seconds (default 15)")
    parser.add_argument("--spin-seconds", type=float, default=20.0, help="length of the spinning phase in seconds (default 20)")
    parser.add_argument("--after-seconds", type=float, default=10.0, help="length of the idle phase after spinning in seconds (default 10)")
    parser.add_argument(
        "--spinner", choices=sorted(SPINNERS), default="spin-forever",
        help="spin-forever: one message that loops until the agent's time limit, set just past the spinning phase "
        "(default); cpu-hog: tens of milliseconds of work per message, with messages kept queued by a feeder thread",
    )
    parser.add_argument("--spinner-cpu", default="1000m", help="the spinner's resources.cpu (default 1000m, a whole core)")
    parser.add_argument("--hog-timeout", type=float, default=5.0, help="cpu-hog only: the spinner's time limit per message in seconds (default 5)")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="pause between two probe requests in milliseconds (default 5)")
    parser.add_argument("--max-requests", type=int, default=20_000, help="maximum probe requests per phase (default 20000)")
    parser.add_argument("--warmup", type=int, default=60, help="probe requests sent before each phase's measurement (default 60)")
    parser.add_argument("--log-level", default="warning", help="Caxton server log level, as for `caxton serve` (default warning)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the server log and database")
    args = parser.parse_args()
    for name in ("idle_seconds", "spin_seconds", "after_seconds"):
        value = getattr(args, name)
        if not 1 <= value <= 240:
            parser.error(f"--{name.replace('_', '-')} must be 1 to 240 seconds, got {value:g}")
    if not 0 <= args.interval_ms <= 1000:
        parser.error(f"--interval-ms must be 0 to 1000, got {args.interval_ms:g}")
    if not 1 <= args.max_requests <= 1_000_000:
        parser.error(f"--max-requests must be 1 to 1000000, got {args.max_requests}")
    if not 0 < args.hog_timeout <= 60:
        parser.error(f"--hog-timeout must be above 0 and at most 60 seconds, got {args.hog_timeout:g}")
    return args


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        return run_probe(parse_probe_args(sys.argv[2:]))
    args = parse_args()
    args.load_at_start = load_average()
    folder = Path(tempfile.mkdtemp(prefix="caxton-bench-isolation-"))
    try:
        phases, notes = measure(folder, args)
        ok = print_report(phases, notes, args)
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"server log and data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
