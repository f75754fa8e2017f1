"""Shared fixtures: a real server on a loopback port, driven over HTTP with httpx."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from caxton.config import Settings, load_settings
from caxton.server import Running, serve

TOKEN = "test-admin-token-0123456789"
# Set by the test command to the folder the example agents were just rebuilt into.
EXAMPLES_ENV = "CAXTON_EXAMPLES_DIR"


def example_bytes(name: str) -> bytes:
    """An example agent's module: the fresh build when the test command made one."""
    folder = os.environ.get(EXAMPLES_ENV)
    if folder:
        return (Path(folder) / f"{name}.wasm").read_bytes()
    return (resources.files("caxton.examples") / f"{name}.wasm").read_bytes()


def make_settings(data_dir: Path, config_file: Path | None = None, **overrides: Any) -> Settings:
    values = {"port": 0, "host": "127.0.0.1", "data_dir": str(data_dir)}
    values.update(overrides)
    environ = {"CAXTON_TOKEN": TOKEN}
    for key, value in list(values.items()):
        if key not in {"port", "host", "data_dir", "log_level"}:
            environ[f"CAXTON_{key.upper()}"] = str(values.pop(key))
    return load_settings(config_file=config_file, environ=environ, overrides=values)


@attrs.define
class LiveServer:
    client: httpx.AsyncClient
    running: Running
    data_dir: Path
    shutdown: trio.Event
    finished: trio.Event

    async def stop(self) -> None:
        """Shut the server down gracefully and wait until it has."""
        self.shutdown.set()
        with trio.fail_after(30):
            await self.finished.wait()

    async def deploy(self, wasm: bytes, config: dict[str, Any] | None = None, filename: str = "agent.wasm") -> dict:
        files: dict[str, Any] = {"wasm": (filename, wasm, "application/wasm")}
        data = {"config": json.dumps(config)} if config is not None else {}
        response = await self.client.post("/agents", files=files, data=data)
        assert response.status_code == 201, response.text
        return response.json()

    async def send(self, receiver: str, content: Any = None, **fields: Any) -> dict:
        body = {"performative": "request", "receiver": receiver, **fields}
        if content is not None:
            body["content"] = content
        response = await self.client.post("/messages", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def history(self, **params: Any) -> list[dict]:
        response = await self.client.get("/messages", params=params)
        assert response.status_code == 200, response.text
        return response.json()["messages"]

    async def wait_for_history(
        self, predicate: Callable[[list[dict]], bool], timeout: float = 10, **params: Any
    ) -> list[dict]:
        """Poll history until `predicate` holds; fail after `timeout` seconds."""
        with trio.fail_after(timeout):
            while True:
                messages = await self.history(**params)
                if predicate(messages):
                    return messages
                await trio.sleep(0.02)


@pytest.fixture
async def start_server(nursery: trio.Nursery, tmp_path: Path):
    """Start servers on the same data folder; each stops at the end of the test."""
    stops: list[tuple[trio.Event, trio.Event]] = []

    async def start(data_dir: Path = tmp_path, config_file: Path | None = None, **overrides: Any) -> LiveServer:
        settings = make_settings(data_dir, config_file, **overrides)
        shutdown, finished = trio.Event(), trio.Event()

        async def run(task_status: trio.TaskStatus[Running]) -> None:
            try:
                await serve(settings, shutdown=shutdown, task_status=task_status)
            finally:
                finished.set()

        running = await nursery.start(run)
        stops.append((shutdown, finished))
        client = httpx.AsyncClient(
            base_url=f"{running.urls[0]}/api/v1", headers={"X-Caxton-Token": TOKEN}, timeout=30
        )
        return LiveServer(
            client=client, running=running, data_dir=data_dir, shutdown=shutdown, finished=finished
        )

    yield start
    for shutdown, finished in stops:
        shutdown.set()
        with trio.fail_after(30):
            await finished.wait()


@pytest.fixture
async def server(start_server) -> AsyncIterator[LiveServer]:
    live = await start_server()
    async with live.client:
        yield live
