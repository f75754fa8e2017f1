"""Errors that cross layers, each carrying the API error code and HTTP status.

The ten codes of the public API reference keep their statuses. Four codes extend them for
cases the reference has none for: malformed requests, unknown paths, wrong methods and
oversized bodies. Services raise these; the interfaces turn them into the error envelope.
"""

from __future__ import annotations


class CaxtonError(Exception):
    """Base class: `code` and `status` are fixed per subclass, `message` names the problem."""

    code = "INTERNAL_ERROR"
    status = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class AgentNotFound(CaxtonError):
    code = "AGENT_NOT_FOUND"
    status = 404


class AgentAlreadyExists(CaxtonError):
    code = "AGENT_ALREADY_EXISTS"
    status = 409


class InvalidWasm(CaxtonError):
    code = "INVALID_WASM"
    status = 400


class ResourceLimitExceeded(CaxtonError):
    code = "RESOURCE_LIMIT_EXCEEDED"
    status = 429


class DeploymentFailed(CaxtonError):
    code = "DEPLOYMENT_FAILED"
    status = 500


class MessageDeliveryFailed(CaxtonError):
    code = "MESSAGE_DELIVERY_FAILED"
    status = 500


class Unauthorized(CaxtonError):
    code = "UNAUTHORIZED"
    status = 401


class Forbidden(CaxtonError):
    code = "FORBIDDEN"
    status = 403


class RateLimited(CaxtonError):
    code = "RATE_LIMITED"
    status = 429


class InternalError(CaxtonError):
    code = "INTERNAL_ERROR"
    status = 500


class InvalidRequest(CaxtonError):
    """A malformed body, parameter or field; the message names the field."""

    code = "INVALID_REQUEST"
    status = 400

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(CaxtonError):
    """A path or a non-agent resource that does not exist."""

    code = "NOT_FOUND"
    status = 404


class MethodNotAllowed(CaxtonError):
    code = "METHOD_NOT_ALLOWED"
    status = 405


class PayloadTooLarge(CaxtonError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413
