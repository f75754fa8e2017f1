"""Idle agents per process: how many echo agents one server process holds, and what each costs.

A child process runs Caxton's store, runtime and services in-process, as `caxton serve`
starts them but without the HTTP layer (in a trial, deploying through the REST API took two
to five times as long per agent). It deploys echo.wasm under new names from `--concurrency` tasks through
`AgentService.deploy`, the call behind POST /api/v1/agents. Every `--sample-every` agents it
reads its own RSS and virtual size from /proc/self/status and counts its memory mappings
in /proc/self/maps. It stops at `--target` agents, after `--max-seconds`, at the first
failed deploy, or when the mappings come within `--map-margin` of vm.max_map_count (unless
`--until-failure` is given). Then it idles for `--idle-seconds`, measuring its CPU, and
sends one message to each of `--check-agents` random agents, waiting for the echo reply.
With `--restart`, a second child then opens the same data folder, which restores every
agent from the store, and reports the same figures.

This process only starts the child and prints its reports. The child is a separate
process so that a child killed at a resource limit still leaves a report here.

Run: /work/venv/bin/python tools/bench/idle_agents.py [--target 5000] [--concurrency 16] [--until-failure]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import trio

from benchlib import format_table, linear_slope, load_average, machine_summary, max_map_count, process_memory

MIB = 2**20
# User address space of a 64-bit Linux process with 4-level page tables (47 bits).
USER_ADDRESS_SPACE = 2**47
CLIENT_IDENTITY = "client_bench_idle"
REPLY_TIMEOUT_SECONDS = 30.0
# The parent's bound on the child's shutdown (stopping every agent, closing the store).
CHILD_STOP_SECONDS = 120.0


# --- child: hosts the agents ---------------------------------------------------------------


def emit(kind: str, **fields) -> None:
    """Write one JSON report line to stdout for the parent."""
    print(json.dumps({"kind": kind, **fields}), flush=True)


def sample(count: int, started: float) -> dict:
    return {"agents": count, "seconds": time.perf_counter() - started, "cpu": time.process_time(), **process_memory()}


async def deploy_agents(services, args: argparse.Namespace, limit: int | None) -> tuple[int, str | None, str]:
    """Deploy echo agents until a stop condition; return (count, first error, stop reason)."""
    wasm = (resources.files("caxton.examples") / "echo.wasm").read_bytes()
    started = time.perf_counter()
    deadline = started + args.max_seconds
    next_index = 0
    deployed = 0
    error: str | None = None
    stop_reason = f"reached the target of {args.target}"
    next_sample = args.sample_every

    emit("sample", **sample(0, started))
    stopping = False

    async def deployer() -> None:
        # A stop condition sets `stopping`; deploys already running finish and are counted.
        nonlocal next_index, deployed, error, stop_reason, next_sample, stopping
        while next_index < args.target and not stopping:
            if time.perf_counter() > deadline:
                stopping, stop_reason = True, f"deploy time limit of {args.max_seconds:g}s"
                return
            index = next_index
            next_index += 1
            try:
                await services.agents.deploy(wasm, filename="echo.wasm", config={"name": f"idle-{index:06d}"})
            except Exception as exc:  # noqa: BLE001 - the first failure is the result, whatever its type
                if error is None:
                    error = f"deploying idle-{index:06d} failed: {type(exc).__name__}: {exc}"
                    stopping, stop_reason = True, "a deploy failed"
                return
            deployed += 1
            if deployed >= next_sample:
                next_sample += args.sample_every
                memory = sample(deployed, started)
                emit("sample", **memory)
                if limit is not None and memory["mappings"] >= limit and not stopping:
                    stopping = True
                    stop_reason = f"memory mappings reached {memory['mappings']:,}, within --map-margin of vm.max_map_count"

    async with trio.open_nursery() as nursery:
        for _ in range(args.concurrency):
            nursery.start_soon(deployer)
    emit("sample", **sample(deployed, started))
    return deployed, error, stop_reason


async def check_agents(services, names: list[str]) -> list[dict]:
    """Send one request to each named agent and wait for its echo reply in the store."""
    checks = []
    for name in names:
        body = {"performative": "request", "receiver": name, "content": {"check": name}}
        started = time.perf_counter()
        receipt = await services.messages.send(
            body, size=len(json.dumps(body)), client_identity=CLIENT_IDENTITY
        )
        conversation = receipt.to_json()["conversation_id"]
        shape: list = []
        with trio.move_on_after(REPLY_TIMEOUT_SECONDS):
            while True:
                messages, _ = await services.messages.history(conversation_id=conversation)
                shape = [(m["performative"], m["status"]) for m in messages]
                if shape == [("request", "handled"), ("inform", "delivered")]:
                    break
                await trio.sleep(0.01)
        ok = shape == [("request", "handled"), ("inform", "delivered")]
        checks.append({"agent": name, "ok": ok, "seconds": time.perf_counter() - started, "shape": shape})
    return checks


async def with_services(settings, work):
    """Start the store, runtime and services as `caxton serve` does, without HTTP; return `await work(services)`."""
    from caxton.server import run_services

    started = time.perf_counter()
    async with run_services(settings) as services:
        emit("started", seconds=time.perf_counter() - started, **process_memory())
        result = await work(services)
        stop_started = time.perf_counter()
    emit("stopped", seconds=time.perf_counter() - stop_started)
    return result


async def idle_and_check(services, settings, names: list[str], idle_seconds: float) -> None:
    """Measure CPU and memory over `idle_seconds`, then send one message to each named agent."""
    from caxton.server import DATABASE_FILE

    cpu_before, idle_started = time.process_time(), time.perf_counter()
    await trio.sleep(idle_seconds)
    elapsed = time.perf_counter() - idle_started
    emit("idle", seconds=elapsed, cpu_cores=(time.process_time() - cpu_before) / elapsed if elapsed else 0.0, **process_memory())
    checks = await check_agents(services, names)
    database_bytes = sum(path.stat().st_size for path in settings.data_dir.glob(DATABASE_FILE + "*"))
    emit("checked", checks=checks, database_bytes=database_bytes)


async def run_child_services(args: argparse.Namespace) -> None:
    from caxton.config import load_settings

    overrides = {"host": "127.0.0.1", "port": 0, "data_dir": args.data_dir}
    if args.memory_reservation:
        overrides["runtime_memory_reservation"] = args.memory_reservation
    if args.memory_guard_size:
        overrides["runtime_memory_guard_size"] = args.memory_guard_size
    settings = load_settings(environ={}, overrides=overrides)
    emit(
        "settings", open_files_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        memory_reservation=settings.runtime_memory_reservation,
        memory_guard_size=settings.runtime_memory_guard_size, metrics_sample_interval=settings.metrics_sample_interval,
    )
    map_limit = max_map_count()
    limit = None if args.until_failure or map_limit is None else map_limit - args.map_margin

    async def deploy_then_check(services) -> None:
        deployed, error, stop_reason = await deploy_agents(services, args, limit)
        emit("deployed", agents=deployed, error=error, stop_reason=stop_reason)
        await idle_and_check(services, settings, random_names(services, args.check_agents), args.idle_seconds)

    async def restore_then_check(services) -> None:
        emit("restored", agents=len(services.agents.directory.runners()))
        await idle_and_check(services, settings, random_names(services, args.check_agents), args.idle_seconds)

    await with_services(settings, restore_then_check if args.restore else deploy_then_check)


def random_names(services, sample_size: int) -> list[str]:
    """Return the names of up to `sample_size` random running agents."""
    names = [runner.spec.name for runner in services.agents.directory.runners()]
    return random.sample(names, min(sample_size, len(names)))


def run_child(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(run_child_services, args)
    return 0


# --- parent: starts the child and reports ---------------------------------------------------


def run_child_process(command: list[str], log_path: Path, timeout: float) -> tuple[list[dict], dict[str, dict], int | None]:
    """Run one child, printing its memory samples as they come; return (samples, other reports, exit code).

    A child still running after `timeout` seconds gets SIGTERM, then SIGKILL 10 s later.
    """
    samples: list[dict] = []
    reports: dict[str, dict] = {}
    with open(log_path, "wb") as log:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True)
        watchdog = threading.Timer(timeout, stop_child, (child,))
        watchdog.start()
        try:
            for line in child.stdout:
                report = json.loads(line)
                kind = report.pop("kind")
                if kind == "sample":
                    samples.append(report)
                    print(
                        f"  {report['agents']:>7,} agents after {report['seconds']:6.1f}s: RSS {report['rss'] / MIB:8.1f} MiB, "
                        f"virtual {report['vm_size'] / 2**30:9.1f} GiB, {report['mappings']:>7,} mappings",
                        flush=True,
                    )
                else:
                    reports[kind] = report
            child.wait(CHILD_STOP_SECONDS)
        finally:
            watchdog.cancel()
            stop_child(child)
    return samples, reports, child.returncode


def stop_child(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def run_parent(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="caxton-bench-idle-"))
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", "--data-dir", str(folder / "caxton-data"),
        "--target", str(args.target), "--concurrency", str(args.concurrency), "--sample-every", str(args.sample_every),
        "--max-seconds", str(args.max_seconds), "--map-margin", str(args.map_margin),
        "--idle-seconds", str(args.idle_seconds), "--check-agents", str(args.check_agents),
    ]
    if args.until_failure:
        command.append("--until-failure")
    if args.memory_reservation:
        command += ["--memory-reservation", args.memory_reservation]
    if args.memory_guard_size:
        command += ["--memory-guard-size", args.memory_guard_size]
    # Deploying, idling, checking and stopping; stopping 11,500 agents took 17 s here.
    timeout = args.max_seconds + args.idle_seconds + CHILD_STOP_SECONDS + 120

    print(f"machine: {machine_summary()}")
    print(f"load average at start: {args.load_at_start}")
    print(f"vm.max_map_count: {max_map_count()}")
    try:
        samples, reports, returncode = run_child_process(command, folder / "child.log", timeout)
        print()
        print_report(samples, reports, returncode, folder / "child.log")
        healthy = returncode == 0 and all_checks_passed(reports)
        if args.restart and samples:
            print()
            print("restart: a new process restores the agents from the same data folder")
            _, restored, restart_code = run_child_process([*command, "--restore"], folder / "restore.log", timeout)
            print_restore_report(samples[0], restored, restart_code, folder / "restore.log")
            healthy = healthy and restart_code == 0 and all_checks_passed(restored)
        return 0 if healthy else 1
    finally:
        if args.keep:
            print(f"child logs and data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def all_checks_passed(reports: dict[str, dict]) -> bool:
    return "checked" in reports and all(check["ok"] for check in reports["checked"]["checks"])


def print_report(samples: list[dict], reports: dict[str, dict], returncode: int | None, log_path: Path) -> None:
    if len(samples) < 2:
        print(f"the child stopped before deploying any agent (exit code {returncode}); log tail:")
        print(log_path.read_text(errors="replace")[-2000:])
        return
    base, last = samples[0], samples[-1]
    rows = []
    previous = base
    for point in samples[1:]:
        added = point["agents"] - previous["agents"]
        seconds = point["seconds"] - previous["seconds"]
        if added == 0:
            continue
        rows.append([
            point["agents"], point["seconds"], added / seconds if seconds else 0.0,
            (point["cpu"] - previous["cpu"]) / added * 1000,
            point["rss"] / MIB, point["vm_size"] / 2**30, point["mappings"], point["threads"], point["fds"],
        ])
        previous = point
    print(format_table(
        ["agents", "seconds", "deploys/s", "CPU ms per deploy", "RSS MiB", "virtual GiB", "mappings", "threads", "fds"],
        rows,
    ))
    print()

    # Slopes over the samples after the first 10% of the run, so that one-time start-up costs
    # (thread cache, first compile, SQLite page cache) do not count as per-agent cost.
    steady = [point for point in samples if point["agents"] >= last["agents"] * 0.1] or samples
    rss_slope = linear_slope([(p["agents"], p["rss"]) for p in steady])
    vm_slope = linear_slope([(p["agents"], p["vm_size"]) for p in steady])
    map_slope = linear_slope([(p["agents"], p["mappings"]) for p in steady])
    fd_slope = linear_slope([(p["agents"], p["fds"]) for p in steady])
    deployed = reports.get("deployed", {})
    settings = reports.get("settings", {})
    print(f"agents deployed: {deployed.get('agents', last['agents']):,}; stopped because: {deployed.get('stop_reason', 'the child exited')}")
    if deployed.get("error"):
        print(f"first error: {deployed['error']}")
    if settings:
        print(
            f"runtime.memory_reservation {settings['memory_reservation'] / MIB:g} MiB, "
            f"runtime.memory_guard_size {settings['memory_guard_size'] / 1024:g} KiB"
        )
    print(
        f"per agent (least-squares slope): RSS {rss_slope / 1024:.1f} KiB, virtual {vm_slope / MIB:.2f} MiB, "
        f"{map_slope:.2f} memory mappings, {fd_slope:.2f} open file descriptors"
    )
    print(f"at start: RSS {base['rss'] / MIB:.1f} MiB, {base['mappings']} mappings, {base['fds']} file descriptors")

    limits = []
    map_limit = max_map_count()
    if map_limit and map_slope > 0:
        limits.append(("memory mappings (vm.max_map_count)", (map_limit - base["mappings"]) / map_slope))
    if settings.get("open_files_limit") and fd_slope > 0:
        limits.append(("open files (RLIMIT_NOFILE soft limit)", (settings["open_files_limit"] - base["fds"]) / fd_slope))
    if vm_slope > 0:
        limits.append(("address space (47-bit user space)", (USER_ADDRESS_SPACE - base["vm_size"]) / vm_slope))
    available = mem_available()
    if available and rss_slope > 0:
        limits.append(("RSS (MemAvailable now)", (available + last["rss"] - base["rss"]) / rss_slope))
    if limits:
        print("estimated agents per process at each limit, extrapolated from the slopes:")
        for name, count in sorted(limits, key=lambda item: item[1]):
            print(f"  {name}: {count:,.0f}")
    if "idle" in reports:
        idle = reports["idle"]
        print(
            f"idle for {idle['seconds']:.1f}s with {deployed.get('agents', 0):,} agents: {idle['cpu_cores']:.3f} cores, "
            f"RSS {idle['rss'] / MIB:.1f} MiB"
        )
    print_checks_and_stop(reports, returncode, log_path)


def print_checks_and_stop(reports: dict[str, dict], returncode: int | None, log_path: Path) -> None:
    if "checked" in reports:
        checked = reports["checked"]
        for check in checked["checks"]:
            state = "echo reply stored" if check["ok"] else f"no reply, history {check['shape']}"
            print(f"check {check['agent']}: {state} after {check['seconds'] * 1000:.0f} ms")
        print(f"database size: {checked['database_bytes'] / MIB:.1f} MiB")
    if "stopped" in reports:
        print(f"stopping every agent and the store took {reports['stopped']['seconds']:.1f}s")
    if returncode != 0:
        print(f"child exited with code {returncode}; log tail:")
        print(log_path.read_text(errors="replace")[-2000:])


def print_restore_report(base: dict, reports: dict[str, dict], returncode: int | None, log_path: Path) -> None:
    """Print restore time and memory after a restart, per agent against the first child's empty start."""
    if "restored" not in reports or "idle" not in reports:
        print(f"the restarted child reported no restored agents (exit code {returncode}); log tail:")
        print(log_path.read_text(errors="replace")[-2000:])
        return
    agents = reports["restored"]["agents"]
    idle = reports["idle"]
    print(f"restored {agents:,} agents in {reports['started']['seconds']:.1f}s")
    if agents:
        print(
            f"after restore: RSS {idle['rss'] / MIB:.1f} MiB, virtual {idle['vm_size'] / 2**30:.1f} GiB, "
            f"{idle['mappings']:,} mappings, {idle['fds']} file descriptors; per agent against the empty start: "
            f"RSS {(idle['rss'] - base['rss']) / agents / 1024:.1f} KiB, "
            f"{(idle['mappings'] - base['mappings']) / agents:.2f} mappings, {(idle['fds'] - base['fds']) / agents:.3f} descriptors"
        )
        map_limit = max_map_count()
        per_agent_maps = (idle["mappings"] - base["mappings"]) / agents
        if map_limit and per_agent_maps > 0:
            print(f"estimated agents at vm.max_map_count after a restart: {(map_limit - base['mappings']) / per_agent_maps:,.0f}")
    print(f"idle for {idle['seconds']:.1f}s after restore: {idle['cpu_cores']:.3f} cores")
    print_checks_and_stop(reports, returncode, log_path)


def mem_available() -> int | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Deploy idle echo agents into one process and report the count reached and the memory per agent.")
    parser.add_argument("--target", type=int, default=5000, help="agents to deploy (default 5000)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent deploys (default 16)")
    parser.add_argument("--sample-every", type=int, default=250, help="read memory after every N deploys (default 250)")
    parser.add_argument("--max-seconds", type=float, default=75.0, help="stop deploying after this many seconds (default 75)")
    parser.add_argument(
        "--map-margin", type=int, default=2000,
        help="stop when the process's memory mappings come within this many of vm.max_map_count (default 2000)",
    )
    parser.add_argument(
        "--until-failure", action="store_true",
        help="ignore --map-margin and deploy until a deploy fails or --target or --max-seconds is reached",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=12.0,
        help="idle time measured after deploying, in seconds; the default 12 covers one metrics sample, taken every 10s",
    )
    parser.add_argument("--check-agents", type=int, default=5, help="random agents that get one message at the end (default 5)")
    parser.add_argument("--memory-reservation", help="runtime.memory_reservation, such as 64Mi (default: the server's default)")
    parser.add_argument("--memory-guard-size", help="runtime.memory_guard_size, such as 64Ki (default: the server's default)")
    parser.add_argument(
        "--restart", action="store_true",
        help="afterwards start a new process on the same data folder, which restores every agent, and measure it too",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the child's log and database")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--restore", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.target <= 200_000:
        parser.error(f"--target must be 1 to 200000, got {args.target}")
    if not 1 <= args.concurrency <= 128:
        parser.error(f"--concurrency must be 1 to 128, got {args.concurrency}")
    if not 1 <= args.sample_every <= args.target:
        parser.error(f"--sample-every must be 1 to --target, got {args.sample_every}")
    if not 1 <= args.max_seconds <= 3600:
        parser.error(f"--max-seconds must be 1 to 3600, got {args.max_seconds:g}")
    if not 0 <= args.idle_seconds <= 300:
        parser.error(f"--idle-seconds must be 0 to 300, got {args.idle_seconds:g}")
    if not 0 <= args.check_agents <= 100:
        parser.error(f"--check-agents must be 0 to 100, got {args.check_agents}")
    if args.child and not args.data_dir:
        parser.error("--child needs --data-dir")
    return args


def main() -> int:
    args = parse_args()
    if args.child:
        return run_child(args)
    args.load_at_start = load_average()
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
