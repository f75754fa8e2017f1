"""Small WAT agents for tests: hostile and edge-case modules built with wasmtime.wat2wasm."""

from __future__ import annotations

import wasmtime

# A reactor prelude: one page of memory, and an allocator that hands out the same buffer at
# 1024 for every message (the host allocates one input buffer per message). Messages over
# about 63 KiB do not fit. `$next` stays for modules that reset it.
_PRELUDE = """
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (i32.const 1024))
"""


def _wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def reactor(body: str, imports: str = "") -> bytes:
    return bytes(wasmtime.wat2wasm(f"(module {imports} {_PRELUDE} {body})"))


def send_reply(text: str) -> bytes:
    """A reactor that answers every message with the fixed JSON `text` (a reply)."""
    data = text.replace("\\", "\\\\").replace('"', '\\"')
    return reactor(
        f"""
        (data (i32.const 16) "{data}")
        (func (export "handle_message") (param i32 i32) (result i32)
          (global.set $next (i32.const 1024))
          (drop (call $send (i32.const 16) (i32.const {len(text.encode())})))
          (i32.const 0))
        """,
        imports='(import "caxton" "send_message" (func $send (param i32 i32) (result i32)))',
    )


SPIN_ON_LARGE = reactor(
    """
    (func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
      (if (i32.gt_u (local.get $len) (i32.const 2000)) (then (loop $forever (br $forever))))
      (i32.const 0))
    """
)
"""Loops forever on messages over 2000 bytes and handles smaller ones at once."""

SPIN_FOREVER = reactor(
    """
    (func (export "handle_message") (param i32 i32) (result i32)
      (loop $forever (br $forever))
      (i32.const 0))
    """
)

TRAP_ALWAYS = reactor(
    """
    (func (export "handle_message") (param i32 i32) (result i32)
      unreachable)
    """
)

RETURN_ONE = reactor(
    """
    (func (export "handle_message") (param i32 i32) (result i32)
      (i32.const 1))
    """
)

INIT_FAILS = reactor(
    """
    (func (export "agent_init") (result i32) (i32.const 7))
    (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))
    """
)

UNKNOWN_IMPORT = _wat(
    """
    (module
      (import "env" "fd_write" (func (param i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0)))
    """
)

NO_HANDLER = _wat(
    """
    (module
      (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) (i32.const 1024)))
    """
)

BIG_MEMORY = _wat(
    """
    (module
      (memory (export "memory") 100)
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0)))
    """
)
"""Declares 100 pages (6.5 MB) of initial memory."""

KV_IMPORT = _wat(
    """
    (module
      (import "caxton" "store_data" (func (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0)))
    """
)

SLOW_ECHO = reactor(
    """
    (data (i32.const 16) "{\\"performative\\":\\"inform\\",\\"content\\":\\"slow\\"}")
    (func (export "handle_message") (param i32 i32) (result i32)
      (local $i i32)
      (global.set $next (i32.const 1024))
      (loop $busy
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $busy (i32.lt_u (local.get $i) (i32.const 20000000))))
      (drop (call $send (i32.const 16) (i32.const 42)))
      (i32.const 0))
    """,
    imports='(import "caxton" "send_message" (func $send (param i32 i32) (result i32)))',
)
"""Busy-loops for a few milliseconds, then replies inform "slow": keeps work queued."""

FAN_OUT = reactor(
    """
    (data (i32.const 16) "{\\"performative\\":\\"inform\\",\\"content\\":1}")
    (func (export "handle_message") (param i32 i32) (result i32)
      (local $i i32)
      (global.set $next (i32.const 1024))
      (loop $again
        (drop (call $send (i32.const 16) (i32.const 37)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $again (i32.lt_u (local.get $i) (i32.const 100))))
      (i32.const 0))
    """,
    imports='(import "caxton" "send_message" (func $send (param i32 i32) (result i32)))',
)
"""Replies 100 times to every message: a flood of messages, and of events."""

MEMORY_BOMB = reactor(
    """
    (func (export "handle_message") (param i32 i32) (result i32)
      (block $full
        (loop $grow
          (br_if $full (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
          (br $grow)))
      (i32.const 0))
    """
)
"""Grows its memory 16 pages at a time until the limit refuses, then returns 0."""

OUTPUT_FLOOD = reactor(
    """
    (data (i32.const 16) "{\\"performative\\":\\"inform\\",\\"content\\":1}")
    (global $refused (mut i32) (i32.const 0))
    (func (export "handle_message") (param i32 i32) (result i32)
      (local $i i32)
      (global.set $next (i32.const 1024))
      (loop $again
        (if (i32.lt_s (call $send (i32.const 16) (i32.const 37)) (i32.const 0))
          (then (global.set $refused (i32.add (global.get $refused) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $again (i32.lt_u (local.get $i) (i32.const 10000))))
      ;; One more send of 60000 bytes, refused like the rest.
      (drop (call $send (i32.const 16) (i32.const 60000)))
      (i32.const 0))
    """,
    imports='(import "caxton" "send_message" (func $send (param i32 i32) (result i32)))',
)
"""Tries to send 10,000 messages and one oversized one per handled message."""

CPU_HOG = reactor(
    """
    (func (export "handle_message") (param i32 i32) (result i32)
      (local $i i32)
      (loop $busy
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $busy (i32.lt_u (local.get $i) (i32.const 30000000))))
      (i32.const 0))
    """
)
"""Burns CPU for tens of milliseconds per message and sends nothing."""

WASI_PROBE = _wat(
    """
    (module
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $env (i32.const 0) (i32.const 4)))
        ;; Exit 1 when the agent sees any environment variable.
        (if (i32.load (i32.const 0)) (then (call $exit (i32.const 1))))
        ;; Exit 2 when descriptor 3 is a preopened directory (fd_prestat_get returns 0).
        (if (i32.eqz (call $prestat (i32.const 3) (i32.const 8))) (then (call $exit (i32.const 2))))
        (call $exit (i32.const 0))))
    """
)
"""A WASI command that exits 0 only when it has no environment and no preopened files."""
