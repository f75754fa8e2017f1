"""The Quart-Trio application: authentication, size limits and the error envelope.

Every error leaves as `{"error": {"code", "message", "trace_id"}}`, and the same trace id
appears in the server log line for that error.
"""

from __future__ import annotations

import logging
import time

from quart import Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from caxton import __version__
from caxton.api.auth import TOKEN_HEADER, Authenticator
from caxton.api.errors import current_target, error_response
from caxton.api.openapi import OPENAPI_DOCUMENT
from caxton.api.ratelimit import install_rate_limits
from caxton.api.rest import blueprint
from caxton.api.ws import blueprint as ws_blueprint
from caxton.domain import ids
from caxton.domain.errors import (
    CaxtonError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from caxton.services.container import Services

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
PROMETHEUS_PATH = "/metrics"
# Paths served without a token, for load balancers and probes.
PUBLIC_PATHS = frozenset({f"{API_PREFIX}/health"})
# Room for multipart boundaries and the config part around an uploaded module.
MULTIPART_OVERHEAD = 256 * 1024


def _presented_token() -> str | None:
    """Return the token from `X-Caxton-Token`, or from `Authorization: Bearer` (as Prometheus sends it)."""
    token = request.headers.get(TOKEN_HEADER)
    if token:
        return token
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def create_app(services: Services, authenticator: Authenticator) -> QuartTrio:
    app = QuartTrio("caxton")
    limits = services.limits
    app.config["MAX_CONTENT_LENGTH"] = limits.max_module_size + MULTIPART_OVERHEAD
    app.config["MAX_FORM_MEMORY_SIZE"] = limits.max_request_size
    app.config["MAX_FORM_PARTS"] = 16
    app.json.sort_keys = False
    app.extensions["caxton.services"] = services
    app.extensions["caxton.auth"] = authenticator
    app.extensions["caxton.started"] = time.monotonic()

    @app.before_request
    async def authenticate() -> None:
        g.trace_id = None
        if request.path in PUBLIC_PATHS or request.method == "OPTIONS":
            return
        principal = authenticator.authenticate(_presented_token())
        authenticator.authorize(principal, request.method)
        g.principal = principal

    install_rate_limits(app, services.rate_limits, API_PREFIX)

    @app.after_request
    async def count_request(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        services.metrics.http_requests.labels(route=rule, method=request.method, status=str(response.status_code)).inc()
        return response

    @app.get(PROMETHEUS_PATH)
    async def prometheus() -> Response:
        body = generate_latest(services.metrics.registry)
        return Response(body, content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(CaxtonError)
    async def caxton_error(error: CaxtonError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        method, path = current_target()
        mapped: CaxtonError
        if error.code == 404:
            mapped = NotFound(f"no such path: {method} {path}; the event stream is at /ws")
        elif error.code == 405:
            mapped = MethodNotAllowed(f"method {method} is not allowed on {path}")
        elif error.code == 413:
            mapped = PayloadTooLarge(
                f"request is too large: uploads may be {limits.max_module_size} bytes "
                f"(limits.max_module_size) and other fields {limits.max_request_size} bytes "
                "(limits.max_request_size)"
            )
        elif error.code == 400 and path == "/ws":
            mapped = InvalidRequest("Upgrade", "/ws is a WebSocket endpoint; connect with a WebSocket client")
        else:
            mapped = CaxtonError(error.description or error.name)
            mapped.status = error.code or 500
            mapped.code = "INVALID_REQUEST" if 400 <= mapped.status < 500 else "INTERNAL_ERROR"
        return error_response(mapped)

    @app.errorhandler(Exception)
    async def unexpected_error(error: Exception) -> Response:
        trace = ids.trace_id()
        method, path = current_target()
        logger.error("%s %s failed trace_id=%s", method, path, trace, exc_info=error)
        return error_response(InternalError("Internal server error; quote the trace_id when reporting it"), trace)

    app.register_blueprint(blueprint, url_prefix=API_PREFIX)
    app.register_blueprint(ws_blueprint)

    @app.get(f"{API_PREFIX}/health")
    async def health() -> Response:
        started = app.extensions["caxton.started"]
        return jsonify(
            {"status": "healthy", "version": __version__, "uptime_seconds": round(time.monotonic() - started)}
        )

    # Token-protected like every route but health; the reason is in caxton/api/openapi.py.
    @app.get(f"{API_PREFIX}/openapi.json")
    async def openapi_document() -> Response:
        return jsonify(OPENAPI_DOCUMENT)

    return app
