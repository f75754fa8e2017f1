"""Queries on messages: insert, delivery state, recovery of queued work and history."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

import attrs

from caxton.domain.messages import Message, Performative

QUEUED = "queued"
HANDLED = "handled"
FAILED = "failed"
# Addressed to an outside client: kept in history and published, nothing to run.
DELIVERED = "delivered"

_FIELDS = (
    "message_id", "performative", "sender", "receiver", "conversation_id", "reply_with",
    "in_reply_to", "reply_by", "protocol", "language", "ontology", "content", "timestamp",
)


@attrs.frozen
class StoredMessage:
    seq: int
    message: Message
    state: str
    error: str | None
    handled_at: str | None

    def to_json(self) -> dict:
        body = self.message.to_json()
        body.update(status=self.state, error=self.error, handled_at=self.handled_at)
        return body


@attrs.frozen
class HistoryQuery:
    conversation_id: str | None = None
    sender: str | None = None
    receiver: str | None = None
    since: str | None = None
    limit: int = 100
    offset: int = 0


def insert(connection: sqlite3.Connection, message: Message, *, receiver_kind: str, state: str) -> int:
    """Insert one message and return its sequence number (the delivery order)."""
    row = message.to_json()
    row["content"] = json.dumps(message.content, separators=(",", ":"), ensure_ascii=False)
    cursor = connection.execute(
        f"INSERT INTO messages ({', '.join(_FIELDS)}, receiver_kind, state) "
        f"VALUES ({', '.join('?' for _ in _FIELDS)}, ?, ?)",
        [row[field] for field in _FIELDS] + [receiver_kind, state],
    )
    return int(cursor.lastrowid)


def mark(connection: sqlite3.Connection, message_id: str, state: str, error: str | None, at: str) -> None:
    connection.execute(
        "UPDATE messages SET state = ?, error = ?, handled_at = ? WHERE message_id = ?",
        (state, error, at, message_id),
    )


def queued_for(connection: sqlite3.Connection, receiver: str) -> list[StoredMessage]:
    """Messages stored for `receiver` and not yet handled, oldest first."""
    rows = connection.execute(
        f"SELECT seq, {', '.join(_FIELDS)}, state, error, handled_at FROM messages "
        "WHERE receiver = ? AND state = ? ORDER BY seq",
        (receiver, QUEUED),
    ).fetchall()
    return [_stored(row) for row in rows]


def history(connection: sqlite3.Connection, query: HistoryQuery) -> tuple[list[StoredMessage], int]:
    clauses, params = [], []
    for column in ("conversation_id", "sender", "receiver"):
        value = getattr(query, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.since is not None:
        clauses.append("timestamp >= ?")
        params.append(query.since)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    total = connection.execute(f"SELECT COUNT(*) FROM messages {where}", params).fetchone()[0]
    rows = connection.execute(
        f"SELECT seq, {', '.join(_FIELDS)}, state, error, handled_at FROM messages {where} "
        "ORDER BY seq LIMIT ? OFFSET ?",
        [*params, query.limit, query.offset],
    ).fetchall()
    return [_stored(row) for row in rows], total


def get(connection: sqlite3.Connection, message_id: str) -> StoredMessage | None:
    row = connection.execute(
        f"SELECT seq, {', '.join(_FIELDS)}, state, error, handled_at FROM messages WHERE message_id = ?",
        (message_id,),
    ).fetchone()
    return _stored(row) if row is not None else None


def client_identities(connection: sqlite3.Connection, agent_ids: Iterable[str]) -> set[str]:
    """Senders that are not agents: the outside clients agents may address by name."""
    known = set(agent_ids)
    rows = connection.execute("SELECT DISTINCT sender FROM messages").fetchall()
    return {row[0] for row in rows if row[0] not in known}


def _stored(row: sqlite3.Row) -> StoredMessage:
    message = Message(
        message_id=row["message_id"],
        performative=Performative(row["performative"]),
        sender=row["sender"],
        receiver=row["receiver"],
        conversation_id=row["conversation_id"],
        timestamp=row["timestamp"],
        content=json.loads(row["content"]),
        reply_with=row["reply_with"],
        in_reply_to=row["in_reply_to"],
        reply_by=row["reply_by"],
        protocol=row["protocol"],
        language=row["language"],
        ontology=row["ontology"],
    )
    return StoredMessage(
        seq=row["seq"], message=message, state=row["state"], error=row["error"], handled_at=row["handled_at"]
    )
