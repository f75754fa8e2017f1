"""The error envelope shared by every HTTP route and the WebSocket handshake."""

from __future__ import annotations

import logging

from quart import Response, has_request_context, jsonify, request, websocket

from caxton.domain import ids
from caxton.domain.errors import CaxtonError

logger = logging.getLogger(__name__)


def current_target() -> tuple[str, str]:
    """Return the method and path of the HTTP request or WebSocket handshake being served."""
    if has_request_context():
        return request.method, request.path
    return "WEBSOCKET", websocket.path


def error_response(error: CaxtonError, trace: str | None = None) -> Response:
    """Build the error envelope and log the error with its trace id (never the token)."""
    trace = trace or ids.trace_id()
    level = logging.ERROR if error.status >= 500 else logging.WARNING
    method, path = current_target()
    logger.log(
        level, "%s %s -> %d %s trace_id=%s: %s", method, path, error.status, error.code, trace, error.message
    )
    response = jsonify({"error": {"code": error.code, "message": error.message, "trace_id": trace}})
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    if has_request_context() and (request.content_length or "Transfer-Encoding" in request.headers):
        # The body may be unread: with Hypercorn 0.18 and Quart-Trio 0.12 such a connection can
        # hang on its next request, so close it and let the client reconnect.
        response.headers["Connection"] = "close"
    return response
