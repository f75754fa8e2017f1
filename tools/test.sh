#!/usr/bin/env bash
# Install what the tests need, rebuild the example agents from source, run the test suite.
#
# System packages (clang, lld, wasi-libc, wabt, Node.js with npm, curl) come from apt when
# missing and the script runs as root; otherwise it names what to install. Python packages
# go into .venv at the repository root. Extra arguments go to pytest.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

apt_packages=(clang lld libclang-rt-dev-wasm32 wasi-libc wabt curl)
missing=()
for tool in clang wasm-ld wat2wasm curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -n "$(find /usr/lib -name 'libclang_rt.builtins-wasm32.a' -print -quit 2>/dev/null)" ]] ||
    missing+=("libclang-rt-dev-wasm32")
[[ -d /usr/include/wasm32-wasi ]] || missing+=("wasi-libc")
command -v npm >/dev/null || { missing+=("npm"); apt_packages+=(nodejs npm); }

if ((${#missing[@]})); then
    if [[ "$(id -u)" != 0 ]]; then
        echo "tools/test.sh: missing ${missing[*]}; install: apt-get install ${apt_packages[*]}" >&2
        exit 1
    fi
    echo "tools/test.sh: installing ${apt_packages[*]} (missing: ${missing[*]})" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

# The suite runs against modules rebuilt from source in this run; a parity test checks that
# the committed modules in caxton/examples behave the same.
PYTHON="$root/.venv/bin/python" tools/agents/build.sh "$root/build/agents"
export CAXTON_EXAMPLES_DIR="$root/build/agents"

exec .venv/bin/python -m pytest "$@"
