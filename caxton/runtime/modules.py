"""Module validation at deploy and the compile cache.

`ModuleCache.compile_untrusted` is the deploy path: it checks uploaded bytes against the ABI
and compiles them. `ModuleCache.load` is the start path for modules already in the store:
it reuses compiled code from memory or from the on-disk cache, which holds only files this
server wrote (untrusted bytes never reach `Module.deserialize`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import attrs
import wasmtime

from caxton.domain.errors import InvalidWasm
from caxton.runtime.abi import (
    HOST_FUNCTIONS,
    HOST_MODULE,
    OPTIONAL_EXPORTS,
    PLANNED_HOST_FUNCTIONS,
    REQUIRED_EXPORTS,
    WASI_MODULE,
    define_host_functions,
    signature,
)
from caxton.runtime.engine import WasmEngine

logger = logging.getLogger(__name__)

_WASM_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\x00\x00\x00"
_PAGE = 65536

REACTOR = "reactor"
COMMAND = "command"


@attrs.frozen
class ModuleInfo:
    sha256: str
    kind: str
    uses_wasi: bool
    exports: frozenset[str]
    min_memory_bytes: int


@attrs.frozen
class CompiledModule:
    info: ModuleInfo
    module: wasmtime.Module
    pre: wasmtime.InstancePre


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModuleCache:
    """Compiled modules by content hash, shared by every agent running the same bytes.

    Thread-safe: compile and load run on worker threads.
    """

    def __init__(self, engine: WasmEngine, cache_dir: Path) -> None:
        self._engine = engine
        self._dir = cache_dir / engine.settings_key
        self._dir.mkdir(parents=True, exist_ok=True)
        self._modules: dict[str, CompiledModule] = {}
        self._lock = threading.Lock()
        self._plain_linker = wasmtime.Linker(engine.engine)
        define_host_functions(self._plain_linker)
        self._wasi_linker = wasmtime.Linker(engine.engine)
        self._wasi_linker.define_wasi()
        define_host_functions(self._wasi_linker)

    def compile_untrusted(self, data: bytes, memory_limit: int) -> CompiledModule:
        """Validate uploaded bytes and compile them; raise InvalidWasm naming the problem."""
        _check_header(data)
        sha = sha256_of(data)
        with self._lock:
            cached = self._modules.get(sha)
        if cached is not None:
            # The same bytes passed every check before; only the memory limit may differ.
            check_memory(cached.info, memory_limit)
            return cached
        try:
            module = wasmtime.Module(self._engine.engine, data)
        except wasmtime.WasmtimeError as exc:
            raise InvalidWasm(f"module failed to compile: {_first_line(exc)}") from None
        info = inspect(module, sha)
        check_memory(info, memory_limit)
        compiled = self._prepare(module, info)
        self._write_cache(sha, module)
        with self._lock:
            self._modules.setdefault(sha, compiled)
        return compiled

    def load(self, sha: str, data: bytes) -> CompiledModule:
        """Return the compiled module for stored bytes, compiling only on a cache miss."""
        with self._lock:
            cached = self._modules.get(sha)
        if cached is not None:
            return cached
        module = self._read_cache(sha)
        if module is None:
            module = wasmtime.Module(self._engine.engine, data)
            self._write_cache(sha, module)
        compiled = self._prepare(module, inspect(module, sha))
        with self._lock:
            return self._modules.setdefault(sha, compiled)

    def _prepare(self, module: wasmtime.Module, info: ModuleInfo) -> CompiledModule:
        linker = self._wasi_linker if info.uses_wasi else self._plain_linker
        try:
            pre = linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise InvalidWasm(f"module cannot be linked: {_first_line(exc)}") from None
        return CompiledModule(info=info, module=module, pre=pre)

    def _cache_path(self, sha: str) -> Path:
        return self._dir / f"{sha}.cwasm"

    def _read_cache(self, sha: str) -> wasmtime.Module | None:
        path = self._cache_path(sha)
        if not path.exists():
            return None
        try:
            return wasmtime.Module.deserialize_file(self._engine.engine, str(path))
        except wasmtime.WasmtimeError as exc:
            logger.warning("compile cache entry %s is unusable, recompiling: %s", path.name, _first_line(exc))
            path.unlink(missing_ok=True)
            return None

    def _write_cache(self, sha: str, module: wasmtime.Module) -> None:
        path = self._cache_path(sha)
        if path.exists():
            return
        temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            temporary.write_bytes(bytes(module.serialize()))
            os.replace(temporary, path)
        except OSError as exc:
            logger.warning("cannot write compile cache entry %s: %s", path, exc)
            temporary.unlink(missing_ok=True)


def _check_header(data: bytes) -> None:
    if len(data) < 8 or data[:4] != _WASM_MAGIC:
        raise InvalidWasm("not a WebAssembly module: the file does not start with the \\0asm header")
    if data[4:8] != _CORE_VERSION:
        raise InvalidWasm(
            f"unsupported WebAssembly binary version {data[4:8].hex()}: Caxton runs core modules "
            "(version 1), not components"
        )


def inspect(module: wasmtime.Module, sha: str) -> ModuleInfo:
    """Check imports and exports against ABI version 1; raise InvalidWasm naming the problem."""
    uses_wasi = False
    for item in module.imports:
        if item.module == WASI_MODULE and isinstance(item.type, wasmtime.FuncType):
            uses_wasi = True
            continue
        _check_host_import(item)

    exports = {item.name: item.type for item in module.exports}
    if "_start" in exports and uses_wasi:
        kind = COMMAND
    else:
        kind = REACTOR
        _check_reactor_exports(exports)
    memory = exports.get("memory")
    min_memory = memory.limits.min * _PAGE if isinstance(memory, wasmtime.MemoryType) else 0
    return ModuleInfo(
        sha256=sha, kind=kind, uses_wasi=uses_wasi, exports=frozenset(exports), min_memory_bytes=min_memory
    )


def _check_host_import(item: wasmtime.ImportType) -> None:
    name = f"{item.module}.{item.name}"
    if item.module != HOST_MODULE:
        raise InvalidWasm(
            f"unknown import {name}: agents may import only from module '{HOST_MODULE}' "
            f"and '{WASI_MODULE}'"
        )
    if item.name in PLANNED_HOST_FUNCTIONS:
        raise InvalidWasm(f"import {name} is not available yet: the key-value store is not in this release")
    expected = HOST_FUNCTIONS.get(item.name)
    if expected is None:
        raise InvalidWasm(f"unknown import {name}: the host provides {', '.join(sorted(HOST_FUNCTIONS))}")
    if not isinstance(item.type, wasmtime.FuncType) or signature(item.type.params, item.type.results) != expected:
        raise InvalidWasm(f"import {name} has the wrong type; expected {_format_signature(expected)}")


def _check_reactor_exports(exports: dict[str, object]) -> None:
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise InvalidWasm("missing required export 'memory' (the agent's linear memory)")
    for name, expected in REQUIRED_EXPORTS.items():
        if name not in exports:
            raise InvalidWasm(f"missing required export '{name}'")
    for name, expected in {**REQUIRED_EXPORTS, **OPTIONAL_EXPORTS}.items():
        found = exports.get(name)
        if found is None:
            continue
        if not isinstance(found, wasmtime.FuncType) or signature(found.params, found.results) != expected:
            raise InvalidWasm(f"export '{name}' has the wrong type; expected {_format_signature(expected)}")


def check_memory(info: ModuleInfo, memory_limit: int) -> None:
    if info.min_memory_bytes > memory_limit:
        raise InvalidWasm(
            f"module declares {info.min_memory_bytes} bytes of initial memory, above the agent's "
            f"memory limit of {memory_limit} bytes; raise resources.memory or shrink the module"
        )


def _format_signature(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = sig
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
