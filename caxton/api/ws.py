"""The `/ws` event stream: authenticate, then relay hub events and answer control frames.

The token comes in the `X-Caxton-Token` header or, for browsers that cannot set headers on
a WebSocket, in the `token` query parameter. A missing or wrong token is refused with a 401
error envelope before the upgrade. On shutdown every socket is closed with code 1001.
"""

from __future__ import annotations

import json
import logging

import trio
from quart import Blueprint, current_app, websocket

from caxton.api.auth import TOKEN_HEADER, Authenticator
from caxton.api.errors import error_response
from caxton.domain.errors import Unauthorized
from caxton.domain.events import MAX_FRAME_BYTES, error_frame
from caxton.domain.messages import loads_strict
from caxton.services.container import Services
from caxton.services.events import Listener

logger = logging.getLogger(__name__)

blueprint = Blueprint("ws", __name__)

# Close codes from RFC 6455: going away, and policy violation for an oversized frame.
CLOSE_GOING_AWAY = 1001
TOKEN_PARAMETER = "token"


@blueprint.websocket("/ws")
async def event_stream():
    services: Services = current_app.extensions["caxton.services"]
    authenticator: Authenticator = current_app.extensions["caxton.auth"]
    token = websocket.headers.get(TOKEN_HEADER) or websocket.args.get(TOKEN_PARAMETER)
    try:
        principal = authenticator.authenticate(token)
    except Unauthorized as exc:
        return error_response(exc)
    if services.events.closed:
        return "server is shutting down", 503
    # TODO: rate-limit WebSocket connections and frames; Quart runs no before_request hooks here.
    await websocket.accept()
    listener = services.events.listen(principal.identity)
    logger.info("WebSocket opened by %s (%d open)", principal.name, services.events.listener_count)
    send_lock = trio.Lock()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_relay_events, listener, send_lock, nursery.cancel_scope)
            await _serve_frames(listener, services, send_lock)
            nursery.cancel_scope.cancel()
    finally:
        services.events.forget(listener)
        logger.info("WebSocket closed for %s", principal.name)


async def _send(frame: dict, lock: trio.Lock) -> None:
    async with lock:
        await websocket.send(json.dumps(frame, separators=(",", ":")))


async def _relay_events(listener: Listener, lock: trio.Lock, scope: trio.CancelScope) -> None:
    while True:
        frames = await listener.next_frames()
        for frame in frames:
            async with lock:
                await websocket.send(frame)
        if listener.closing:
            await websocket.close(CLOSE_GOING_AWAY, "server shutting down")
            scope.cancel()
            return


async def _serve_frames(listener: Listener, services: Services, lock: trio.Lock) -> None:
    resolve = services.agents.resolve_identity
    while True:
        raw = await websocket.receive()
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if len(raw) > MAX_FRAME_BYTES:
            await _send(error_frame("INVALID_REQUEST", f"frame is over {MAX_FRAME_BYTES} bytes"), lock)
            continue
        try:
            frame = loads_strict(raw)
        except ValueError as exc:
            await _send(error_frame("INVALID_REQUEST", f"invalid JSON: {exc}"), lock)
            continue
        await _send(listener.state.handle(frame, resolve), lock)
