"""The committed example modules behave like the ones just rebuilt from source.

The test command rebuilds every example with real toolchains into CAXTON_EXAMPLES_DIR and
the rest of the suite runs against those builds; this test runs the same message scripts
through both builds and compares every outgoing message and status.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import pytest
import trio

from caxton.domain.agents import Limits
from caxton.domain.messages import Message, Performative
from caxton.runtime.abi import HandlerContext, SendLimits
from caxton.runtime.engine import WasmEngine
from caxton.runtime.instance import CommandRunner, ReactorInstance
from caxton.runtime.modules import COMMAND, ModuleCache

REBUILT = os.environ.get("CAXTON_EXAMPLES_DIR")
pytestmark = pytest.mark.skipif(not REBUILT, reason="run through tools/test.sh, which rebuilds the examples")

_KNOWN = {"echo", "client_1", "client_2", "forwarder", "agent_target"}

SCRIPTS: dict[str, list[tuple[str, str, object, str]]] = {
    # (performative, sender, content, conversation)
    "echo": [("request", "client_1", {"a": [1, "x\"y"]}, "c1"), ("inform", "client_1", {"b": 2}, "c1")],
    "responder": [
        ("request", "client_1", {"nested": {"s": "}]{[", "u": "é"}}, "c1"),
        ("request", "client_2", None, "c2"),
        ("inform", "client_1", 5, "c1"),
    ],
    "forwarder": [
        ("request", "client_1", {"forward_to": "echo", "job": 1}, "c1"),
        ("inform", "echo", {"done": True}, "c1"),
        ("request", "client_2", {"forward_to": "nobody", "job": 2}, "c2"),
    ],
    "counter": [
        ("request", "client_1", {"action": "increment"}, "c1"),
        ("request", "client_1", {"action": "increment"}, "c1"),
        ("request", "client_1", {"action": "reset"}, "c1"),
        ("inform", "client_1", {"action": "reset"}, "c1"),
        ("request", "client_1", {}, "c1"),
    ],
    "wasi-echo": [("request", "client_1", {"text": "hi"}, "c1"), ("inform", "client_1", {}, "c1")],
}


def _message(index: int, performative: str, sender: str, content: object, conversation: str) -> Message:
    return Message(
        message_id=f"msg_{index:016x}", performative=Performative(performative), sender=sender,
        receiver="agent_target", conversation_id=conversation, timestamp="2026-01-01T00:00:00.000Z",
        content=content,
    )


def _run_script(modules: ModuleCache, engine: WasmEngine, data: bytes, script) -> list[tuple]:
    compiled = modules.compile_untrusted(data, 64 * 2**20)
    limits = Limits(memory=64 * 2**20, cpu=1000, timeout=5.0)
    kind = CommandRunner if compiled.info.kind == COMMAND else ReactorInstance
    executor = kind(compiled, engine, limits, "parity")
    transcript = []
    for index, step in enumerate(script):
        context = HandlerContext(
            agent_id="agent_target", agent_name="parity", limits=SendLimits(100, 256 * 1024),
            is_known_receiver=lambda identity: identity in _KNOWN,
        )
        outcome = executor.handle(_message(index, *step).encode(), context)
        sent = [
            (d.performative.value, d.receiver, json.dumps(d.content, sort_keys=True), d.conversation_id)
            for d in outcome.outgoing
        ]
        transcript.append((outcome.ok, outcome.error, sent))
    return transcript


@pytest.mark.parametrize("name", sorted(SCRIPTS))
async def test_committed_matches_rebuilt(name, nursery, tmp_path):
    engine = WasmEngine(memory_reservation=64 * 2**20, memory_guard_size=64 * 2**10)
    await nursery.start(engine.run_ticker)
    committed = (resources.files("caxton.examples") / f"{name}.wasm").read_bytes()
    rebuilt = (Path(REBUILT) / f"{name}.wasm").read_bytes()

    def run_both():
        first = _run_script(ModuleCache(engine, tmp_path / "a"), engine, committed, SCRIPTS[name])
        second = _run_script(ModuleCache(engine, tmp_path / "b"), engine, rebuilt, SCRIPTS[name])
        return first, second

    first, second = await trio.to_thread.run_sync(run_both)
    assert first == second
    assert any(sent for _, _, sent in first), "the script should make the agent send something"
