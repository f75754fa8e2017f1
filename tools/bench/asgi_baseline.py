"""A minimal ASGI app on hypercorn's trio worker: the baseline for rest_throughput.py.

It reads the whole request body, parses it as JSON and returns a small JSON object shaped
like Caxton's send receipt. It has no routing, authentication, validation or storage, so it
measures what hypercorn, h11 and trio cost per request on their own.

Run: python tools/bench/asgi_baseline.py --port 0
It logs "baseline serving http://127.0.0.1:PORT" and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys

import hypercorn.config
import hypercorn.trio
import trio

logger = logging.getLogger("asgi_baseline")


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return

    chunks = []
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return
        chunks.append(event.get("body", b""))
        if not event.get("more_body", False):
            break
    body = b"".join(chunks)
    status = 200
    try:
        json.loads(body) if body else None
        answer = {
            "message_id": f"msg_{secrets.token_hex(8)}",
            "status": "delivered",
            "conversation_id": f"conv_{secrets.token_hex(8)}",
        }
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        status, answer = 400, {"error": f"invalid JSON: {exc}"}
    payload = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def serve(port: int) -> None:
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = logger
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: hypercorn.trio.serve(
                    app, config, shutdown_trigger=shutdown.wait, task_status=task_status
                )
            )
            print(f"baseline serving {urls[0]}", file=sys.stderr, flush=True)
            async for received in signals:
                logger.info("received %s; shutting down", signal.Signals(received).name)
                shutdown.set()
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: any free port)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(serve, args.port)


if __name__ == "__main__":
    main()
