"""Events and the WebSocket subscription protocol, as pure functions without I/O.

A client sends JSON frames `subscribe`, `unsubscribe` and `ping`; `SubscriptionState.handle`
validates one frame, updates the connection's subscriptions and returns the reply frame.
Bad frames produce an `error` frame and change nothing.
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import attrs

from caxton.domain import ids
from caxton.domain.errors import InvalidRequest

# Event names: dotted lower-case words, with `*` and `?` allowed in patterns.
_PATTERN = re.compile(r"^[a-z*?][a-z0-9_.*?-]{0,63}$")
# Subscriptions one connection may hold; each one is matched against every event.
MAX_SUBSCRIPTIONS = 32
# Agents (or client identities) one subscription may name.
MAX_SUBSCRIPTION_AGENTS = 256
MAX_FRAME_BYTES = 64 * 1024


@attrs.frozen
class Event:
    """One event: `type`, `timestamp`, a readable `message` and type-specific fields.

    `subjects` are the agent ids and client identities the event concerns; a subscription
    with an `agents` list sees the event when one of them is listed.
    """

    type: str
    timestamp: str
    message: str
    fields: dict[str, Any] = attrs.field(factory=dict)
    subjects: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "timestamp": self.timestamp, "message": self.message, **self.fields}

    def to_text(self) -> str:
        """Return the compact JSON frame sent to subscribers."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)


@attrs.frozen
class Subscription:
    subscription_id: str
    agents: frozenset[str] | None
    patterns: tuple[str, ...]

    def matches(self, event: Event) -> bool:
        if self.agents is not None and not (self.agents & event.subjects):
            return False
        return any(fnmatch.fnmatchcase(event.type, pattern) for pattern in self.patterns)

    def to_json(self) -> dict[str, Any]:
        return {
            "subscription_id": self.subscription_id,
            "agents": sorted(self.agents) if self.agents is not None else None,
            "events": list(self.patterns),
        }


@attrs.define
class SubscriptionState:
    """The subscriptions of one connection. `resolve` maps an agent name to its id."""

    subscriptions: dict[str, Subscription] = attrs.field(factory=dict)

    def matches(self, event: Event) -> bool:
        return any(subscription.matches(event) for subscription in self.subscriptions.values())

    def handle(self, frame: object, resolve) -> dict[str, Any]:
        """Apply one decoded frame and return the reply frame."""
        try:
            return self._handle(frame, resolve)
        except InvalidRequest as exc:
            return error_frame(exc.code, exc.message)

    def _handle(self, frame: object, resolve) -> dict[str, Any]:
        if not isinstance(frame, dict):
            raise InvalidRequest("frame", "expected a JSON object with a type")
        kind = frame.get("type")
        if kind == "ping":
            return {"type": "pong", "data": frame.get("data")}
        if kind == "subscribe":
            subscription = _parse_subscribe(frame, resolve)
            if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
                raise InvalidRequest("subscribe", f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
            self.subscriptions[subscription.subscription_id] = subscription
            return {"type": "subscribed", **subscription.to_json()}
        if kind == "unsubscribe":
            return self._unsubscribe(frame)
        raise InvalidRequest("type", f"unknown frame type {kind!r}; use subscribe, unsubscribe or ping")

    def _unsubscribe(self, frame: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(frame) - {"type", "subscription_id"})
        if unknown:
            raise InvalidRequest(unknown[0], "unknown field; allowed: type, subscription_id")
        target = frame.get("subscription_id")
        if target is None:
            removed = sorted(self.subscriptions)
            self.subscriptions.clear()
        elif target in self.subscriptions:
            removed = [target]
            del self.subscriptions[target]
        else:
            raise InvalidRequest("subscription_id", f"no subscription {str(target)[:64]!r} on this connection")
        return {"type": "unsubscribed", "subscription_ids": removed}


def _parse_subscribe(frame: dict[str, Any], resolve) -> Subscription:
    unknown = sorted(set(frame) - {"type", "agents", "events"})
    if unknown:
        raise InvalidRequest(unknown[0], "unknown field; allowed: type, agents, events")
    agents = frame.get("agents")
    if agents is not None:
        if not isinstance(agents, list) or not all(isinstance(a, str) and a for a in agents):
            raise InvalidRequest("agents", "expected a list of agent ids, agent names or client ids")
        if len(agents) > MAX_SUBSCRIPTION_AGENTS:
            raise InvalidRequest("agents", f"at most {MAX_SUBSCRIPTION_AGENTS} entries")
        agents = frozenset(resolve(agent) or agent for agent in agents)
    patterns = frame.get("events", ["*"])
    if not isinstance(patterns, list) or not patterns:
        raise InvalidRequest("events", "expected a non-empty list of event patterns such as \"message.*\"")
    for pattern in patterns:
        if not isinstance(pattern, str) or not _PATTERN.match(pattern):
            raise InvalidRequest("events", f"invalid event pattern {str(pattern)[:64]!r}; use names such as agent.failed or message.*")
    return Subscription(subscription_id=ids.new_id("sub"), agents=agents, patterns=tuple(patterns))


def error_frame(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}
