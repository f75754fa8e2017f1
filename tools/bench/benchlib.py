"""Helpers shared by the benchmarks: server subprocesses, CPU accounting and result tables.

Every server started here listens on 127.0.0.1 only and is stopped by `ServerProcess.stop`,
which sends SIGTERM, waits, and falls back to SIGKILL.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
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
    """One line naming the cores, CPU model, Python and wasmtime versions."""
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


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a Markdown table with right-aligned numbers."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    for row in cells:
        lines.append("| " + " | ".join(value.rjust(w) for value, w in zip(row, widths)) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted samples fall (nearest rank); 0.0 when empty."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]
