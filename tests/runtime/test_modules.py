"""Module validation at deploy (every INVALID_WASM reason) and the on-disk compile cache."""

from __future__ import annotations

import logging

import pytest

from caxton.domain.errors import InvalidWasm
from caxton.runtime.engine import WasmEngine
from caxton.runtime.modules import COMMAND, REACTOR, ModuleCache, sha256_of
from tests import wat
from tests.conftest import example_bytes
from tests.runtime import wat_modules as mods

LIMIT = 16 * 2**20


@pytest.fixture(scope="module")
def engine() -> WasmEngine:
    return WasmEngine(memory_reservation=64 * 2**20, memory_guard_size=64 * 2**10)


@pytest.fixture
def cache(engine, tmp_path) -> ModuleCache:
    return ModuleCache(engine, tmp_path)


def rejection(cache: ModuleCache, data: bytes, memory_limit: int = LIMIT) -> str:
    with pytest.raises(InvalidWasm) as caught:
        cache.compile_untrusted(data, memory_limit)
    return caught.value.message


@pytest.mark.parametrize("name", ["echo", "responder", "forwarder", "counter"])
def test_examples_are_reactors(cache, name):
    compiled = cache.compile_untrusted(example_bytes(name), LIMIT)

    assert compiled.info.kind == REACTOR
    assert {"memory", "alloc", "handle_message"} <= compiled.info.exports


def test_wasi_echo_is_command(cache):
    compiled = cache.compile_untrusted(example_bytes("wasi-echo"), LIMIT)

    assert compiled.info.kind == COMMAND
    assert compiled.info.uses_wasi


def test_forwarder_imports_no_wasi(cache):
    compiled = cache.compile_untrusted(example_bytes("forwarder"), LIMIT)

    assert compiled.info.kind == REACTOR
    assert not compiled.info.uses_wasi


def test_module_info_hash_and_memory(cache):
    data = example_bytes("echo")

    info = cache.compile_untrusted(data, LIMIT).info

    assert info.sha256 == sha256_of(data)
    assert info.min_memory_bytes % 65536 == 0
    assert info.min_memory_bytes >= 65536


@pytest.mark.parametrize(
    "data", [b"", b"hello world", b"\0asm", b"MZ\x90\x00\x03\x00\x00\x00", b"\x7fELF\x02\x01\x01\x00"]
)
def test_rejects_non_wasm_bytes(cache, data):
    assert rejection(cache, data).startswith("not a WebAssembly module")


def test_rejects_component_version(cache):
    message = rejection(cache, b"\0asm\x0d\x00\x01\x00" + b"\0" * 8)

    assert "unsupported WebAssembly binary version 0d000100" in message
    assert "not components" in message


def test_rejects_other_version(cache):
    assert "binary version 02000000" in rejection(cache, b"\0asm\x02\x00\x00\x00")


def test_rejects_compile_failure(cache):
    message = rejection(cache, b"\0asm\x01\x00\x00\x00\x01\xff\xff")

    assert message.startswith("module failed to compile: ")
    assert "\n" not in message


def test_rejects_unknown_module_import(cache):
    message = rejection(cache, wat.UNKNOWN_IMPORT)

    assert message.startswith("unknown import env.fd_write")
    assert "'caxton'" in message


def test_rejects_unknown_host_function(cache):
    message = rejection(cache, mods.host_import("open_socket"))

    assert message.startswith("unknown import caxton.open_socket")
    assert "send_message" in message


def test_rejects_wrong_import_signature(cache):
    message = rejection(cache, mods.host_import("send_message", params="(param i32)"))

    assert message == "import caxton.send_message has the wrong type; expected (i32, i32) -> (i32)"


def test_rejects_import_wrong_result(cache):
    message = rejection(cache, mods.host_import("current_timestamp", params="", results="(result i32)"))

    assert message == "import caxton.current_timestamp has the wrong type; expected () -> (i64)"


def test_rejects_import_not_function(cache):
    data = mods.plain_module('(import "caxton" "random_u32" (global i32))')

    assert rejection(cache, data).startswith("import caxton.random_u32 has the wrong type")


@pytest.mark.parametrize("name", ["store_data", "load_data", "delete_data"])
def test_rejects_planned_kv_import(cache, name):
    message = rejection(cache, mods.host_import(name, params="(param i32 i32 i32 i32)"))

    assert message.startswith(f"import caxton.{name} is not available yet")
    assert "key-value store" in message


def test_rejects_kv_import_example(cache):
    assert "caxton.store_data is not available yet" in rejection(cache, wat.KV_IMPORT)


def test_accepts_every_host_function(cache):
    imports = """
      (import "caxton" "send_message" (func (param i32 i32) (result i32)))
      (import "caxton" "console_log" (func (param i32 i32)))
      (import "caxton" "console_error" (func (param i32 i32)))
      (import "caxton" "current_timestamp" (func (result i64)))
      (import "caxton" "random_u32" (func (result i32)))
    """

    compiled = cache.compile_untrusted(mods.plain_module(imports), LIMIT)

    assert compiled.info.kind == REACTOR


def test_rejects_unknown_wasi_function(cache):
    data = mods.plain_module('(import "wasi_snapshot_preview1" "open_everything" (func (param i32) (result i32)))')

    message = rejection(cache, data)

    assert message.startswith("module cannot be linked")
    assert "wasi_snapshot_preview1::open_everything" in message


def test_rejects_wrong_wasi_signature(cache):
    data = mods.plain_module('(import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32)))')

    message = rejection(cache, data)

    assert message.startswith("module cannot be linked")
    assert "wasi_snapshot_preview1::fd_write" in message


def test_rejects_missing_memory(cache):
    message = rejection(cache, mods.plain_module(memory="(memory 1)"))

    assert message == "missing required export 'memory' (the agent's linear memory)"


def test_rejects_memory_not_memory(cache):
    data = mods.plain_module(memory='(memory 1) (func (export "memory"))')

    assert rejection(cache, data).startswith("missing required export 'memory'")


def test_rejects_missing_alloc(cache):
    assert rejection(cache, mods.plain_module(alloc="")) == "missing required export 'alloc'"


def test_rejects_missing_handler(cache):
    assert rejection(cache, wat.NO_HANDLER) == "missing required export 'handle_message'"


def test_rejects_wrong_handler_type(cache):
    data = mods.plain_module(handler='(func (export "handle_message") (param i32) (result i32) (i32.const 0))')

    message = rejection(cache, data)

    assert message == "export 'handle_message' has the wrong type; expected (i32, i32) -> (i32)"


def test_rejects_alloc_as_global(cache):
    data = mods.plain_module(alloc='(global (export "alloc") i32 (i32.const 0))')

    assert rejection(cache, data) == "export 'alloc' has the wrong type; expected (i32) -> (i32)"


@pytest.mark.parametrize(
    ("export", "expected"),
    [
        ('(func (export "agent_init") (result i64) (i64.const 0))', "export 'agent_init' has the wrong type"),
        ('(func (export "agent_shutdown") (result i32) (i32.const 0))', "export 'agent_shutdown' has the wrong type"),
        ('(func (export "dealloc") (param i32))', "export 'dealloc' has the wrong type"),
    ],
)
def test_rejects_wrong_optional_export(cache, export, expected):
    assert rejection(cache, mods.plain_module(extra=export)).startswith(expected)


def test_start_without_wasi_is_reactor(cache):
    data = mods.plain_module(alloc="", extra='(func (export "_start"))')

    assert rejection(cache, data) == "missing required export 'alloc'"


def test_rejects_memory_above_limit(cache):
    message = rejection(cache, wat.BIG_MEMORY, memory_limit=2 * 10**6)

    assert message.startswith("module declares 6553600 bytes of initial memory")
    assert "memory limit of 2000000 bytes" in message


def test_accepts_memory_at_limit(cache):
    compiled = cache.compile_untrusted(wat.BIG_MEMORY, 100 * 65536)

    assert compiled.info.min_memory_bytes == 100 * 65536


def test_compile_writes_cache_file(engine, cache, tmp_path):
    data = example_bytes("echo")

    cache.compile_untrusted(data, LIMIT)

    assert (tmp_path / engine.settings_key / f"{sha256_of(data)}.cwasm").is_file()


def test_load_returns_compiled_instance(cache):
    data = example_bytes("echo")
    compiled = cache.compile_untrusted(data, LIMIT)

    assert cache.load(compiled.info.sha256, data) is compiled


def test_load_reuses_disk_cache(engine, tmp_path):
    data = example_bytes("echo")
    sha = ModuleCache(engine, tmp_path).compile_untrusted(data, LIMIT).info.sha256

    # The module bytes passed here cannot compile, so a success proves the cached code was used.
    loaded = ModuleCache(engine, tmp_path).load(sha, b"not wasm")

    assert loaded.info.sha256 == sha
    assert "handle_message" in loaded.info.exports


def test_load_compiles_on_miss(engine, tmp_path):
    data = example_bytes("responder")
    sha = sha256_of(data)

    loaded = ModuleCache(engine, tmp_path).load(sha, data)

    assert loaded.info.kind == REACTOR
    assert (tmp_path / engine.settings_key / f"{sha}.cwasm").is_file()


def test_cache_folder_per_engine_settings(tmp_path):
    data = example_bytes("echo")
    first = WasmEngine(memory_reservation=64 * 2**20, memory_guard_size=64 * 2**10)
    second = WasmEngine(memory_reservation=32 * 2**20, memory_guard_size=64 * 2**10)
    ModuleCache(first, tmp_path).compile_untrusted(data, LIMIT)

    assert not (tmp_path / second.settings_key / f"{sha256_of(data)}.cwasm").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_cache_recompiled(engine, tmp_path, caplog, damage):
    data = example_bytes("echo")
    sha = ModuleCache(engine, tmp_path).compile_untrusted(data, LIMIT).info.sha256
    path = tmp_path / engine.settings_key / f"{sha}.cwasm"
    original = path.read_bytes()
    damaged = {"garbage": b"not a compiled module" * 10, "truncated": original[: len(original) // 2], "empty": b""}
    path.write_bytes(damaged[damage])

    with caplog.at_level(logging.WARNING, logger="caxton.runtime.modules"):
        loaded = ModuleCache(engine, tmp_path).load(sha, data)

    assert loaded.info.exports == frozenset({"memory", "alloc", "handle_message"})
    assert "is unusable, recompiling" in caplog.text


def test_corrupt_cache_file_replaced(engine, tmp_path):
    data = example_bytes("echo")
    sha = ModuleCache(engine, tmp_path).compile_untrusted(data, LIMIT).info.sha256
    path = tmp_path / engine.settings_key / f"{sha}.cwasm"
    path.write_bytes(b"not a compiled module")

    ModuleCache(engine, tmp_path).load(sha, data)

    assert path.read_bytes() != b"not a compiled module"
