"""Helpers shared by the benchmarks: server subprocesses, CPU accounting and result tables.

Every server started here listens on 127.0.0.1 only and is stopped by `ServerProcess.stop`,
which sends SIGTERM, waits, and falls back to SIGKILL.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

LOOPBACK = "127.0.0.1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and all its threads, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name in field 2 may contain spaces, so split after its closing bracket.
    fields = text[text.rindex(")") + 2 :].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / _CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """Return user plus system CPU seconds per thread id of a process, from /proc/PID/task/TID/stat.

    Threads that exit while the folder is read are left out.
    """
    seconds = {}
    for entry in os.scandir(f"/proc/{pid}/task"):
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return seconds


def run_queue_wait_seconds(pid: int, tid: int | None = None) -> float:
    """Return the seconds a thread (by default the main thread) has waited runnable for a CPU, from /proc schedstat.

    A rise in this wait while the thread has work means the cores were busy with other
    threads or processes: CPU contention rather than lock contention such as the GIL.
    """
    fields = Path(f"/proc/{pid}/task/{tid or pid}/schedstat").read_text().split()
    return int(fields[1]) / 1e9


def machine_busy_seconds() -> float:
    """Return the CPU seconds that all cores together have spent busy since boot (not idle, not in I/O wait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    # Guest time is already counted in user time, so only the first eight fields are summed.
    return (sum(fields[:8]) - idle - iowait) / _CLOCK_TICKS


class ServerProcess:
    """A server subprocess whose log goes to a file, and the URL it printed there."""

    def __init__(self, command: Sequence[str], log_path: Path, url_pattern: str, env: dict[str, str] | None = None):
        self.command = list(command)
        self.log_path = log_path
        self._url_pattern = re.compile(url_pattern)
        self._env = env
        self._log_file = None
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 30.0) -> str:
        """Start the process and return the URL it logs; raise RuntimeError when none comes."""
        self._log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, env=self._env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = self._url_pattern.search(self.log_path.read_text(errors="replace"))
            if match:
                self.url = match.group(1)
                return self.url
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"server {self.command[:3]} printed no URL within {timeout:g}s; log tail:\n{tail}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Send SIGTERM, wait up to `timeout` seconds, then SIGKILL; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.process.returncode


def machine_summary() -> str:
    """Return one line that names the cores, CPU model, Python and wasmtime versions."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        wasmtime_version = metadata.version("wasmtime")
    except metadata.PackageNotFoundError:
        wasmtime_version = "not installed"
    return (
        f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, wasmtime-py {wasmtime_version}"
    )


def load_average() -> str:
    """Return the 1-, 5- and 15-minute load averages, which show whether other work shared the machine."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a Markdown table: numbers right-aligned, text left-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    for values, row in zip(rows, cells):
        aligned = [
            text.rjust(w) if isinstance(value, (int, float)) else text.ljust(w)
            for value, text, w in zip(values, row, widths)
        ]
        lines.append("| " + " | ".join(aligned) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank value below which `fraction` of the sorted samples fall, or 0.0 when empty."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


# Rate limits for benchmark servers, far above any rate these scripts reach, so that no
# request gets 429 from the limiter. The defaults (10 deploys per minute, 1000 messages per
# second) would otherwise shape the results.
BENCH_RATE_LIMITS = {
    "CAXTON_RATE_LIMITS_MESSAGES": "100000/s",
    "CAXTON_RATE_LIMITS_AGENT_OPERATIONS": "100000/min",
    "CAXTON_RATE_LIMITS_METRICS": "100000/min",
}


def caxton_environment(token: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Return this process's environment without its CAXTON_* variables, plus the token, BENCH_RATE_LIMITS and `overrides`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAXTON_")}
    env["CAXTON_TOKEN"] = token
    env.update(BENCH_RATE_LIMITS)
    env.update(overrides or {})
    return env


def start_caxton_server(
    folder: Path, token: str, *, env_overrides: dict[str, str] | None = None, log_level: str = "info"
) -> ServerProcess:
    """Start `caxton serve` on 127.0.0.1 with a random port and data in `folder`/caxton-data; return it running.

    The log goes to `folder`/caxton.log, and `ServerProcess.url` is the API root, such as
    http://127.0.0.1:PORT/api/v1. Stop it with `ServerProcess.stop`.
    """
    command = [
        sys.executable, "-m", "caxton", "serve", "--host", LOOPBACK, "--port", "0",
        "--data-dir", str(folder / "caxton-data"), "--log-level", log_level,
    ]
    server = ServerProcess(
        command, folder / "caxton.log", r"serving (http://\S+/api/v1)", env=caxton_environment(token, env_overrides)
    )
    server.start()
    return server


def process_memory(pid: int | str = "self") -> dict[str, int]:
    """Return RSS and virtual size in bytes, memory mappings, threads and open descriptors of a process.

    The keys are `rss`, `vm_size`, `mappings`, `threads` and `fds`, read from /proc/PID/status,
    /proc/PID/maps and /proc/PID/fd.
    """
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    with open(f"/proc/{pid}/maps", "rb") as maps:
        mappings = sum(1 for _ in maps)
    return {
        "rss": int(fields["VmRSS"][0]) * 1024,
        "vm_size": int(fields["VmSize"][0]) * 1024,
        "mappings": mappings,
        "threads": int(fields["Threads"][0]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def max_map_count() -> int | None:
    """Return the kernel's limit on memory mappings per process (vm.max_map_count), or None when unreadable."""
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None


def linear_slope(points: Sequence[tuple[float, float]]) -> float:
    """Return the least-squares slope of y over x, or 0.0 for fewer than two distinct x values."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


class BlockingHttpConnection:
    """One HTTP/1.1 keep-alive connection on a blocking socket, for sequential requests.

    It costs far less client CPU per request than httpx, so a latency probe measures the
    server and not the client. It reads only what hypercorn sends back to these requests:
    a status line, headers and a Content-Length body. It reconnects after the server closes
    the connection.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        self._address = (host, port)
        self._timeout = timeout
        self._socket: socket.socket | None = None
        self._buffer = bytearray()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._header_block = f"Host: {host}:{port}\r\n{extra}".encode()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request and return (status, body); raise OSError or ConnectionError on failure."""
        if self._socket is None:
            self._socket = socket.create_connection(self._address, timeout=self._timeout)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer.clear()
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._header_block
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
        try:
            self._socket.sendall(head + b"\r\n" + (body or b""))
            status, headers, payload = self._read_response()
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, payload

    def _read_response(self) -> tuple[int, dict[str, str], bytes]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise ConnectionError(f"response without Content-Length (status {status}); this client reads no other framing")
        length = int(headers["content-length"])
        while len(self._buffer) < end + 4 + length:
            self._receive()
        payload = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        return status, headers, payload

    def _receive(self) -> None:
        assert self._socket is not None
        data = self._socket.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection before the response was complete")
        self._buffer += data

    def close(self) -> None:
        if self._socket is not None:
            sock, self._socket = self._socket, None
            sock.close()
