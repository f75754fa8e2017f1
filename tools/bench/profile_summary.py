"""Summarize a py-spy profile in raw (collapsed stack) format by layer and by function.

Each sample is charged to the innermost frame that belongs to a known layer (Caxton's own
modules, wasmtime-py, sqlite3, Quart, hypercorn, trio, ...). Standard-library frames such as
json or contextlib are charged to the nearest known frame above them, so `json.dumps`
called by the store counts as store time. The tables give each layer's and each function's
share of all samples, which with py-spy's default idle filter is a share of CPU time.

Run: python tools/bench/profile_summary.py PROFILE.raw [--skip TEXT]... [--thread NAME] [--top 15]
Record one with: py-spy record --nonblocking --threads --format raw -o PROFILE.raw -- CMD
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from benchlib import format_table

# (layer, pattern on "function (path:line)"), first match wins; order from narrow to broad.
LAYERS: tuple[tuple[str, str], ...] = (
    ("store: sqlite3 reads, writes and commits (caxton/store)", r"caxton/store/"),
    ("agent call: caxton/runtime/instance.py", r"caxton/runtime/instance\.py"),
    ("host functions: caxton/runtime/abi.py", r"caxton/runtime/abi\.py"),
    ("agent runner: caxton/runtime/runner.py", r"caxton/runtime/runner\.py"),
    ("wasmtime-py bindings", r"wasmtime/"),
    ("message service: caxton/services/messages.py", r"caxton/services/messages\.py"),
    ("message validation and ids: caxton/domain", r"caxton/domain/"),
    ("REST routes and app: caxton/api", r"caxton/api/"),
    ("other caxton code", r"caxton/"),
    ("Quart and Werkzeug", r"quart/|quart_trio/|werkzeug/"),
    ("hypercorn and h11", r"hypercorn/|h11/"),
    ("trio thread hops", r"trio/_threads\.py|trio/_core/_thread_cache\.py"),
    ("trio scheduler and sockets", r"trio/|outcome/"),
    ("benchmark code", r"bus_throughput\.py|rest_throughput\.py"),
)
_COMPILED = tuple((layer, re.compile(pattern)) for layer, pattern in LAYERS)


def classify(frame: str) -> str | None:
    for layer, pattern in _COMPILED:
        if pattern.search(frame):
            return layer
    return None


def summarize(path: Path, skip: list[str], thread_filter: str | None) -> tuple[Counter, Counter, Counter, int]:
    """Return samples per layer, per charged function, per thread name, and the total."""
    layers: Counter = Counter()
    functions: Counter = Counter()
    threads: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if any(name in stack for name in skip):
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = _thread_label(frames[0]) if frames[0].startswith("thread ") else "(no thread name)"
        if thread_filter is not None and thread_filter not in thread:
            continue
        threads[thread] += count
        layer, charged = "other (interpreter, stdlib, idle detection)", frames[-1]
        for frame in reversed(frames):
            found = classify(frame)
            if found is not None:
                layer, charged = found, frame
                break
        layers[layer] += count
        functions[_strip_line(charged)] += count
        total += count
    return layers, functions, threads, total


def _thread_label(thread: str) -> str:
    # "thread (1234): Trio thread 3" and "thread (1234): _handle_batch from ..." name the job.
    label = thread.split(":", 1)[1].strip() if ":" in thread else thread
    return re.sub(r"\d+", "N", label)[:80]


def _strip_line(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", frame)


def main() -> int:
    parser = argparse.ArgumentParser(description="Summarize a py-spy raw profile by layer and function.")
    parser.add_argument("profile", type=Path, help="py-spy output written with --format raw")
    parser.add_argument(
        "--skip", action="append", default=[],
        help="drop samples whose stack contains this text, such as run_bare (repeatable)",
    )
    parser.add_argument("--thread", help="keep only samples of threads whose name contains this text, such as MainThread")
    parser.add_argument("--top", type=int, default=15, help="functions to list (default 15)")
    args = parser.parse_args()
    layers, functions, threads, total = summarize(args.profile, args.skip, args.thread)
    if not total:
        print(f"no samples in {args.profile}", file=sys.stderr)
        return 1
    print(f"{total} samples in {args.profile}")
    print()
    print(format_table(["layer", "samples", "share"], [[n, c, f"{c / total:.1%}"] for n, c in layers.most_common()]))
    print()
    rows = [[n, c, f"{c / total:.1%}"] for n, c in functions.most_common(args.top)]
    print(format_table(["function charged (innermost known frame)", "samples", "share"], rows))
    print()
    rows = [[n, c, f"{c / total:.1%}"] for n, c in threads.most_common(8)]
    print(format_table(["thread", "samples", "share"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
