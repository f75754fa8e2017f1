"""FIPA-ACL messages: the value type, its JSON form and validation at every boundary.

Pure functions without I/O. `parse_client_message` validates what an outside client posts;
`parse_agent_message` validates what an agent hands to `send_message`. Both raise
`InvalidRequest` naming the field, so the caller can answer 400 or a negative ABI code.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any

import attrs

from caxton.domain.errors import InvalidRequest
from caxton.domain.timefmt import parse_time


class Performative(enum.Enum):
    """The 22 communicative acts of FIPA ACL (FIPA SC00037J), in their hyphenated form."""

    ACCEPT_PROPOSAL = "accept-proposal"
    AGREE = "agree"
    CANCEL = "cancel"
    CFP = "cfp"
    CONFIRM = "confirm"
    DISCONFIRM = "disconfirm"
    FAILURE = "failure"
    INFORM = "inform"
    INFORM_IF = "inform-if"
    INFORM_REF = "inform-ref"
    NOT_UNDERSTOOD = "not-understood"
    PROPAGATE = "propagate"
    PROPOSE = "propose"
    PROXY = "proxy"
    QUERY_IF = "query-if"
    QUERY_REF = "query-ref"
    REFUSE = "refuse"
    REJECT_PROPOSAL = "reject-proposal"
    REQUEST = "request"
    REQUEST_WHEN = "request-when"
    REQUEST_WHENEVER = "request-whenever"
    SUBSCRIBE = "subscribe"

    @classmethod
    def parse(cls, text: object) -> Performative:
        """Accept any case and `_` for `-` (`ACCEPT_PROPOSAL`); raise ValueError otherwise."""
        if not isinstance(text, str):
            raise ValueError(f"expected a string, got {type(text).__name__}")
        try:
            return cls(text.strip().lower().replace("_", "-"))
        except ValueError:
            raise ValueError(f"unknown performative {text!r}") from None


# Identities are ids or names: printable, no spaces, short enough to index and log.
_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
# Nesting allowed in any JSON the server accepts: deep enough for real documents, shallow
# enough that storing, serving and re-parsing it never reaches Python's recursion limit.
MAX_JSON_DEPTH = 64
# Free-text envelope fields: bounded so one message cannot bloat every index.
_MAX_ENVELOPE_FIELD = 256

_CLIENT_FIELDS = frozenset(
    {
        "message_id", "performative", "sender", "receiver", "content", "conversation_id",
        "reply_with", "in_reply_to", "reply_by", "protocol", "language", "ontology", "timestamp",
    }
)
_OPTIONAL_TEXT_FIELDS = (
    "conversation_id", "reply_with", "in_reply_to", "protocol", "language", "ontology",
)


@attrs.frozen
class Message:
    """One stored FIPA-ACL message. `receiver` is a resolved agent id or a client identity."""

    message_id: str
    performative: Performative
    sender: str
    receiver: str
    conversation_id: str
    timestamp: str
    content: Any = None
    reply_with: str | None = None
    in_reply_to: str | None = None
    reply_by: str | None = None
    protocol: str | None = None
    language: str | None = None
    ontology: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the wire form: every field, `None` for absent ones."""
        return {
            "message_id": self.message_id,
            "performative": self.performative.value,
            "sender": self.sender,
            "receiver": self.receiver,
            "content": self.content,
            "conversation_id": self.conversation_id,
            "reply_with": self.reply_with,
            "in_reply_to": self.in_reply_to,
            "reply_by": self.reply_by,
            "protocol": self.protocol,
            "language": self.language,
            "ontology": self.ontology,
            "timestamp": self.timestamp,
        }

    def encode(self) -> bytes:
        """Return the compact UTF-8 JSON that agents receive."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


@attrs.frozen
class Draft:
    """A validated message before the server assigns its id, time and resolved receiver."""

    performative: Performative
    receiver: str | None
    sender: str | None = None
    content: Any = None
    conversation_id: str | None = None
    reply_with: str | None = None
    in_reply_to: str | None = None
    reply_by: str | None = None
    protocol: str | None = None
    language: str | None = None
    ontology: str | None = None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(data: bytes | str) -> object:
    """Parse JSON as RFC 8259 defines it, nested at most MAX_JSON_DEPTH levels.

    NaN, Infinity and repeated keys are rejected. Raises ValueError (json.JSONDecodeError and
    UnicodeDecodeError are subclasses) naming the problem.
    """
    try:
        value = json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not _within_depth(value):
        raise ValueError(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """Build an object, rejecting a repeated key instead of silently keeping the last value."""
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:64]!r} in a JSON object")
        result[key] = value
    return result


def _within_depth(value: object) -> bool:
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return False
        pending.extend((child, depth + 1) for child in children)
    return True


def check_identity(field: str, value: object) -> str:
    """Return `value` when it is a valid agent id, agent name or client identity."""
    if not isinstance(value, str):
        raise InvalidRequest(field, f"expected a string, got {type(value).__name__}")
    if not _IDENTITY.match(value):
        raise InvalidRequest(
            field,
            f"invalid identity {value[:64]!r}: use 1 to 128 letters, digits or ._:@/- "
            "starting with a letter or digit",
        )
    return value


def _optional_text(field: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(field, f"expected a string, got {type(value).__name__}")
    if not value or len(value) > _MAX_ENVELOPE_FIELD:
        raise InvalidRequest(field, f"must be 1 to {_MAX_ENVELOPE_FIELD} characters")
    return value


def _parse_draft(body: object, *, receiver_required: bool, max_bytes: int, size: int) -> Draft:
    if not isinstance(body, dict):
        raise InvalidRequest("body", f"expected a JSON object, got {_json_kind(body)}")
    if size > max_bytes:
        raise InvalidRequest("body", f"message is {size} bytes, over the {max_bytes}-byte limit")
    unknown = sorted(set(body) - _CLIENT_FIELDS)
    if unknown:
        raise InvalidRequest(unknown[0], "unknown message field")
    if "performative" not in body:
        raise InvalidRequest("performative", "missing; use a FIPA performative such as request")
    try:
        performative = Performative.parse(body["performative"])
    except ValueError as exc:
        raise InvalidRequest("performative", str(exc)) from None

    receiver = body.get("receiver")
    if receiver is None:
        if receiver_required:
            raise InvalidRequest("receiver", "missing; name an agent id or agent name")
    else:
        receiver = check_identity("receiver", receiver)
    sender = body.get("sender")
    if sender is not None:
        sender = check_identity("sender", sender)

    reply_by = _optional_text("reply_by", body.get("reply_by"))
    if reply_by is not None:
        try:
            parse_time(reply_by)
        except ValueError as exc:
            raise InvalidRequest("reply_by", str(exc)) from None
    texts = {name: _optional_text(name, body.get(name)) for name in _OPTIONAL_TEXT_FIELDS}
    return Draft(
        performative=performative,
        receiver=receiver,
        sender=sender,
        content=body.get("content"),
        reply_by=reply_by,
        **texts,
    )


def parse_client_message(body: object, *, max_bytes: int, size: int) -> Draft:
    """Validate a message posted by an outside client; `receiver` is required.

    `message_id` and `timestamp` in the body are ignored: the server assigns both.
    """
    return _parse_draft(body, receiver_required=True, max_bytes=max_bytes, size=size)


def parse_agent_message(raw: bytes, *, max_bytes: int, default_performative: Performative | None = None) -> Draft:
    """Validate one outgoing message from an agent; a missing `receiver` means a reply.

    `default_performative` fills a missing performative (WASI command agents reply `inform`).
    Raises InvalidRequest on invalid UTF-8 or JSON, a non-object, a bad field or over-size.
    """
    if len(raw) > max_bytes:
        raise InvalidRequest("message", f"{len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        body = loads_strict(raw)
    except ValueError as exc:
        raise InvalidRequest("message", f"invalid JSON: {exc}") from None
    if default_performative is not None and isinstance(body, dict) and "performative" not in body:
        body["performative"] = default_performative.value
    if isinstance(body, dict):
        # The host fills these; an agent cannot forge them.
        for field in ("sender", "message_id", "timestamp"):
            body.pop(field, None)
    return _parse_draft(body, receiver_required=False, max_bytes=max_bytes, size=len(raw))


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    return type(value).__name__
