"""Reactor instances and WASI command runs on real wasmtime, with the ABI host functions."""

from __future__ import annotations

import json
import logging

import pytest
import trio

from caxton.domain.agents import Limits
from caxton.domain.messages import Message, Performative
from caxton.runtime.abi import (
    MAX_LOG_LINES_PER_MESSAGE,
    SEND_INVALID,
    SEND_OVER_LIMIT,
    SEND_TOO_LARGE,
    SEND_UNKNOWN_RECEIVER,
    HandlerContext,
    SendLimits,
)
from caxton.runtime.engine import WasmEngine
from caxton.runtime.instance import AgentStartError, CommandRunner, Outcome, ReactorInstance
from caxton.runtime.modules import CompiledModule, ModuleCache
from tests import wat
from tests.conftest import example_bytes
from tests.runtime import wat_modules as mods

MEMORY = 16 * 2**20
MAX_MESSAGE_BYTES = 1024
# Handler time limit outside the timeout tests. Without a running ticker the epoch never
# advances, so no test reaches it.
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def engine() -> WasmEngine:
    return WasmEngine(memory_reservation=64 * 2**20, memory_guard_size=64 * 2**10)


@pytest.fixture(scope="module")
def cache(engine, tmp_path_factory) -> ModuleCache:
    return ModuleCache(engine, tmp_path_factory.mktemp("compiled"))


def compile_module(cache: ModuleCache, data: bytes) -> CompiledModule:
    return cache.compile_untrusted(data, MEMORY)


def start(cache: ModuleCache, engine: WasmEngine, data: bytes, *, memory: int = MEMORY,
          timeout: float = TIMEOUT) -> ReactorInstance:
    limits = Limits(memory=memory, cpu=1000, timeout=timeout)
    return ReactorInstance(compile_module(cache, data), engine, limits, "test-agent")


def command_runner(cache: ModuleCache, engine: WasmEngine, data: bytes, timeout: float = TIMEOUT) -> CommandRunner:
    limits = Limits(memory=MEMORY, cpu=1000, timeout=timeout)
    return CommandRunner(compile_module(cache, data), engine, limits, "test-command")


def make_context(max_outgoing: int = 10, known: frozenset[str] = frozenset({"echo", "client_001"})) -> HandlerContext:
    return HandlerContext(
        agent_id="agent_00000000000000aa",
        agent_name="test-agent",
        limits=SendLimits(max_outgoing=max_outgoing, max_message_bytes=MAX_MESSAGE_BYTES),
        is_known_receiver=lambda identity: identity in known,
    )


def request(content: object = None, performative: Performative = Performative.REQUEST) -> bytes:
    return Message(
        message_id="msg_0000000000000001",
        performative=performative,
        sender="client_001",
        receiver="agent_00000000000000aa",
        conversation_id="conv_1",
        timestamp="2024-01-15T10:30:00.000Z",
        content=content,
    ).encode()


def handle(executor: ReactorInstance | CommandRunner, payload: bytes, context: HandlerContext | None = None) -> Outcome:
    return executor.handle(payload, context if context is not None else make_context())


async def handle_with_ticker(engine: WasmEngine, executor: ReactorInstance | CommandRunner, payload: bytes) -> Outcome:
    """Handle one message on a worker thread while the epoch ticker runs."""
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run_ticker)
        outcome = await trio.to_thread.run_sync(executor.handle, payload, make_context(), limiter=engine.limiter)
        nursery.cancel_scope.cancel()
    return outcome


def test_echo_reply_becomes_draft(cache, engine):
    instance = start(cache, engine, example_bytes("echo"))
    payload = request({"action": "process"})

    outcome = handle(instance, payload)

    assert outcome.ok
    assert outcome.error is None
    assert len(outcome.outgoing) == 1
    reply = outcome.outgoing[0]
    assert reply.performative is Performative.INFORM
    assert reply.receiver is None
    assert reply.content == json.loads(payload)


def test_echo_ignores_inform(cache, engine):
    instance = start(cache, engine, example_bytes("echo"))

    outcome = handle(instance, request(performative=Performative.INFORM))

    assert outcome.ok
    assert outcome.outgoing == ()


def test_reactor_handles_many_messages(cache, engine):
    instance = start(cache, engine, example_bytes("counter"))

    outcomes = [handle(instance, request({"action": "increment"})) for _ in range(3)]

    assert [o.outgoing[0].content for o in outcomes] == [{"count": 1}, {"count": 2}, {"count": 3}]


def test_forwarder_sends_to_named_agent(cache, engine):
    instance = start(cache, engine, example_bytes("forwarder"))

    outcome = handle(instance, request({"forward_to": "echo", "job": 7}))

    assert outcome.ok
    forward = outcome.outgoing[0]
    assert forward.receiver == "echo"
    assert forward.performative is Performative.REQUEST
    assert forward.content == {"forward_to": "echo", "job": 7}


def test_send_explicit_known_receiver(cache, engine):
    instance = start(cache, engine, mods.SEND_INPUT)

    outcome = handle(instance, b'{"performative": "request", "receiver": "echo", "content": 1}')

    assert outcome.ok
    assert outcome.outgoing[0].receiver == "echo"


def test_send_invalid_json(cache, engine):
    instance = start(cache, engine, mods.SEND_INPUT)

    outcome = handle(instance, b"this is not json")

    assert not outcome.ok
    assert outcome.error == f"handle_message returned {SEND_INVALID}"
    assert outcome.outgoing == ()


def test_send_invalid_field(cache, engine):
    instance = start(cache, engine, mods.SEND_INPUT)

    outcome = handle(instance, b'{"performative": "shout"}')

    assert outcome.error == f"handle_message returned {SEND_INVALID}"


def test_send_unknown_receiver(cache, engine):
    instance = start(cache, engine, mods.SEND_INPUT)

    outcome = handle(instance, b'{"performative": "request", "receiver": "nobody"}')

    assert outcome.error == f"handle_message returned {SEND_UNKNOWN_RECEIVER}"


def test_send_over_size(cache, engine):
    instance = start(cache, engine, mods.SEND_INPUT)
    payload = json.dumps({"performative": "inform", "content": "x" * MAX_MESSAGE_BYTES}).encode()

    outcome = handle(instance, payload)

    assert outcome.error == f"handle_message returned {SEND_TOO_LARGE}"


def test_send_at_size_limit(cache, engine):
    instance = start(cache, engine, mods.SEND_INPUT)
    padding = MAX_MESSAGE_BYTES - len(json.dumps({"performative": "inform", "content": ""}))
    payload = json.dumps({"performative": "inform", "content": "x" * padding}).encode()

    outcome = handle(instance, payload)

    assert len(payload) == MAX_MESSAGE_BYTES
    assert outcome.ok


def test_send_over_message_count(cache, engine):
    instance = start(cache, engine, mods.SEND_INPUT_THRICE)
    context = make_context(max_outgoing=2)

    outcome = handle(instance, b'{"performative": "inform"}', context)

    assert outcome.error == f"handle_message returned {SEND_OVER_LIMIT}"
    assert len(context.outgoing) == 2


def test_send_within_message_count(cache, engine):
    instance = start(cache, engine, mods.SEND_INPUT_THRICE)

    outcome = handle(instance, b'{"performative": "inform"}', make_context(max_outgoing=3))

    assert outcome.ok
    assert len(outcome.outgoing) == 3


def test_send_out_of_bounds_buffer(cache, engine):
    instance = start(cache, engine, mods.SEND_OUT_OF_BOUNDS)

    outcome = handle(instance, b"{}")

    assert outcome.error == f"handle_message returned {SEND_INVALID}"


def test_failed_handler_discards_sends(cache, engine):
    instance = start(cache, engine, mods.SEND_THEN_FAIL)

    outcome = handle(instance, b'{"performative": "inform"}')

    assert not outcome.ok
    assert outcome.error == "handle_message returned 1"
    assert outcome.outgoing == ()
    assert not outcome.needs_fresh_instance


def test_non_zero_return_keeps_instance(cache, engine):
    instance = start(cache, engine, wat.RETURN_ONE)

    outcome = handle(instance, b"{}")

    assert outcome.error == "handle_message returned 1"
    assert not outcome.needs_fresh_instance
    assert not outcome.timed_out


async def test_reactor_timeout(cache, engine):
    instance = start(cache, engine, wat.SPIN_FOREVER, timeout=0.05)

    outcome = await handle_with_ticker(engine, instance, b"{}")

    assert not outcome.ok
    assert outcome.timed_out
    assert outcome.error == "handler timed out after 0.05s"
    assert outcome.needs_fresh_instance
    assert outcome.wall_seconds < 2


async def test_timeout_only_for_slow_message(cache, engine):
    instance = start(cache, engine, wat.SPIN_ON_LARGE, timeout=0.05)

    quick = await handle_with_ticker(engine, instance, b"{}")
    slow = await handle_with_ticker(engine, instance, b"{" + b" " * 2100 + b"}")

    assert quick.ok
    assert slow.timed_out


def test_trap_needs_fresh_instance(cache, engine):
    instance = start(cache, engine, wat.TRAP_ALWAYS)

    outcome = handle(instance, b"{}")

    assert not outcome.ok
    assert outcome.needs_fresh_instance
    assert not outcome.timed_out
    assert outcome.error.startswith("agent trapped (unreachable)")


def test_alloc_zero_fails_message(cache, engine):
    instance = start(cache, engine, mods.ALLOC_RETURNS_ZERO)

    outcome = handle(instance, b"{}")

    assert not outcome.ok
    assert outcome.error == "agent failed: alloc(2) returned 0"


def test_alloc_buffer_past_memory_fails(cache, engine):
    # The prelude's allocator never grows memory, so a 70 kB message does not fit in its page.
    instance = start(cache, engine, wat.RETURN_ONE)

    outcome = handle(instance, request("x" * 70_000))

    assert not outcome.ok


def test_init_non_zero_fails_start(cache, engine):
    with pytest.raises(AgentStartError, match="agent_init returned 7"):
        start(cache, engine, wat.INIT_FAILS)


def test_init_trap_fails_start(cache, engine):
    with pytest.raises(AgentStartError, match=r"agent trapped \(unreachable\)"):
        start(cache, engine, mods.INIT_TRAPS)


def test_send_during_init_rejected(cache, engine):
    with pytest.raises(AgentStartError, match=f"agent_init returned {SEND_INVALID}"):
        start(cache, engine, mods.INIT_SENDS)


def test_init_memory_above_limit(cache, engine):
    compiled = cache.compile_untrusted(wat.BIG_MEMORY, 100 * 65536)
    limits = Limits(memory=10 * 65536, cpu=1000, timeout=TIMEOUT)

    with pytest.raises(AgentStartError):
        ReactorInstance(compiled, engine, limits, "big")


def test_responder_replies_with_status(cache, engine):
    instance = start(cache, engine, example_bytes("responder"))

    outcome = handle(instance, request({"q": 1}))

    assert outcome.outgoing[0].content == {"status": "done", "handled_by": "responder", "request": {"q": 1}}


def test_memory_grow_past_limit_fails(cache, engine):
    instance = start(cache, engine, mods.GROW_SIXTEEN_PAGES, memory=4 * 65536)

    outcome = handle(instance, b"{}")

    result = int.from_bytes(instance.memory.read(instance.store, 0, 4), "little", signed=True)
    assert outcome.ok
    assert result == -1
    assert instance.memory_used() == 65536


def test_memory_grow_within_limit(cache, engine):
    instance = start(cache, engine, mods.GROW_SIXTEEN_PAGES, memory=32 * 65536)

    handle(instance, b"{}")

    result = int.from_bytes(instance.memory.read(instance.store, 0, 4), "little", signed=True)
    assert result == 1
    assert instance.memory_used() == 17 * 65536


def test_log_lines_capped(cache, engine):
    instance = start(cache, engine, mods.LOG_150_LINES)
    context = make_context()

    outcome = handle(instance, b"{}", context)

    assert outcome.ok
    assert context.log_lines == MAX_LOG_LINES_PER_MESSAGE
    assert context.dropped_log_lines == 150 - MAX_LOG_LINES_PER_MESSAGE


def test_shutdown_trap_logged(cache, engine, caplog):
    instance = start(cache, engine, mods.SHUTDOWN_TRAPS)

    with caplog.at_level(logging.WARNING, logger="caxton.runtime.instance"):
        instance.shutdown()

    assert "agent_shutdown failed" in caplog.text


def test_wasi_echo_reply(cache, engine):
    runner = command_runner(cache, engine, example_bytes("wasi-echo"))
    payload = request({"text": "héllo"})
    context = make_context()

    outcome = handle(runner, payload, context)

    assert outcome.ok
    assert len(outcome.outgoing) == 1
    assert outcome.outgoing[0].performative is Performative.INFORM
    assert outcome.outgoing[0].content == {"echo": json.loads(payload)}
    assert context.log_lines == 1


def test_wasi_echo_bad_input_fails(cache, engine):
    runner = command_runner(cache, engine, example_bytes("wasi-echo"))

    outcome = handle(runner, b"not json")

    assert not outcome.ok
    assert outcome.error == "agent exited with code 1"
    assert outcome.outgoing == ()


def test_command_default_performative(cache, engine):
    runner = command_runner(cache, engine, mods.command('{"content": {"n": 1}}\n'))

    outcome = handle(runner, b"{}")

    assert outcome.ok
    assert outcome.outgoing[0].performative is Performative.INFORM
    assert outcome.outgoing[0].content == {"n": 1}
    assert outcome.outgoing[0].receiver is None


def test_command_lines_become_messages(cache, engine):
    stdout = 'starting up\n{"performative": "agree"}\n\n{"receiver": "echo", "content": 2}\n'
    runner = command_runner(cache, engine, mods.command(stdout))

    outcome = handle(runner, b"{}")

    assert [draft.performative for draft in outcome.outgoing] == [Performative.AGREE, Performative.INFORM]
    assert outcome.outgoing[1].receiver == "echo"


def test_command_invalid_line_dropped(cache, engine):
    stdout = '{"receiver": "nobody"}\n{"content": "kept"}\n'
    runner = command_runner(cache, engine, mods.command(stdout))

    outcome = handle(runner, b"{}")

    assert outcome.ok
    assert [draft.content for draft in outcome.outgoing] == ["kept"]


def test_command_non_zero_exit_fails(cache, engine):
    runner = command_runner(cache, engine, mods.command('{"content": 1}\n', exit_code=3))

    outcome = handle(runner, b"{}")

    assert not outcome.ok
    assert outcome.error == "agent exited with code 3"
    assert outcome.outgoing == ()


def test_command_stdout_overflow_fails(cache, engine):
    runner = command_runner(cache, engine, mods.COMMAND_FLOODS_STDOUT)

    outcome = handle(runner, b"{}")

    assert not outcome.ok
    assert outcome.error == "agent wrote more than 1048576 bytes to stdout"


def test_command_fresh_instance_each_message(cache, engine):
    runner = command_runner(cache, engine, mods.command('{"content": 1}\n'))

    first = handle(runner, b"{}")
    second = handle(runner, b"{}")

    assert len(first.outgoing) == 1
    assert len(second.outgoing) == 1
    assert runner.memory_used() == 65536


async def test_command_timeout(cache, engine):
    runner = command_runner(cache, engine, mods.COMMAND_SPINS, timeout=0.05)

    outcome = await handle_with_ticker(engine, runner, b"{}")

    assert not outcome.ok
    assert outcome.timed_out
    assert outcome.error == "handler timed out after 0.05s"
