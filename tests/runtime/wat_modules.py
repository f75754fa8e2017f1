"""WAT modules for the runtime unit tests, on top of the reactor prelude in tests/wat.py."""

from __future__ import annotations

import wasmtime

from tests.wat import reactor

SEND_IMPORT = '(import "caxton" "send_message" (func $send (param i32 i32) (result i32)))'
LOG_IMPORT = '(import "caxton" "console_log" (func $log (param i32 i32)))'
_MEMORY = '(memory (export "memory") 1)'
_ALLOC = '(func (export "alloc") (param i32) (result i32) (i32.const 1024))'
_HANDLER = '(func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))'


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def plain_module(imports: str = "", *, memory: str = _MEMORY, alloc: str = _ALLOC, handler: str = _HANDLER,
                 extra: str = "") -> bytes:
    """Build a reactor whose parts can each be replaced or left out (pass an empty string)."""
    return wat(f"(module {imports} {memory} {alloc} {handler} {extra})")


def host_import(name: str, params: str = "(param i32 i32)", results: str = "(result i32)") -> bytes:
    """Build a valid reactor that also imports `caxton.<name>` with the given function type."""
    return plain_module(f'(import "caxton" "{name}" (func {params} {results}))')


SEND_INPUT = reactor(
    """
    (func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
      (call $send (local.get $ptr) (local.get $len)))
    """,
    imports=SEND_IMPORT,
)
"""Sends the message it receives, byte for byte, and returns the send_message code."""

SEND_INPUT_THRICE = reactor(
    """
    (func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
      (drop (call $send (local.get $ptr) (local.get $len)))
      (drop (call $send (local.get $ptr) (local.get $len)))
      (call $send (local.get $ptr) (local.get $len)))
    """,
    imports=SEND_IMPORT,
)
"""Sends the received message three times and returns the code of the third send."""

SEND_THEN_FAIL = reactor(
    """
    (func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
      (drop (call $send (local.get $ptr) (local.get $len)))
      (i32.const 1))
    """,
    imports=SEND_IMPORT,
)
"""Sends the received message, then returns 1 (a failed handler)."""

SEND_OUT_OF_BOUNDS = reactor(
    """
    (func (export "handle_message") (param i32 i32) (result i32)
      (call $send (i32.const 65530) (i32.const 16)))
    """,
    imports=SEND_IMPORT,
)
"""Passes send_message a buffer that ends past the one page of memory."""

GROW_SIXTEEN_PAGES = reactor(
    """
    (func (export "handle_message") (param i32 i32) (result i32)
      (i32.store (i32.const 0) (memory.grow (i32.const 16)))
      (i32.const 0))
    """
)
"""Grows memory by 16 pages (1 MiB) and stores memory.grow's result at address 0."""

ALLOC_RETURNS_ZERO = plain_module(alloc='(func (export "alloc") (param i32) (result i32) (i32.const 0))')

INIT_TRAPS = reactor(
    """
    (func (export "agent_init") (result i32) unreachable)
    (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))
    """
)

INIT_SENDS = reactor(
    """
    (data (i32.const 16) "{\\"performative\\":\\"inform\\"}")
    (func (export "agent_init") (result i32)
      (call $send (i32.const 16) (i32.const 25)))
    (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))
    """,
    imports=SEND_IMPORT,
)
"""Calls send_message from agent_init and returns its code as the init status."""

SHUTDOWN_TRAPS = reactor(
    """
    (func (export "agent_shutdown") unreachable)
    (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))
    """
)

LOG_150_LINES = reactor(
    """
    (data (i32.const 16) "line")
    (func (export "handle_message") (param i32 i32) (result i32)
      (local $count i32)
      (loop $again
        (call $log (i32.const 16) (i32.const 4))
        (local.set $count (i32.add (local.get $count) (i32.const 1)))
        (br_if $again (i32.lt_u (local.get $count) (i32.const 150))))
      (i32.const 0))
    """,
    imports=LOG_IMPORT,
)

_WASI_IMPORTS = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
"""


def command(stdout: str, exit_code: int = 0) -> bytes:
    """Build a WASI command that writes `stdout` to file descriptor 1, then exits with `exit_code`.

    Exit code 0 returns from `_start` without calling proc_exit.
    """
    data = stdout.encode()
    escaped = "".join(f"\\{byte:02x}" for byte in data)
    exit_call = f"(call $proc_exit (i32.const {exit_code}))" if exit_code else ""
    return wat(
        f"""
        (module
          {_WASI_IMPORTS}
          (memory (export "memory") 1)
          (data (i32.const 64) "{escaped}")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 64))
            (i32.store (i32.const 4) (i32.const {len(data)}))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            {exit_call}))
        """
    )


COMMAND_FLOODS_STDOUT = wat(
    f"""
    (module
      {_WASI_IMPORTS}
      (memory (export "memory") 1)
      (func (export "_start")
        (local $count i32)
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 64512))
        (loop $again
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (local.set $count (i32.add (local.get $count) (i32.const 1)))
          (br_if $again (i32.lt_u (local.get $count) (i32.const 20)))))
    )
    """
)
"""Writes 20 blocks of 64512 zero bytes (about 1.3 MB) to stdout."""

COMMAND_SPINS = wat(
    f"""
    (module
      {_WASI_IMPORTS}
      (memory (export "memory") 1)
      (func (export "_start") (loop $forever (br $forever))))
    """
)
