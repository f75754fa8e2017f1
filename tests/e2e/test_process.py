"""The `caxton` command as a user runs it: a real process, curl, signals and restarts."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import wat
from tests.conftest import example_bytes

CAXTON = [sys.executable, "-m", "caxton"]
_URL = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class ServerProcess:
    """`caxton serve` on a free loopback port, its stderr in a log file."""

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CAXTON_")}
        environment.update(env or {})
        self._log_handle = log.open("ab")
        self.process = subprocess.Popen(
            [*CAXTON, "serve", "--port", "0", "--data-dir", str(data_dir)],
            stdout=self._log_handle, stderr=self._log_handle, env=environment,
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            matches = _URL.findall(self.log.read_text())
            if matches:
                return matches[-1]
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"server did not start:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self._log_handle.close()
        return code


@pytest.fixture
def spawn(tmp_path):
    started: list[ServerProcess] = []

    def start(data_dir: Path = tmp_path / "data", env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(data_dir, tmp_path / f"server-{len(started)}.log", env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


def _wait(predicate, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_quick_start_with_curl(spawn, tmp_path):
    server = spawn()
    banner = _wait(lambda: re.search(r'export CAXTON_TOKEN="\$\(cat (\S+)\)"', server.log.read_text()))
    token_file = Path(banner.group(1))
    assert token_file.exists()
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    assert token not in server.log.read_text()

    (tmp_path / "agent.wasm").write_bytes(example_bytes("echo"))
    script = f"""
set -euo pipefail
export CAXTON_TOKEN="$(cat {token_file})"
export CAXTON_API="{server.url}/api/v1"
curl -sS -X POST "$CAXTON_API/agents" \\
-H "X-Caxton-Token: $CAXTON_TOKEN" \\
-H "Content-Type: multipart/form-data" \\
-F "wasm=@agent.wasm" \\
-F 'config={{"name":"my-agent","resources":{{"memory":"50MB"}}}}' > deploy.json
AGENT_ID=$(python3 -c 'import json; print(json.load(open("deploy.json"))["agent_id"])')
curl -sS -X POST "$CAXTON_API/messages" \\
-H "X-Caxton-Token: $CAXTON_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{{
"performative": "request",
"sender": "client_001",
"receiver": "'"$AGENT_ID"'",
"content": {{"action": "process", "data": {{"key": "value"}}}}
}}' > send.json
curl -sS -H "X-Caxton-Token: $CAXTON_TOKEN" \\
"$CAXTON_API/agents?status=running" > list.json
"""
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, timeout=60)
    deploy = json.loads((tmp_path / "deploy.json").read_text())
    send = json.loads((tmp_path / "send.json").read_text())
    listing = json.loads((tmp_path / "list.json").read_text())
    assert deploy["name"] == "my-agent"
    assert deploy["status"] == "running"
    assert send["status"] == "delivered"
    assert [a["agent_id"] for a in listing["agents"]] == [deploy["agent_id"]]
    assert listing["total"] == 1

    client = httpx.Client(base_url=f"{server.url}/api/v1", headers={"X-Caxton-Token": token})
    history = _wait(
        lambda: (h := client.get("/messages", params={"conversation_id": send["conversation_id"]}).json())["total"] == 2
        and h
    )
    assert history["messages"][1]["performative"] == "inform"
    assert server.stop(signal.SIGINT) == 0


def test_sigkill_after_burst_loses_nothing(spawn, tmp_path):
    token = "restart-test-token-0123456789"
    data_dir = tmp_path / "data"
    server = spawn(data_dir, {"CAXTON_TOKEN": token})
    client = httpx.Client(base_url=f"{server.url}/api/v1", headers={"X-Caxton-Token": token}, timeout=30)
    deployed = client.post("/agents", files={"wasm": ("slow.wasm", wat.SLOW_ECHO)}, data={"config": '{"name":"slow"}'})
    assert deployed.status_code == 201, deployed.text
    agent_id = deployed.json()["agent_id"]

    acknowledged = []
    for index in range(60):
        response = client.post("/messages", json={"performative": "request", "receiver": "slow", "content": {"i": index}})
        assert response.json()["status"] == "delivered"
        acknowledged.append(response.json()["message_id"])
    server.stop(signal.SIGKILL)

    server = spawn(data_dir, {"CAXTON_TOKEN": token})
    client = httpx.Client(base_url=f"{server.url}/api/v1", headers={"X-Caxton-Token": token}, timeout=30)

    def all_handled():
        stored = client.get("/messages", params={"receiver": agent_id, "limit": 1000}).json()["messages"]
        states = {m["message_id"]: m["status"] for m in stored}
        return all(states.get(message_id) == "handled" for message_id in acknowledged)

    _wait(all_handled, timeout=60)
    # The kill left work queued, so the recovery path really ran.
    assert re.search(r"\d+ stored messages queued again", server.log.read_text())
    replies = client.get("/messages", params={"sender": agent_id, "limit": 1000}).json()["messages"]
    replied_to = {m["in_reply_to"] for m in replies}
    assert set(acknowledged) <= replied_to
    details = client.get(f"/agents/{agent_id}").json()
    assert details["status"] == "running"
    assert server.stop() == 0


def test_sigterm_shuts_down_cleanly(spawn, tmp_path):
    token = "shutdown-test-token-0123456789"
    server = spawn(env={"CAXTON_TOKEN": token})
    client = httpx.Client(base_url=f"{server.url}/api/v1", headers={"X-Caxton-Token": token})
    client.post("/agents", files={"wasm": ("echo.wasm", example_bytes("echo"))}, data={"config": '{"name":"echo"}'})
    assert server.stop(signal.SIGTERM) == 0
    log = server.log.read_text()
    assert "stopped 1 agents" in log
    assert "store closed" in log
    assert "shutdown complete" in log


def test_bad_config_file_exits_with_message(tmp_path):
    config = tmp_path / "caxton.toml"
    config.write_text("[limits]\ninbox_size = 0\n")
    result = subprocess.run(
        [*CAXTON, "serve", "--config", str(config), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "limits.inbox_size" in result.stderr


def test_examples_command_writes_module(tmp_path):
    listing = subprocess.run([*CAXTON, "examples"], capture_output=True, text=True, check=True, timeout=30)
    assert "echo" in listing.stdout.split()
    target = tmp_path / "agent.wasm"
    subprocess.run([*CAXTON, "examples", "echo", "-o", str(target)], check=True, timeout=30)
    assert target.read_bytes()[:4] == b"\0asm"


def test_port_in_use_is_one_line_error(tmp_path):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = subprocess.run(
            [*CAXTON, "serve", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 1
    assert "cannot start: [Errno 98] Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
