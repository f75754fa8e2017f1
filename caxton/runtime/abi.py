"""Agent ABI version 1: the host functions in module `caxton` and the export contract.

Host functions run on the worker thread that is inside the guest call. They find the
message being handled through a thread-local `HandlerContext`, which is why one linker
(and one `InstancePre` per module) can serve every agent. Errors become negative return
codes, and `send_message` also turns any unexpected exception into one, because an
exception would escape through the guest call and fail the worker's whole batch.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import attrs
import wasmtime
from wasmtime import FuncType, ValType

from caxton.domain.errors import InvalidRequest
from caxton.domain.messages import Draft, Performative, parse_agent_message

logger = logging.getLogger(__name__)
agent_logger = logging.getLogger("caxton.agent")

HOST_MODULE = "caxton"
WASI_MODULE = "wasi_snapshot_preview1"

SEND_OK = 0
SEND_INVALID = -1
SEND_UNKNOWN_RECEIVER = -2
SEND_TOO_LARGE = -3
SEND_OVER_LIMIT = -4

# Log lines an agent may write per message before the rest are counted, not written.
MAX_LOG_LINES_PER_MESSAGE = 100
# Maximum length of one agent log line; the rest is cut, so a guest cannot fill the server log.
MAX_LOG_LINE_BYTES = 4096

_VALUE_TYPES = {"i32": ValType.i32, "i64": ValType.i64}


def signature(params: list[ValType], results: list[ValType]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A comparable form of a function type."""
    return tuple(str(p) for p in params), tuple(str(r) for r in results)


def _func_type(name: str) -> FuncType:
    params, results = HOST_FUNCTIONS[name]
    return FuncType([_VALUE_TYPES[p]() for p in params], [_VALUE_TYPES[r]() for r in results])


# Host function types as (params, results). FuncType objects are not shared between engines
# (wasmtime ties a type to the first engine that uses it), so `_func_type` builds fresh ones.
HOST_FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "send_message": (("i32", "i32"), ("i32",)),
    "console_log": (("i32", "i32"), ()),
    "console_error": (("i32", "i32"), ()),
    "current_timestamp": ((), ("i64",)),
    "random_u32": ((), ("i32",)),
}
# Part of the ABI but not provided yet: named in the deploy error, not just "unknown".
PLANNED_HOST_FUNCTIONS = frozenset({"store_data", "load_data", "delete_data"})

REQUIRED_EXPORTS = {
    "alloc": (("i32",), ("i32",)),
    "handle_message": (("i32", "i32"), ("i32",)),
}
OPTIONAL_EXPORTS = {
    "dealloc": (("i32", "i32"), ()),
    "agent_init": ((), ("i32",)),
    "agent_shutdown": ((), ()),
}


@attrs.frozen
class SendLimits:
    max_outgoing: int
    max_message_bytes: int


@attrs.define
class HandlerContext:
    """The state host functions read and change while one message is handled."""

    agent_id: str
    agent_name: str
    limits: SendLimits
    # Returns True when an explicit receiver names a live agent or a known client.
    is_known_receiver: Callable[[str], bool]
    outgoing: list[Draft] = attrs.field(factory=list)
    log_lines: int = 0
    dropped_log_lines: int = 0

    def submit(self, raw: bytes, default_performative: Performative | None = None) -> int:
        """Validate one outgoing message and buffer it; return an ABI code."""
        if len(self.outgoing) >= self.limits.max_outgoing:
            return SEND_OVER_LIMIT
        if len(raw) > self.limits.max_message_bytes:
            return SEND_TOO_LARGE
        try:
            draft = parse_agent_message(
                raw, max_bytes=self.limits.max_message_bytes, default_performative=default_performative
            )
        except InvalidRequest as exc:
            self.log(logging.WARNING, f"send_message rejected: {exc}")
            return SEND_INVALID
        if draft.receiver is not None and not self.is_known_receiver(draft.receiver):
            self.log(logging.WARNING, f"send_message rejected: unknown receiver {draft.receiver!r}")
            return SEND_UNKNOWN_RECEIVER
        self.outgoing.append(draft)
        return SEND_OK

    def log(self, level: int, text: str) -> None:
        if self.log_lines >= MAX_LOG_LINES_PER_MESSAGE:
            self.dropped_log_lines += 1
            return
        self.log_lines += 1
        agent_logger.log(level, "agent %s (%s): %s", self.agent_name, self.agent_id, text[:MAX_LOG_LINE_BYTES])


_active = threading.local()


@contextlib.contextmanager
def activate(context: HandlerContext) -> Iterator[HandlerContext]:
    """Make `context` the one host functions on this thread see, for one guest call."""
    previous = getattr(_active, "context", None)
    _active.context = context
    try:
        yield context
    finally:
        _active.context = previous


@contextlib.contextmanager
def lifecycle_label(label: str) -> Iterator[None]:
    """Attribute log lines written outside a handler (agent_init, agent_shutdown) to `label`."""
    previous = getattr(_active, "label", None)
    _active.label = label
    try:
        yield
    finally:
        _active.label = previous


def _context() -> HandlerContext | None:
    return getattr(_active, "context", None)


def read_guest(caller: wasmtime.Caller, ptr: int, length: int) -> bytes | None:
    """Copy `length` bytes at `ptr` out of the caller's memory; None when out of bounds."""
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        return None
    start, length = ptr & 0xFFFFFFFF, length & 0xFFFFFFFF
    if start + length > memory.data_len(caller):
        return None
    return bytes(memory.read(caller, start, start + length))


def _send_message(caller: wasmtime.Caller, ptr: int, length: int) -> int:
    try:
        return _send_checked(caller, ptr, length)
    except Exception:  # noqa: BLE001 - an exception here would escape through the guest call
        logger.exception("send_message failed inside the host")
        return SEND_INVALID


def _send_checked(caller: wasmtime.Caller, ptr: int, length: int) -> int:
    context = _context()
    if context is None:
        # Called from agent_init or agent_shutdown, so there is no message to reply to.
        return SEND_INVALID
    # Cheap checks first: a flooding guest is refused without copying its memory.
    if len(context.outgoing) >= context.limits.max_outgoing:
        return SEND_OVER_LIMIT
    if (length & 0xFFFFFFFF) > context.limits.max_message_bytes:
        return SEND_TOO_LARGE
    raw = read_guest(caller, ptr, length)
    if raw is None:
        return SEND_INVALID
    return context.submit(raw)


def _console(level: int) -> Callable[[wasmtime.Caller, int, int], None]:
    def write(caller: wasmtime.Caller, ptr: int, length: int) -> None:
        raw = read_guest(caller, ptr, min(length & 0xFFFFFFFF, MAX_LOG_LINE_BYTES))
        text = raw.decode("utf-8", "replace") if raw is not None else "<log text out of bounds>"
        context = _context()
        if context is not None:
            context.log(level, text)
        else:
            agent_logger.log(level, "agent %s: %s", getattr(_active, "label", None) or "(unknown)", text)

    return write


def _current_timestamp() -> int:
    return time.time_ns() // 1000


def _random_u32() -> int:
    # Guests receive an i32; the top bit comes back as a negative Python int.
    value = secrets.randbits(32)
    return value - (1 << 32) if value >= 1 << 31 else value


def define_host_functions(linker: wasmtime.Linker) -> None:
    callers = {
        "send_message": _send_message,
        "console_log": _console(logging.INFO),
        "console_error": _console(logging.ERROR),
    }
    plain = {"current_timestamp": _current_timestamp, "random_u32": _random_u32}
    for name, function in callers.items():
        linker.define_func(HOST_MODULE, name, _func_type(name), function, access_caller=True)
    for name, function in plain.items():
        linker.define_func(HOST_MODULE, name, _func_type(name), function)


def restricted_wasi(stdout: Callable[[bytes], None], stderr: Callable[[bytes], None]) -> wasmtime.WasiConfig:
    """Build a WASI configuration with no files, no environment, no arguments and no sockets."""
    config = wasmtime.WasiConfig()
    config.stdout_custom = stdout
    config.stderr_custom = stderr
    return config
