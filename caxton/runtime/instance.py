"""Running one message through an agent: reactor instances and WASI command runs.

Everything here blocks in wasm calls, so it runs on worker threads only, never on the trio
thread. Each call gets a fresh epoch deadline; a guest that overruns it traps with
`INTERRUPT` and the message fails with a timeout.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import attrs
import wasmtime

from caxton.domain.agents import Limits
from caxton.domain.messages import Draft, Performative
from caxton.runtime.abi import HandlerContext, activate, lifecycle_label, restricted_wasi
from caxton.runtime.engine import UNLIMITED_FUEL, WasmEngine
from caxton.runtime.modules import CompiledModule

logger = logging.getLogger(__name__)

# Output a WASI command agent may write per message; more fails the message.
MAX_COMMAND_OUTPUT_BYTES = 1 << 20


class AgentStartError(Exception):
    """Instantiation or `agent_init` failed; the message gives the reason."""


@attrs.frozen
class Outcome:
    """The result of handling one message."""

    ok: bool
    outgoing: tuple[Draft, ...] = ()
    error: str | None = None
    timed_out: bool = False
    # The guest trapped, so its memory may be inconsistent: replace the instance.
    needs_fresh_instance: bool = False
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    fuel_consumed: int = 0


def describe_failure(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """Return (error text, timed out) for an exception out of a guest call."""
    if isinstance(exc, wasmtime.Trap) and exc.trap_code == wasmtime.TrapCode.INTERRUPT:
        return f"handler timed out after {timeout:g}s", True
    if isinstance(exc, wasmtime.Trap) and exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
        return "handler ran out of fuel", False
    if isinstance(exc, wasmtime.ExitTrap):
        return f"agent exited with code {exc.code}", False
    if isinstance(exc, wasmtime.Trap):
        code = exc.trap_code.name.lower() if exc.trap_code is not None else "trap"
        return f"agent trapped ({code}): {_cause(exc.message)}", False
    return f"agent failed: {_cause(str(exc))}", False


def _cause(text: str) -> str:
    """Return the line of a wasmtime error that names what went wrong, not where."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if "Caused by:" in lines:
        after = lines[lines.index("Caused by:") + 1:]
        if after:
            return after[-1]
    return lines[0] if lines else "unknown error"


class ReactorInstance:
    """A live instance of a reactor agent. Not thread-safe: one worker uses it at a time."""

    def __init__(self, compiled: CompiledModule, engine: WasmEngine, limits: Limits, agent_label: str) -> None:
        self._engine = engine
        self._limits = limits
        self._label = agent_label
        self.store = wasmtime.Store(engine.engine)
        self.store.set_limits(memory_size=limits.memory)
        if compiled.info.uses_wasi:
            self.store.set_wasi(restricted_wasi(self._log_output(logging.INFO), self._log_output(logging.ERROR)))
        self._arm()
        try:
            with lifecycle_label(agent_label):
                self._instantiate(compiled)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise AgentStartError(describe_failure(exc, limits.timeout)[0]) from None

    def _instantiate(self, compiled: CompiledModule) -> None:
        """Instantiate, then run `_initialize` and `agent_init` when the module exports them."""
        self.instance = compiled.pre.instantiate(self.store)
        exports = self.instance.exports(self.store)
        self.memory: wasmtime.Memory = exports["memory"]
        self._alloc = exports["alloc"]
        self._handle = exports["handle_message"]
        self._dealloc = exports.get("dealloc")
        self._shutdown = exports.get("agent_shutdown")
        initialize = exports.get("_initialize")
        if initialize is not None:
            self._arm()
            initialize(self.store)
        init = exports.get("agent_init")
        if init is not None:
            self._arm()
            status = init(self.store)
            if status != 0:
                raise AgentStartError(f"agent_init returned {status}")

    def _arm(self) -> None:
        self.store.set_epoch_deadline(self._engine.ticks_for(self._limits.timeout))
        self.store.set_fuel(self._limits.fuel or UNLIMITED_FUEL)

    def _fuel_used(self) -> int:
        try:
            return (self._limits.fuel or UNLIMITED_FUEL) - self.store.get_fuel()
        except wasmtime.WasmtimeError:
            return 0

    def _log_output(self, level: int):
        def write(data: bytes) -> None:
            for line in data.decode("utf-8", "replace").splitlines():
                if line.strip():
                    logger.log(level, "agent %s stdio: %s", self._label, line[:4096])

        return write

    def memory_used(self) -> int:
        return self.memory.data_len(self.store)

    def handle(self, payload: bytes, context: HandlerContext) -> Outcome:
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            with activate(context):
                status = self._call(payload)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            error, timed_out = describe_failure(exc, self._limits.timeout)
            return self._finish(False, (), error, timed_out, True, started, cpu_started, self._fuel_used())
        fuel = self._fuel_used()
        if status != 0:
            return self._finish(False, (), f"handle_message returned {status}", False, False, started, cpu_started, fuel)
        return self._finish(True, tuple(context.outgoing), None, False, False, started, cpu_started, fuel)

    def _call(self, payload: bytes) -> int:
        self._arm()
        length = len(payload)
        pointer = self._alloc(self.store, length) & 0xFFFFFFFF
        if pointer == 0 and length:
            raise wasmtime.WasmtimeError(f"alloc({length}) returned 0")
        if pointer + length > self.memory.data_len(self.store):
            raise wasmtime.WasmtimeError(f"alloc({length}) returned {pointer}, a buffer that ends past memory")
        self.memory.write(self.store, payload, pointer)
        status = self._handle(self.store, pointer, length)
        if self._dealloc is not None:
            self._dealloc(self.store, pointer, length)
        return status

    @staticmethod
    def _finish(ok, outgoing, error, timed_out, fresh, started, cpu_started, fuel) -> Outcome:
        return Outcome(
            ok=ok, outgoing=outgoing, error=error, timed_out=timed_out, needs_fresh_instance=fresh,
            cpu_seconds=time.thread_time() - cpu_started, wall_seconds=time.perf_counter() - started,
            fuel_consumed=fuel,
        )

    def shutdown(self) -> None:
        """Call `agent_shutdown` if exported; a failure there is logged, not raised."""
        if self._shutdown is None:
            return
        try:
            self._arm()
            with lifecycle_label(self._label):
                self._shutdown(self.store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            logger.warning("agent %s: agent_shutdown failed: %s", self._label, describe_failure(exc, self._limits.timeout)[0])


class CommandRunner:
    """Runs a WASI command agent: a fresh instance per message, the message on stdin."""

    def __init__(self, compiled: CompiledModule, engine: WasmEngine, limits: Limits, agent_label: str) -> None:
        self._compiled = compiled
        self._engine = engine
        self._limits = limits
        self._label = agent_label
        self._last_memory = 0

    def memory_used(self) -> int:
        return self._last_memory

    def handle(self, payload: bytes, context: HandlerContext) -> Outcome:
        started, cpu_started = time.perf_counter(), time.thread_time()
        stdout = _BoundedBuffer(MAX_COMMAND_OUTPUT_BYTES)
        stderr = _BoundedBuffer(MAX_COMMAND_OUTPUT_BYTES)
        error, timed_out = self._run(payload, stdout, stderr)
        for line in stderr.lines():
            context.log(logging.INFO, line)
        if error is None and stdout.overflowed:
            error = f"agent wrote more than {MAX_COMMAND_OUTPUT_BYTES} bytes to stdout"
        if error is None:
            for line in stdout.lines():
                if line.lstrip().startswith("{"):
                    context.submit(line.encode(), default_performative=Performative.INFORM)
        return Outcome(
            ok=error is None, outgoing=tuple(context.outgoing) if error is None else (), error=error,
            timed_out=timed_out, cpu_seconds=time.thread_time() - cpu_started,
            wall_seconds=time.perf_counter() - started,
        )

    def _run(self, payload: bytes, stdout: _BoundedBuffer, stderr: _BoundedBuffer) -> tuple[str | None, bool]:
        store = wasmtime.Store(self._engine.engine)
        store.set_limits(memory_size=self._limits.memory)
        descriptor, stdin_path = tempfile.mkstemp(prefix="caxton-stdin-")
        try:
            with os.fdopen(descriptor, "wb") as stdin:
                stdin.write(payload + b"\n")
            config = restricted_wasi(stdout.write, stderr.write)
            config.stdin_file = stdin_path
            config.argv = [self._label]
            store.set_wasi(config)
            store.set_epoch_deadline(self._engine.ticks_for(self._limits.timeout))
            store.set_fuel(self._limits.fuel or UNLIMITED_FUEL)
            instance = self._compiled.pre.instantiate(store)
            exports = instance.exports(store)
            try:
                exports["_start"](store)
            finally:
                memory = exports.get("memory")
                if isinstance(memory, wasmtime.Memory):
                    self._last_memory = memory.data_len(store)
        except wasmtime.ExitTrap as exc:
            return (None, False) if exc.code == 0 else (f"agent exited with code {exc.code}", False)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            return describe_failure(exc, self._limits.timeout)
        finally:
            os.unlink(stdin_path)
        return None, False

    def shutdown(self) -> None:
        """Command agents keep no instance between messages: nothing to shut down."""


class _BoundedBuffer:
    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self.overflowed = False

    def write(self, data: bytes) -> int:
        if self._size + len(data) > self._limit:
            self.overflowed = True
        else:
            self._chunks.append(bytes(data))
            self._size += len(data)
        return len(data)

    def lines(self) -> list[str]:
        return [line for line in b"".join(self._chunks).decode("utf-8", "replace").splitlines() if line.strip()]
