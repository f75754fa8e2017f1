"""The OpenAPI 3.1 document of the REST API, served at `GET /api/v1/openapi.json`.

The document is a plain dict built once at import. Enums, bounds and error codes come from the
modules that enforce them (performatives, agent statuses, list limits, metric periods, error
classes), so changing one of those changes the document too. Patterns and field rules that
the code keeps private are written out here, and `tests/api/test_openapi.py` sends generated
requests from this document to a real server to check them.

`openapi.json` needs a token, like every route except `/api/v1/health`. The document reveals
no secret, but the tools that read it (code generators, Swagger UI, schemathesis) can all send
the `X-Caxton-Token` header, so a public document would only add a second exception to the
authentication hook (`caxton.api.app.PUBLIC_PATHS`). As an authenticated request it falls under
the `default` rate limit and carries the `X-RateLimit-*` headers like other routes.

OpenAPI cannot describe WebSocket frames, so the `/ws` event stream is described in prose in
`info.description` and as data in the top-level `x-websocket` extension.
"""

from __future__ import annotations

from typing import Any

from caxton import __version__
from caxton.domain.agents import MAX_FUEL, AgentStatus
from caxton.domain.errors import (
    AgentAlreadyExists,
    AgentNotFound,
    CaxtonError,
    DeploymentFailed,
    Forbidden,
    InternalError,
    InvalidRequest,
    InvalidWasm,
    MessageDeliveryFailed,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ResourceLimitExceeded,
    Unauthorized,
)
from caxton.domain.events import MAX_FRAME_BYTES, MAX_SUBSCRIPTION_AGENTS, MAX_SUBSCRIPTIONS
from caxton.domain.messages import Performative
from caxton.services.agents import DEFAULT_GRACE_SECONDS, DEFAULT_LIST_LIMIT, MAX_GRACE_SECONDS, MAX_LIST_LIMIT
from caxton.services.messages import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT
from caxton.services.metrics import PERFORMANCE_FIELDS, PERIODS
from caxton.services.rollout import STRATEGIES

API_PREFIX = "/api/v1"
# The largest `offset` that the list routes accept (`parse_bounded_int(..., high=2**62)`).
MAX_OFFSET = 2**62

# Every error class that reaches a client: the ten codes of the API reference, then the four
# HTTP-level codes.
ERROR_CLASSES: tuple[type[CaxtonError], ...] = (
    InvalidWasm,
    Unauthorized,
    Forbidden,
    AgentNotFound,
    AgentAlreadyExists,
    ResourceLimitExceeded,
    RateLimited,
    DeploymentFailed,
    MessageDeliveryFailed,
    InternalError,
    InvalidRequest,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
)

# The regular expressions of caxton.domain, in the ECMA-262 syntax that JSON Schema uses.
# NOTE: the server accepts a few values that these patterns reject, because Python's `$` also
# matches before a final newline and its `\d` (in the resource patterns) matches non-ASCII digits.
IDENTITY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$"
AGENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
AGENT_ID_PATTERN = r"^agent_[0-9a-f]{16}$"
# caxton.domain.resources: sizes with SI or IEC units (case-insensitive), CPU in cores or
# millicores, durations in ms, s or m.
MEMORY_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([BbKkMmGg]|[KkMmGg][Bb]|[KkMmGg][Ii][Bb]?)?\s*$"
CPU_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*m?\s*$"
DURATION_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m)?\s*$"
# caxton.domain.timefmt.format_time: UTC with milliseconds.
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
# Free-text envelope fields of a message (caxton.domain.messages._MAX_ENVELOPE_FIELD).
MAX_ENVELOPE_FIELD = 256

RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining")
READ_METHODS = frozenset({"get"})


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> dict[str, str]:
    return _ref("schemas", name)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Any], *, required: tuple[str, ...] | None = None, **extra: Any) -> dict[str, Any]:
    """Build a closed object schema whose properties are all required unless `required` lists fewer."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
        **extra,
    }


def _count(description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": 0}
    if description:
        schema["description"] = description
    return schema


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------


def _error_schemas() -> dict[str, Any]:
    return {
        "ErrorCode": {
            "type": "string",
            "enum": [error.code for error in ERROR_CLASSES],
            "description": (
                "The first ten codes describe failures of Caxton's operations. INVALID_REQUEST, "
                "NOT_FOUND, METHOD_NOT_ALLOWED and PAYLOAD_TOO_LARGE cover HTTP-level problems. "
                "Any other 4xx from the HTTP layer is reported as INVALID_REQUEST and any other "
                "5xx as INTERNAL_ERROR."
            ),
        },
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": _schema("ErrorCode"),
                        "message": {
                            "type": "string",
                            "description": "What failed. For a bad field it starts with the field name, such as `receiver:`.",
                        },
                        "trace_id": {
                            "type": "string",
                            "pattern": r"^trace_[0-9a-f]{16}$",
                            "description": "Unique per error. The server log line for the error carries the same id.",
                        },
                    }
                )
            },
            description="The error envelope of every HTTP error response.",
            examples=[
                {
                    "error": {
                        "code": "AGENT_NOT_FOUND",
                        "message": "Agent with ID 'agent_0000000000000000' not found",
                        "trace_id": "trace_254190ffa6e920ff",
                    }
                }
            ],
        ),
    }


def _identity_schemas() -> dict[str, Any]:
    return {
        "Timestamp": {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "RFC 3339 time in UTC with millisecond precision.",
            "examples": ["2026-12-04T20:41:42.696Z"],
        },
        "AgentId": {"type": "string", "pattern": AGENT_ID_PATTERN, "examples": ["agent_a76d2c35aba1a9a9"]},
        "AgentName": {
            "type": "string",
            "pattern": AGENT_NAME_PATTERN,
            "not": {"pattern": AGENT_ID_PATTERN},
            "description": (
                "1 to 63 letters, digits or `._-`, starting with a letter or digit, and not shaped "
                "like an agent id. Unique among agents that have not been removed."
            ),
            "examples": ["my-agent"],
        },
        "Identity": {
            "type": "string",
            "pattern": IDENTITY_PATTERN,
            "description": (
                "An agent id, an agent name or a client identity: 1 to 128 letters, digits or "
                "`._:@/-`, starting with a letter or digit."
            ),
            "examples": ["client_001"],
        },
        "Performative": {
            "type": "string",
            "enum": [performative.value for performative in Performative],
            "description": (
                "A FIPA-ACL performative. Requests may also use any letter case and `_` for `-` "
                "(`ACCEPT_PROPOSAL`). Responses always use these lower-case forms."
            ),
        },
        "AgentStatus": {"type": "string", "enum": [status.value for status in AgentStatus]},
    }


def _config_schemas() -> dict[str, Any]:
    resources = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "memory": {
                "description": (
                    "Linear memory limit: a size such as `50MB` (10^6), `64Mi` (2^20), `512KB`, or a "
                    "number of bytes. Above zero and at most the `agents.max_memory` setting "
                    "(default 1 GiB). Default: `agents.default_memory` (64 MiB)."
                ),
                "anyOf": [
                    {"type": "string", "pattern": MEMORY_PATTERN},
                    {"type": "integer", "minimum": 1},
                ],
            },
            "cpu": {
                "description": (
                    "CPU share: millicores such as `250m`, or cores such as `0.5`, at least `1m`. "
                    "Default: `agents.default_cpu` (`1000m`)."
                ),
                "anyOf": [
                    {"type": "string", "pattern": CPU_PATTERN},
                    {"type": "number", "minimum": 0.001},
                ],
            },
            "timeout": {
                "description": (
                    "Time limit per handler call: `500ms`, `5s`, `2m` or a number of seconds. Above "
                    "zero and at most `agents.max_timeout` (default 300 s). Default: "
                    "`agents.default_timeout` (5 s)."
                ),
                "anyOf": [
                    {"type": "string", "pattern": DURATION_PATTERN},
                    {"type": "number", "exclusiveMinimum": 0},
                ],
            },
            "fuel": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_FUEL,
                "description": "Wasmtime fuel per message, where 0 means no fuel budget. Default: `runtime.fuel_per_message`.",
            },
        },
    }
    return {
        "AgentConfig": {
            "type": "object",
            "additionalProperties": False,
            "description": "Deploy configuration, in which every field is optional.",
            "properties": {
                "name": {
                    "allOf": [_schema("AgentName")],
                    "description": (
                        "Default: derived from the upload's file name, such as `echo-3fa9c1` for "
                        "`echo.wasm` (the stem and 6 random hex digits)."
                    ),
                },
                "version": {"type": "string", "minLength": 1, "maxLength": 64, "default": "1.0.0"},
                "description": _nullable({"type": "string", "maxLength": 1024}),
                "resources": resources,
            },
            "examples": [{"name": "my-agent", "resources": {"memory": "50MB", "cpu": "100m", "timeout": "5s"}}],
        },
        "StoredConfig": {
            "type": "object",
            "description": "The configuration as stored, with server defaults filled in.",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "description": _nullable({"type": "string"}),
                "resources": {
                    "type": "object",
                    "properties": {
                        "memory": {"type": "string"},
                        "cpu": {"type": "string"},
                        "timeout": {"type": "string"},
                        "fuel": {"type": "integer", "minimum": 0},
                    },
                    "required": ["memory", "cpu", "timeout"],
                },
            },
            "required": ["name", "version", "description", "resources"],
        },
    }


def _agent_schemas() -> dict[str, Any]:
    summary_properties = {
        "agent_id": _schema("AgentId"),
        "name": {"type": "string"},
        "status": {
            "allOf": [_schema("AgentStatus")],
            "description": "The live state of a running agent, else the stored status.",
        },
        "memory_used": {
            "type": "string",
            "description": "Linear memory in decimal units, such as `65.5KB`, measured after each batch.",
        },
        "cpu_usage": {
            "type": "number",
            "minimum": 0,
            "description": "CPU time that handlers used over the last 10 seconds, in cores.",
        },
        "version": {"type": "string"},
        "deployed_at": _schema("Timestamp"),
    }
    deployment = _object(
        {
            "deployment_id": {"type": "string", "pattern": r"^deploy_[0-9a-f]{16}$"},
            "agent_id": _schema("AgentId"),
            "strategy": {"type": "string", "enum": list(STRATEGIES)},
            "status": {"type": "string", "enum": ["in_progress", "completed", "failed"]},
            "from_version": {"type": "string"},
            "to_version": {"type": "string"},
            "error": _nullable({"type": "string"}),
            "created_at": _schema("Timestamp"),
            "updated_at": _schema("Timestamp"),
        }
    )
    details_properties = {
        **summary_properties,
        "kind": {
            "type": "string",
            "enum": ["reactor", "command"],
            "description": "`command` is a WASI command run once per message.",
        },
        "module_sha256": {"type": "string", "pattern": r"^[0-9a-f]{64}$"},
        "last_error": _nullable({"type": "string"}),
        "config": _schema("StoredConfig"),
        "resources": _object(
            {
                "memory": {"type": "string", "description": "Use against limit, such as `65.5KB/50MB`."},
                "cpu": {"type": "string", "description": "Use against limit in millicores, such as `1m/1000m`."},
                "timeout": {"type": "string", "description": "The time limit per handler call, such as `5s`."},
            }
        ),
        "metrics": _object(
            {
                "messages_processed": _count("Messages handled since deploy, kept across restarts."),
                "messages_failed": _count("Messages whose handler failed since deploy."),
                "uptime_seconds": _count("Seconds since the agent last started, or 0 when it is not running."),
                "queue_size": _count("Messages waiting in the inbox, not counting the batch in hand."),
                "restarts": _count("Instance restarts of the current run."),
                "throttled_seconds": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Seconds the agent waited because it used up its CPU share.",
                },
            }
        ),
        "recent_events": {
            "type": "array",
            "maxItems": 20,
            "description": "The latest lifecycle events, newest first.",
            "items": _object(
                {
                    "event": {"type": "string", "examples": ["deployed", "restarted", "failed", "updated"]},
                    "detail": _nullable({"type": "string"}),
                    "at": _schema("Timestamp"),
                }
            ),
        },
        "last_deployment": {"anyOf": [_schema("Deployment"), {"type": "null"}]},
    }
    return {
        "AgentSummary": _object(summary_properties),
        "AgentDetails": _object(details_properties),
        "Deployment": deployment,
        "AgentList": _object(
            {
                "agents": {"type": "array", "items": _schema("AgentSummary")},
                "total": _count("Matching agents before paging."),
            }
        ),
        "AgentDeployed": _object(
            {
                "agent_id": _schema("AgentId"),
                "name": {"type": "string"},
                "status": {"const": "running"},
                "deployed_at": _schema("Timestamp"),
            }
        ),
        "UpdateAccepted": _object(
            {
                "agent_id": _schema("AgentId"),
                "status": {"const": "updating"},
                "deployment_id": {"type": "string", "pattern": r"^deploy_[0-9a-f]{16}$"},
            }
        ),
        "AgentState": _object(
            {"agent_id": _schema("AgentId"), "status": _schema("AgentStatus")},
            description="An agent's status after a stop or start request.",
        ),
        "AgentRemoved": _object({"agent_id": _schema("AgentId"), "status": {"const": "removed"}}),
        "UpdateRequest": {
            "type": "object",
            "additionalProperties": False,
            "description": "At least one of `config` and `version` must be non-null.",
            "anyOf": [
                {"required": ["config"], "properties": {"config": {"type": "object"}}},
                {"required": ["version"], "properties": {"version": {"type": "string"}}},
            ],
            "properties": {
                "config": {
                    "anyOf": [_schema("AgentConfig"), {"type": "null"}],
                    "description": (
                        "Fields to change. `resources` merges key by key into the stored config, and "
                        "`name` must stay the same."
                    ),
                },
                "strategy": {"anyOf": [{"type": "string", "enum": list(STRATEGIES)}, {"type": "null"}], "default": "immediate"},
                "version": _nullable({"type": "string", "minLength": 1, "maxLength": 64}),
            },
        },
        "StopRequest": _object(
            {
                "grace_period_seconds": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": MAX_GRACE_SECONDS,
                    "default": DEFAULT_GRACE_SECONDS,
                    "description": "How long the agent may drain its inbox before it stops without finishing it.",
                },
                "drain_messages": {
                    "type": "boolean",
                    "default": False,
                    "description": "Handle the messages already in the inbox before stopping.",
                },
            },
            required=(),
        ),
    }


def _message_schemas() -> dict[str, Any]:
    envelope_text = {"type": "string", "minLength": 1, "maxLength": MAX_ENVELOPE_FIELD}
    request_properties: dict[str, Any] = {
        "performative": _schema("Performative"),
        "receiver": {"allOf": [_schema("Identity")], "description": "An agent id or agent name."},
        "sender": {
            "anyOf": [_schema("Identity"), {"type": "null"}],
            "description": "Default: the client identity of the token, `client_` and 12 hex digits.",
        },
        "content": {"description": "Any JSON value."},
        "conversation_id": {
            "anyOf": [envelope_text, {"type": "null"}],
            "description": "Default: a new `conv_` id.",
        },
        "reply_with": _nullable(envelope_text),
        "in_reply_to": _nullable(envelope_text),
        "reply_by": {
            "anyOf": [{**envelope_text, "format": "date-time"}, {"type": "null"}],
            "description": "An RFC 3339 time with `Z` or an offset, stored as given.",
        },
        "protocol": _nullable(envelope_text),
        "language": _nullable(envelope_text),
        "ontology": _nullable(envelope_text),
        "message_id": {"description": "Accepted and ignored: the server assigns the id."},
        "timestamp": {"description": "Accepted and ignored: the server assigns the time."},
    }
    record_properties: dict[str, Any] = {
        "message_id": {"type": "string", "pattern": r"^msg_[0-9a-f]{16}$"},
        "performative": _schema("Performative"),
        "sender": {"type": "string"},
        "receiver": {"type": "string"},
        "content": {"description": "Any JSON value."},
        "conversation_id": {"type": "string"},
        "reply_with": _nullable({"type": "string"}),
        "in_reply_to": _nullable({"type": "string"}),
        "reply_by": _nullable({"type": "string"}),
        "protocol": _nullable({"type": "string"}),
        "language": _nullable({"type": "string"}),
        "ontology": _nullable({"type": "string"}),
        "timestamp": _schema("Timestamp"),
        "status": {
            "type": "string",
            "enum": ["queued", "handled", "failed", "delivered"],
            "description": (
                "`queued`: waiting for its agent. `handled`: the agent handled it. `failed`: "
                "handling failed or the receiver was removed. `delivered`: addressed to a client."
            ),
        },
        "error": _nullable({"type": "string"}),
        "handled_at": {"anyOf": [_schema("Timestamp"), {"type": "null"}]},
    }
    return {
        "MessageRequest": _object(
            request_properties,
            required=("performative", "receiver"),
            description="A FIPA-ACL message. The whole body may be at most `limits.max_message_size` bytes (default 256 KiB).",
            examples=[{"performative": "request", "receiver": "my-agent", "content": {"action": "process"}}],
        ),
        "SendReceipt": _object(
            {
                "message_id": {"type": "string", "pattern": r"^msg_[0-9a-f]{16}$"},
                "status": {
                    "const": "delivered",
                    "description": "The message is committed to the store and queued in the agent's inbox.",
                },
                "conversation_id": {"type": "string"},
            }
        ),
        "MessageRecord": _object(record_properties),
        "MessageList": _object(
            {
                "messages": {"type": "array", "items": _schema("MessageRecord")},
                "total": _count("Matching messages before paging."),
            }
        ),
    }


def _history_properties(sample: dict[str, Any]) -> dict[str, Any]:
    """Build the properties that `period=` adds to a metrics response."""
    return {
        "period": {"type": "string", "enum": list(PERIODS)},
        "interval_seconds": {"type": "number", "exclusiveMinimum": 0},
        "samples": {"type": "array", "items": sample, "description": "Stored snapshots, oldest first."},
    }


def _metrics_schemas() -> dict[str, Any]:
    number = {"type": "number"}
    agent_properties: dict[str, Any] = {
        "agent_id": _schema("AgentId"),
        "messages_processed": _count("Messages handled successfully."),
        "messages_failed": _count("Messages whose handler failed."),
        "average_latency_ms": {"type": "number", "minimum": 0},
        "rate_per_second": {"type": "number", "minimum": 0, "description": "Messages handled per second over the last 10 seconds."},
        "cpu_usage": {"type": "number", "minimum": 0, "description": "Cores, averaged over the last 10 seconds."},
        "cpu_seconds_total": {"type": "number", "minimum": 0},
        "fuel_consumed_total": _count("Wasm fuel units that the agent's handlers used."),
        "memory_usage_mb": {"type": "number", "minimum": 0},
        "queue_size": _count("Messages waiting in the inbox."),
        "uptime_seconds": _count("Seconds since the agent last started."),
        "restarts": _count("Instance restarts of the current run."),
    }
    agent_sample = {
        "type": "object",
        "properties": {"timestamp": _schema("Timestamp"), **agent_properties},
        "required": ["timestamp", "agent_id"],
    }
    system_sample = _object(
        {
            "timestamp": _schema("Timestamp"),
            "agents_total": _count("Live agents."),
            "agents_running": _count("Running agents."),
            "rate_per_second": number,
            "queue_size": _count("Messages queued in all inboxes."),
            "cpu_usage_percent": number,
            "memory_used_mb": number,
        }
    )
    agents = {
        "type": "object",
        "description": "Live agents in total and per status.",
        "properties": {"total": _count("Live agents.")} | {status.value: _count() for status in AgentStatus},
        "required": ["total"] + [status.value for status in AgentStatus],
        "additionalProperties": {"type": "integer", "minimum": 0},
    }
    return {
        "SystemMetrics": _object(
            {
                "timestamp": _schema("Timestamp"),
                "agents": agents,
                "messages": _object(
                    {
                        "rate_per_second": {"type": "number", "minimum": 0},
                        "queue_size": _count("Messages queued in all inboxes."),
                        "processed_total": _count("Messages handled by live agents."),
                        "failed_total": _count("Messages whose handler failed, for live agents."),
                    }
                ),
                "resources": _object(
                    {
                        "cpu_usage_percent": {**number, "description": "Process CPU use as a percentage of one core."},
                        "memory_used_mb": {**number, "description": "Resident memory of the server process."},
                    }
                ),
                **_history_properties(system_sample),
            },
            required=("timestamp", "agents", "messages", "resources"),
            description="`period`, `interval_seconds` and `samples` appear only when the request has `period`.",
        ),
        "AgentMetrics": _object(
            {**agent_properties, **_history_properties(agent_sample)},
            required=("agent_id",),
            description=(
                "With `type=all` (the default) every agent field is present. `type=performance` "
                f"returns {', '.join(PERFORMANCE_FIELDS)}, and `type=resources` returns agent_id, "
                "cpu_usage, cpu_seconds_total, memory_usage_mb and queue_size. `period`, "
                "`interval_seconds` and `samples` appear only when the request has `period`."
            ),
        ),
    }


def _all_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for part in (
        _error_schemas(),
        _identity_schemas(),
        _config_schemas(),
        _agent_schemas(),
        _message_schemas(),
        _metrics_schemas(),
    ):
        schemas.update(part)
    schemas["Health"] = _object(
        {
            "status": {"const": "healthy"},
            "version": {"type": "string", "examples": [__version__]},
            "uptime_seconds": _count("Seconds since the API started."),
        }
    )
    return schemas


# ---------------------------------------------------------------------------------------------
# Parameters, headers and responses
# ---------------------------------------------------------------------------------------------


def _limit_parameter(default: int, maximum: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "description": "Page size.",
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }


def _parameters() -> dict[str, Any]:
    return {
        "AgentRef": {
            "name": "agent_id",
            "in": "path",
            "required": True,
            "description": (
                "An agent id or agent name. Any other value, including the id of a removed "
                "agent, gives 404 AGENT_NOT_FOUND."
            ),
            "schema": {"type": "string", "pattern": AGENT_NAME_PATTERN},
        },
        "AgentLimit": _limit_parameter(DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT),
        "MessageLimit": _limit_parameter(DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT),
        "Offset": {
            "name": "offset",
            "in": "query",
            "description": "Matches to skip.",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        },
        "Period": {
            "name": "period",
            "in": "query",
            "description": "Add the stored samples of this period (one every `metrics.sample_interval`).",
            "schema": {"type": "string", "enum": list(PERIODS)},
        },
    }


def _headers() -> dict[str, Any]:
    return {
        "X-RateLimit-Limit": {
            "description": "The burst size of the rate-limit category of this request.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        },
        "X-RateLimit-Remaining": {
            "description": "Further requests in this category admitted at once.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        },
        "Retry-After": {
            "description": "Whole seconds until a request in this category is admitted again, sent with RATE_LIMITED only.",
            "schema": {"type": "integer", "minimum": 1},
        },
    }


def _rate_limit_headers() -> dict[str, Any]:
    return {name: _ref("headers", name) for name in RATE_LIMIT_HEADERS}


def _error_response(description: str, *errors: type[CaxtonError], limited: bool = True) -> tuple[str, dict[str, Any]]:
    """Return (status, response object) for errors that share one HTTP status."""
    statuses = {error.status for error in errors}
    if len(statuses) != 1:
        raise ValueError(f"errors {[error.code for error in errors]} have different HTTP statuses {sorted(statuses)}")
    codes = [error.code for error in errors]
    schema = {
        "allOf": [
            _schema("Error"),
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
        ]
    }
    response: dict[str, Any] = {"description": f"{description} ({', '.join(codes)})", "content": _json_content(schema)}
    if limited:
        response["headers"] = _rate_limit_headers()
        if RateLimited in errors:
            response["headers"]["Retry-After"] = _ref("headers", "Retry-After")
    return str(statuses.pop()), response


def _responses(
    method: str,
    success: tuple[str, str, dict[str, Any]],
    *errors: tuple[str, dict[str, Any]],
    reads_body: bool = False,
) -> dict[str, Any]:
    """Build the responses of an authenticated operation.

    `success` is (status, description, content). Every authenticated operation can also return
    401, 429 RATE_LIMITED and 500 INTERNAL_ERROR. Writes can return 403, and body readers 413.
    An entry in `errors` replaces the default for its status.
    """
    status, description, content = success
    responses: dict[str, Any] = {
        status: {"description": description, "headers": _rate_limit_headers(), "content": content}
    }
    defaults = ["Unauthorized", "RateLimited", "InternalError"]
    if method not in READ_METHODS:
        defaults.append("Forbidden")
    if reads_body:
        defaults.append("PayloadTooLarge")
    for name in defaults:
        code, _ = SHARED_RESPONSES[name]
        responses[code] = _ref("responses", name)
    for code, response in errors:
        responses[code] = response
    return dict(sorted(responses.items()))


# The error responses that many operations share, by component name: (status, response).
SHARED_RESPONSES: dict[str, tuple[str, dict[str, Any]]] = {
    "Unauthorized": _error_response("Missing or invalid token", Unauthorized, limited=False),
    "Forbidden": _error_response("The token has the reader role", Forbidden, limited=False),
    "RateLimited": _error_response("Rate limit exceeded. Wait Retry-After seconds", RateLimited),
    "InternalError": _error_response(
        "Unexpected server error. The log has the traceback under the trace_id", InternalError
    ),
    "PayloadTooLarge": _error_response(
        "Body over `limits.max_request_size` (default 1 MiB), module over "
        "`limits.max_module_size` (default 16 MiB), or multipart form over its limits",
        PayloadTooLarge,
    ),
}


# ---------------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------------

_BAD_REQUEST = "Malformed request. The message names the field or parameter"


def _agent_operations() -> dict[str, Any]:
    agent_ref = [_ref("parameters", "AgentRef")]
    not_found = _error_response("No live agent has that id or name", AgentNotFound)
    deploy_form = {
        "type": "object",
        "required": ["wasm"],
        "properties": {
            "wasm": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": (
                    "The WebAssembly module, as a file part with any Content-Type (such as "
                    "`application/wasm`), at most `limits.max_module_size` (default 16 MiB)."
                ),
            },
            "config": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": _schema("AgentConfig"),
                "description": "The deploy configuration as a JSON object, in a form field or a file part.",
            },
        },
    }
    update_form = {
        "type": "object",
        "additionalProperties": False,
        "description": "At least one of `wasm`, `config` and `version` must be present, and `config` must not be `null`.",
        "anyOf": [{"required": ["wasm"]}, {"required": ["config"]}, {"required": ["version"]}],
        "properties": {
            "wasm": {**deploy_form["properties"]["wasm"], "description": "A new module (optional)."},
            "config": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": _schema("AgentConfig"),
                "description": "Config fields to change, as a JSON object.",
            },
            "strategy": {"type": "string", "enum": list(STRATEGIES)},
            "version": {"type": "string", "minLength": 1, "maxLength": 64},
        },
    }
    return {
        f"{API_PREFIX}/agents": {
            "post": {
                "operationId": "deployAgent",
                "tags": ["agents"],
                "summary": "Deploy an agent",
                "description": (
                    "Validates the module, compiles it, starts the agent and stores it. When the "
                    "request returns, `agent_init` has returned 0. A failed deploy stores nothing. "
                    "Form parts other than `wasm` and `config` are ignored."
                ),
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": deploy_form}}},
                "responses": _responses(
                    "post",
                    ("201", "The agent is running", _json_content(_schema("AgentDeployed"))),
                    _error_response(f"{_BAD_REQUEST}, or the module is not a valid agent", InvalidRequest, InvalidWasm),
                    _error_response("Another agent has that name", AgentAlreadyExists),
                    _error_response("The agent could not start, or an unexpected error", DeploymentFailed, InternalError),
                    reads_body=True,
                ),
            },
            "get": {
                "operationId": "listAgents",
                "tags": ["agents"],
                "summary": "List agents",
                "description": "Agents that have not been removed, in deploy order. Unknown query parameters give 400.",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "description": "Filter on the stored status.",
                        "schema": _schema("AgentStatus"),
                    },
                    _ref("parameters", "AgentLimit"),
                    _ref("parameters", "Offset"),
                ],
                "responses": _responses(
                    "get",
                    ("200", "A page of agents", _json_content(_schema("AgentList"))),
                    _error_response(_BAD_REQUEST, InvalidRequest),
                ),
            },
        },
        f"{API_PREFIX}/agents/{{agent_id}}": {
            "parameters": agent_ref,
            "get": {
                "operationId": "getAgent",
                "tags": ["agents"],
                "summary": "Agent details",
                "responses": _responses(
                    "get", ("200", "The agent", _json_content(_schema("AgentDetails"))), not_found
                ),
            },
            "put": {
                "operationId": "updateAgent",
                "tags": ["agents"],
                "summary": "Roll out a new module or config",
                "description": (
                    "Starts an `immediate` or `blue_green` rollout and returns at once with its "
                    "deployment id. `GET /agents/{agent_id}` shows the outcome in `last_deployment`. "
                    "The body is JSON (any Content-Type other than multipart), or multipart with an "
                    "optional `wasm` part. A request without `config`, `version` or `wasm` gives 400, "
                    "and so does an update while another one of the same agent is in progress."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _schema("UpdateRequest")},
                        "multipart/form-data": {"schema": update_form},
                    },
                },
                "responses": _responses(
                    "put",
                    ("202", "The rollout has started", _json_content(_schema("UpdateAccepted"))),
                    _error_response(
                        f"{_BAD_REQUEST}, or the module is invalid or needs more memory than the limit",
                        InvalidRequest,
                        InvalidWasm,
                    ),
                    not_found,
                    reads_body=True,
                ),
            },
            "delete": {
                "operationId": "removeAgent",
                "tags": ["agents"],
                "summary": "Remove an agent",
                "description": (
                    "Stops the agent without draining and removes it. Without `force` the request "
                    "waits up to 30 seconds for the message in hand. Its unhandled messages are "
                    "marked failed. Unknown query parameters give 400."
                ),
                "parameters": [
                    {
                        "name": "force",
                        "in": "query",
                        "description": "Do not wait for the message in hand. Also accepts `1`/`0` and `yes`/`no`, in any letter case.",
                        "schema": {"type": "boolean", "default": False},
                    }
                ],
                "responses": _responses(
                    "delete",
                    ("200", "The agent is removed", _json_content(_schema("AgentRemoved"))),
                    _error_response(_BAD_REQUEST, InvalidRequest),
                    not_found,
                ),
            },
        },
        f"{API_PREFIX}/agents/{{agent_id}}/stop": {
            "parameters": agent_ref,
            "post": {
                "operationId": "stopAgent",
                "tags": ["agents"],
                "summary": "Stop an agent",
                "description": (
                    "Returns at once with `stopping`. The agent finishes the message in hand, and "
                    "then its status becomes `stopped`. For an agent that is not running, returns "
                    "its stored status. The body is optional. It is read as JSON whatever its "
                    "Content-Type, and an empty body or `null` means `{}`."
                ),
                "requestBody": {
                    "required": False,
                    "content": _json_content({"anyOf": [_schema("StopRequest"), {"type": "null"}]}),
                },
                "responses": _responses(
                    "post",
                    ("200", "The stop has started, or the agent was not running", _json_content(_schema("AgentState"))),
                    _error_response(_BAD_REQUEST, InvalidRequest),
                    not_found,
                    reads_body=True,
                ),
            },
        },
        f"{API_PREFIX}/agents/{{agent_id}}/start": {
            "parameters": agent_ref,
            "post": {
                "operationId": "startAgent",
                "tags": ["agents"],
                "summary": "Start a stopped or failed agent",
                "description": (
                    "Starts the agent with its stored module and config and queues its stored "
                    "messages again. A running agent is left as it is. Takes no fields: the body "
                    "may be empty or any JSON value, but invalid JSON gives 400."
                ),
                "requestBody": {"required": False, "content": _json_content({})},
                "responses": _responses(
                    "post",
                    (
                        "200",
                        "The agent is running",
                        _json_content(
                            _object(
                                {
                                    "agent_id": _schema("AgentId"),
                                    "status": {"type": "string", "enum": ["running", "starting"]},
                                }
                            )
                        ),
                    ),
                    _error_response("Invalid JSON in the body", InvalidRequest),
                    not_found,
                    _error_response("The agent could not start, or an unexpected error", DeploymentFailed, InternalError),
                    reads_body=True,
                ),
            },
        },
    }


def _message_operations() -> dict[str, Any]:
    return {
        f"{API_PREFIX}/messages": {
            "post": {
                "operationId": "sendMessage",
                "tags": ["messages"],
                "summary": "Send a message to an agent",
                "description": (
                    "Returns once the message is committed to the store and queued in the agent's "
                    "inbox. The body is read as JSON whatever its Content-Type, and NaN and Infinity "
                    "are rejected."
                ),
                "requestBody": {"required": True, "content": _json_content(_schema("MessageRequest"))},
                "responses": _responses(
                    "post",
                    ("200", "The message is queued", _json_content(_schema("SendReceipt"))),
                    _error_response(_BAD_REQUEST, InvalidRequest),
                    _error_response("No live agent has that id or name", AgentNotFound),
                    _error_response(
                        "Rate limit exceeded (Retry-After), or the agent's inbox is full",
                        RateLimited,
                        ResourceLimitExceeded,
                    ),
                    _error_response(
                        "The agent is not running, or an unexpected error", MessageDeliveryFailed, InternalError
                    ),
                    reads_body=True,
                ),
            },
            "get": {
                "operationId": "listMessages",
                "tags": ["messages"],
                "summary": "Query stored messages",
                "description": (
                    "Stored messages, oldest first. Filters combine with AND. An agent name matches "
                    "only while the agent is live. Unknown query parameters give 400."
                ),
                "parameters": [
                    {
                        "name": "conversation_id",
                        "in": "query",
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ENVELOPE_FIELD},
                    },
                    {"name": "sender", "in": "query", "schema": _schema("Identity")},
                    {"name": "receiver", "in": "query", "schema": _schema("Identity")},
                    {
                        "name": "since",
                        "in": "query",
                        "description": "Messages at or after this RFC 3339 time, which needs `Z` or an offset (write `+` as `%2B`).",
                        "schema": {"type": "string", "format": "date-time"},
                    },
                    _ref("parameters", "MessageLimit"),
                    _ref("parameters", "Offset"),
                ],
                "responses": _responses(
                    "get",
                    ("200", "A page of messages", _json_content(_schema("MessageList"))),
                    _error_response(_BAD_REQUEST, InvalidRequest),
                ),
            },
        },
    }


def _metrics_operations() -> dict[str, Any]:
    return {
        f"{API_PREFIX}/metrics/system": {
            "get": {
                "operationId": "getSystemMetrics",
                "tags": ["metrics"],
                "summary": "System metrics",
                "description": "Falls under the `metrics` rate limit. Unknown query parameters give 400.",
                "parameters": [_ref("parameters", "Period")],
                "responses": _responses(
                    "get",
                    ("200", "Current figures, and samples with `period`", _json_content(_schema("SystemMetrics"))),
                    _error_response(_BAD_REQUEST, InvalidRequest),
                ),
            },
        },
        f"{API_PREFIX}/metrics/agents/{{agent_id}}": {
            "parameters": [_ref("parameters", "AgentRef")],
            "get": {
                "operationId": "getAgentMetrics",
                "tags": ["metrics"],
                "summary": "Metrics of one agent",
                "description": "Falls under the `metrics` rate limit. Unknown query parameters give 400.",
                "parameters": [
                    _ref("parameters", "Period"),
                    {
                        "name": "type",
                        "in": "query",
                        "description": "Which fields to return.",
                        "schema": {"type": "string", "enum": ["all", "performance", "resources"], "default": "all"},
                    },
                ],
                "responses": _responses(
                    "get",
                    ("200", "The agent's figures", _json_content(_schema("AgentMetrics"))),
                    _error_response(_BAD_REQUEST, InvalidRequest),
                    _error_response("No live agent has that id or name", AgentNotFound),
                ),
            },
        },
        "/metrics": {
            "get": {
                "operationId": "getPrometheusMetrics",
                "tags": ["metrics"],
                "summary": "Prometheus exposition",
                "description": (
                    "Counters and gauges in the Prometheus text format (the Content-Type carries "
                    "the format version, such as `text/plain; version=1.0.0; charset=utf-8`). "
                    "Prometheus sends the token as `Authorization: Bearer`. Falls under the "
                    "`metrics` rate limit."
                ),
                "responses": _responses(
                    "get",
                    (
                        "200",
                        "The metrics",
                        {
                            "text/plain": {
                                "schema": {"type": "string"},
                                "example": (
                                    "# HELP caxton_messages_processed_total Messages handled successfully\n"
                                    "# TYPE caxton_messages_processed_total counter\n"
                                    'caxton_messages_processed_total{agent_id="agent_975fdc360f7d07bf"} 1.0\n'
                                ),
                            }
                        },
                    ),
                ),
            },
        },
    }


def _meta_operations() -> dict[str, Any]:
    return {
        f"{API_PREFIX}/health": {
            "get": {
                "operationId": "getHealth",
                "tags": ["meta"],
                "summary": "Liveness check",
                "description": "Needs no token, is never rate-limited and carries no rate-limit headers.",
                "security": [],
                "responses": {
                    "200": {"description": "The server is up", "content": _json_content(_schema("Health"))},
                    "500": _error_response("Unexpected server error", InternalError, limited=False)[1],
                },
            },
        },
        f"{API_PREFIX}/openapi.json": {
            "get": {
                "operationId": "getOpenApiDocument",
                "tags": ["meta"],
                "summary": "This OpenAPI document",
                "responses": _responses(
                    "get",
                    ("200", "The OpenAPI 3.1 document", _json_content({"type": "object", "required": ["openapi", "paths"]})),
                ),
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# WebSocket and the document
# ---------------------------------------------------------------------------------------------

EVENT_TYPES = (
    "agent.deployed",
    "agent.started",
    "agent.stopped",
    "agent.failed",
    "agent.removed",
    "agent.restarted",
    "deployment.started",
    "deployment.completed",
    "deployment.failed",
    "message.sent",
    "message.delivered",
    "message.failed",
    "system.alert",
)


def _websocket() -> dict[str, Any]:
    pattern = {"type": "string", "pattern": r"^[a-z*?][a-z0-9_.*?-]{0,63}$"}
    return {
        "path": "/ws",
        "authentication": (
            "The X-Caxton-Token header, or the `token` query parameter for browsers. A missing or "
            "wrong token gets 401 with the error envelope before the upgrade, and a server that "
            "is shutting down answers 503."
        ),
        "close": "The server closes every socket with code 1001 on shutdown.",
        "maxFrameBytes": MAX_FRAME_BYTES,
        "clientFrames": {
            "subscribe": _object(
                {
                    "type": {"const": "subscribe"},
                    "agents": {
                        "type": "array",
                        "maxItems": MAX_SUBSCRIPTION_AGENTS,
                        "items": {"type": "string", "minLength": 1},
                        "description": "Agent ids, agent names or client identities. Without it, events of every subject match.",
                    },
                    "events": {
                        "type": "array",
                        "minItems": 1,
                        "items": pattern,
                        "default": ["*"],
                        "description": "Event type patterns with `*` and `?`, such as `message.*`.",
                    },
                },
                required=("type",),
                description=f"At most {MAX_SUBSCRIPTIONS} subscriptions per connection.",
            ),
            "unsubscribe": _object(
                {
                    "type": {"const": "unsubscribe"},
                    "subscription_id": {"type": "string", "description": "Absent means every subscription."},
                },
                required=("type",),
            ),
            "ping": {
                "type": "object",
                "properties": {"type": {"const": "ping"}, "data": {"description": "Echoed in the pong."}},
                "required": ["type"],
            },
        },
        "serverFrames": {
            "subscribed": _object(
                {
                    "type": {"const": "subscribed"},
                    "subscription_id": {"type": "string", "pattern": r"^sub_[0-9a-f]{16}$"},
                    "agents": _nullable({"type": "array", "items": {"type": "string"}}),
                    "events": {"type": "array", "items": {"type": "string"}},
                },
                description="The reply to subscribe, with agent names resolved to ids.",
            ),
            "unsubscribed": _object(
                {
                    "type": {"const": "unsubscribed"},
                    "subscription_ids": {"type": "array", "items": {"type": "string"}},
                }
            ),
            "pong": _object({"type": {"const": "pong"}, "data": {}}),
            "error": _object(
                {
                    "type": {"const": "error"},
                    "error": _object(
                        {"code": {"const": "INVALID_REQUEST"}, "message": {"type": "string"}}
                    ),
                },
                description="The reply to a frame that is not valid JSON, too large, or invalid. Nothing changes.",
            ),
            "overflow": _object(
                {
                    "type": {"const": "overflow"},
                    "timestamp": {"type": "string"},
                    "dropped": {"type": "integer", "minimum": 1},
                    "message": {"type": "string"},
                },
                description="Sent before queued events when events were dropped because the client read too slowly.",
            ),
            "event": {
                "type": "object",
                "description": (
                    "An event matching a subscription. Agent events carry `agent_id`, "
                    "`deployment.*` events carry `deployment_id`, and `message.*` events carry "
                    "`message_id`, `from`, `to`, `performative`, `conversation_id`, "
                    "`in_reply_to` and `content`. Failures carry `error`. `system.alert` carries "
                    "`agent_id`, `alert` (`queue` or `memory`) and `state` (`raised` or `cleared`)."
                ),
                "properties": {
                    "type": {"type": "string", "examples": list(EVENT_TYPES)},
                    "timestamp": {"type": "string"},
                    "message": {"type": "string"},
                },
                "required": ["type", "timestamp", "message"],
            },
        },
    }


DESCRIPTION = """\
Caxton hosts WebAssembly agents and routes FIPA-ACL messages between them.

**Authentication.** Every route except `GET /api/v1/health` needs a token, in the
`X-Caxton-Token` header or as `Authorization: Bearer <token>` (the form Prometheus sends).
A missing or wrong token gives 401 UNAUTHORIZED. A token with the `reader` role may use only
GET, HEAD and OPTIONS, and other methods give 403 FORBIDDEN.

**Rate limits.** Each token has four budgets: `agent_operations` (POST, PUT, PATCH and DELETE
under /agents, default 10/min), `messages` (POST under /messages, default 1000/s), `metrics`
(everything under /metrics and /api/v1/metrics, default 100/min) and `default` (every other
authenticated request, 1000/s). Every response to an authenticated request carries
`X-RateLimit-Limit` and `X-RateLimit-Remaining`, except 401 and 403. Over the limit the answer
is 429 RATE_LIMITED with `Retry-After` in seconds.

**Errors** use the envelope `{"error": {"code", "message", "trace_id"}}`. Besides the
statuses listed per operation, an unknown path gives 404 NOT_FOUND and a known path with
another method gives 405 METHOD_NOT_ALLOWED.

**Conventions.** JSON bodies are read as JSON whatever their Content-Type, and NaN and
Infinity are rejected. Unknown JSON fields, and unknown query parameters on the routes whose
description mentions it, give 400 INVALID_REQUEST naming them. Every GET route also serves
HEAD, and every route serves OPTIONS without a token.

**WebSocket events at `/ws`** (described as data in `x-websocket`). Authenticate with the
`X-Caxton-Token` header or the `token` query parameter. Client frames are JSON objects:
`{"type": "subscribe", "agents": [...], "events": ["message.*"]}` gets a `subscribed` frame
with its `subscription_id`; `{"type": "unsubscribe", "subscription_id": ...}` gets
`unsubscribed` (without an id it removes every subscription); `{"type": "ping", "data": ...}`
gets `{"type": "pong", "data": ...}`. An invalid frame gets
`{"type": "error", "error": {"code": "INVALID_REQUEST", "message": ...}}`. The server then
sends each matching event as `{"type", "timestamp", "message", ...fields}`, and an
`overflow` frame when it had to drop events for a slow reader.
"""


def build_document() -> dict[str, Any]:
    """Build the OpenAPI 3.1 document as a JSON-ready dict."""
    paths: dict[str, Any] = {}
    for part in (_meta_operations(), _agent_operations(), _message_operations(), _metrics_operations()):
        paths.update(part)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Caxton REST API",
            "version": __version__,
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "meta", "description": "Health and this document."},
            {"name": "agents", "description": "Deploy, inspect, update, stop, start and remove agents."},
            {"name": "messages", "description": "Send FIPA-ACL messages and query the stored history."},
            {"name": "metrics", "description": "JSON metrics and the Prometheus exposition."},
        ],
        "security": [{"tokenHeader": []}, {"bearerToken": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "tokenHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Caxton-Token",
                    "description": "The admin token, or a token from `auth.tokens` with the admin or reader role.",
                },
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The same token as `Authorization: Bearer`, accepted on every route. Prometheus uses this form.",
                },
            },
            "schemas": _all_schemas(),
            "parameters": _parameters(),
            "headers": _headers(),
            "responses": {name: response for name, (_, response) in SHARED_RESPONSES.items()},
        },
        "x-websocket": _websocket(),
    }


OPENAPI_DOCUMENT: dict[str, Any] = build_document()
