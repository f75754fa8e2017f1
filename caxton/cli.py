"""The `caxton` command: `serve` runs the server; `examples` hands out example agents."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

import trio

from caxton import __version__
from caxton.config import SettingsError, load_settings

EXAMPLES_PACKAGE = "caxton.examples"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caxton", description="Host WebAssembly agents that talk FIPA-ACL.")
    parser.add_argument("--version", action="version", version=f"caxton {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server in the foreground")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", help="HTTP port for REST and WebSocket (default 8080; 0 picks a free port)")
    serve.add_argument("--data-dir", help="folder for the database and the admin token (default: user data folder)")
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument("--log-level", help="debug, info, warning or error (default info)")

    examples = commands.add_parser("examples", help="list the example agents or write one to a file")
    examples.add_argument("name", nargs="?", help="example to write, such as echo")
    examples.add_argument("-o", "--output", type=Path, help="file to write (default NAME.wasm)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "examples":
        return _examples(args.name, args.output)
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            config_file=args.config,
            overrides={"host": args.host, "port": args.port, "data_dir": args.data_dir, "log_level": args.log_level},
        )
    except SettingsError as exc:
        print(f"caxton: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from caxton.server import run_until_signal

    async def main_task() -> None:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_until_signal, settings)
            _print_banner(running, settings)

    failures: list[BaseException] = []
    try:
        trio.run(main_task)
    except* (OSError, RuntimeError, ValueError) as group:
        # Trio wraps start-up errors (port in use, unreadable data folder) in an ExceptionGroup.
        failures.extend(_leaves(group))
    for error in failures:
        logging.getLogger("caxton").error("cannot start: %s", error)
    return 1 if failures else 0


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [group]


def _print_banner(running, settings) -> None:
    api = f"{running.urls[0]}/api/v1" if running.urls else ""
    print(f"Caxton {__version__} serving {api}", file=sys.stderr)
    if running.token_file:
        print(f'Admin token is in {running.token_file}; use it with:\n'
              f'  export CAXTON_TOKEN="$(cat {running.token_file})"\n'
              f'  export CAXTON_API="{api}"', file=sys.stderr, flush=True)
    else:
        print("Admin token: the value of CAXTON_TOKEN / auth.token", file=sys.stderr, flush=True)


def _examples(name: str | None, output: Path | None) -> int:
    folder = resources.files(EXAMPLES_PACKAGE)
    available = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".wasm"))
    if name is None:
        print("\n".join(available))
        return 0
    if name not in available:
        print(f"caxton: unknown example {name!r}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    target = output or Path(f"{name}.wasm")
    target.write_bytes((folder / f"{name}.wasm").read_bytes())
    print(f"wrote {target}", file=sys.stderr)
    return 0
