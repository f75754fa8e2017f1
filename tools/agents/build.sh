#!/usr/bin/env bash
# Builds the example agents into OUT_DIR (default: caxton/examples in the
# repository root): echo.wasm, responder.wasm, forwarder.wasm, counter.wasm
# and wasi-echo.wasm. See README.md beside this script for the toolchains.
#
# Usage: tools/agents/build.sh [OUT_DIR]
#
# Environment:
#   WAT2WASM      wat2wasm binary (default: wat2wasm from wabt on PATH)
#   PYTHON        Python with the wasmtime package, used when wat2wasm is
#                 missing (default: python3)
#   CLANG         clang binary (default: clang)
#   WASI_SYSROOT  wasi-libc sysroot passed to clang as --sysroot (default:
#                 none, which suits Debian's wasi-libc package)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/../.." && pwd)"

fail() {
    echo "build.sh: error: $*" >&2
    exit 1
}

if [[ $# -gt 1 ]]; then
    fail "expected at most one argument (OUT_DIR), got $#"
fi
out_dir="${1:-$repo_root/caxton/examples}"

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

# ---- Tool checks ------------------------------------------------------------

clang_bin="${CLANG:-clang}"
command -v "$clang_bin" >/dev/null ||
    fail "clang not found (CLANG=$clang_bin); install it, e.g. apt-get install clang lld"
command -v wasm-ld >/dev/null ||
    fail "wasm-ld not found; install lld, e.g. apt-get install lld"
command -v npm >/dev/null || fail "npm not found; install Node.js 20 or later with npm"
command -v npx >/dev/null || fail "npx not found; install Node.js 20 or later with npm"

wasi_flags=()
if [[ -n "${WASI_SYSROOT:-}" ]]; then
    wasi_flags+=("--sysroot=$WASI_SYSROOT")
fi

# Probe the wasm32-wasi target once, so a missing sysroot or runtime library
# is reported here instead of as a long linker error later.
printf 'int main(void) { return 0; }\n' >"$work_dir/probe.c"
if ! "$clang_bin" --target=wasm32-wasi "${wasi_flags[@]}" -o "$work_dir/probe.wasm" \
    "$work_dir/probe.c" 2>"$work_dir/probe.log"; then
    cat "$work_dir/probe.log" >&2
    fail "clang cannot build for wasm32-wasi; install wasi-libc and libclang-rt-dev-wasm32" \
        "(Debian) or set WASI_SYSROOT to a wasi-libc sysroot"
fi

mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"

# ---- echo: WebAssembly text -------------------------------------------------

build_wat() {
    local source="$1" output="$2"
    local wat2wasm_bin="${WAT2WASM:-wat2wasm}"
    if command -v "$wat2wasm_bin" >/dev/null; then
        "$wat2wasm_bin" "$source" -o "$output"
        return
    fi
    local python_bin="${PYTHON:-python3}"
    if command -v "$python_bin" >/dev/null &&
        "$python_bin" -c 'import wasmtime' 2>/dev/null; then
        echo "build.sh: wat2wasm not found, using wasmtime.wat2wasm from $python_bin" >&2
        "$python_bin" - "$source" "$output" <<'PY'
import sys
import wasmtime

source, output = sys.argv[1], sys.argv[2]
with open(source, encoding="utf-8") as f:
    binary = wasmtime.wat2wasm(f.read())
with open(output, "wb") as f:
    f.write(binary)
PY
        return
    fi
    fail "wat2wasm not found (WAT2WASM=$wat2wasm_bin) and $python_bin cannot import wasmtime;" \
        "install wabt (apt-get install wabt) or the wasmtime Python package"
}

echo "build.sh: echo.wasm (WebAssembly text)"
build_wat "$script_dir/echo/echo.wat" "$out_dir/echo.wasm"

# ---- C agents ---------------------------------------------------------------

common_c_flags=(-O2 -Wall -Wextra -Werror -std=c11 "-I$script_dir/common")

echo "build.sh: responder.wasm (C, no libc)"
"$clang_bin" --target=wasm32 -nostdlib -ffreestanding "${common_c_flags[@]}" \
    -Wl,--no-entry -Wl,--strip-all \
    -o "$out_dir/responder.wasm" "$script_dir/responder/responder.c"

echo "build.sh: forwarder.wasm (C, wasi-libc reactor)"
"$clang_bin" --target=wasm32-wasi -mexec-model=reactor "${wasi_flags[@]}" "${common_c_flags[@]}" \
    -Wl,--strip-all \
    -o "$out_dir/forwarder.wasm" "$script_dir/forwarder/forwarder.c"

echo "build.sh: wasi-echo.wasm (C, wasi-libc command)"
"$clang_bin" --target=wasm32-wasi "${wasi_flags[@]}" "${common_c_flags[@]}" \
    -Wl,--strip-all \
    -o "$out_dir/wasi-echo.wasm" "$script_dir/wasi-echo/wasi_echo.c"

# ---- counter: AssemblyScript ------------------------------------------------

echo "build.sh: counter.wasm (AssemblyScript)"
counter_dir="$script_dir/counter"
if [[ ! -d "$counter_dir/node_modules/assemblyscript" ]]; then
    echo "build.sh: installing AssemblyScript with npm ci in $counter_dir" >&2
    (cd "$counter_dir" && npm ci --no-audit --no-fund) ||
        fail "npm ci failed in $counter_dir; check access to the npm registry"
fi
(cd "$counter_dir" && npx --no-install asc assembly/index.ts --config asconfig.json \
    --target release --outFile "$out_dir/counter.wasm") ||
    fail "asc failed to build $counter_dir/assembly/index.ts"

# clang marks its output executable, but these files are package data.
chmod 644 "$out_dir"/{echo,responder,forwarder,counter,wasi-echo}.wasm

echo "build.sh: built into $out_dir:"
(cd "$out_dir" && ls -l echo.wasm responder.wasm forwarder.wasm counter.wasm wasi-echo.wasm)
