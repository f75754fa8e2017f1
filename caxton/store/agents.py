"""Queries on agents and their modules. Plain functions of a connection, run by `Database`."""

from __future__ import annotations

import sqlite3
from typing import Any

import attrs


@attrs.frozen
class AgentRecord:
    agent_id: str
    name: str
    config: str
    module_sha256: str
    kind: str
    desired_state: str
    status: str
    deployed_at: str
    removed_at: str | None
    last_error: str | None
    messages_processed: int
    messages_failed: int
    cpu_seconds: float = 0.0
    fuel_consumed: int = 0


_COLUMNS = ", ".join(field.name for field in attrs.fields(AgentRecord))


def _record(row: sqlite3.Row | None) -> AgentRecord | None:
    return AgentRecord(**dict(row)) if row is not None else None


def insert_module(connection: sqlite3.Connection, sha256: str, data: bytes, created_at: str) -> None:
    connection.execute(
        "INSERT OR IGNORE INTO modules (sha256, bytes, size, created_at) VALUES (?, ?, ?, ?)",
        (sha256, data, len(data), created_at),
    )


def load_module(connection: sqlite3.Connection, sha256: str) -> bytes:
    row = connection.execute("SELECT bytes FROM modules WHERE sha256 = ?", (sha256,)).fetchone()
    if row is None:
        raise LookupError(f"module {sha256} is missing from the store")
    return bytes(row["bytes"])


def insert_agent(connection: sqlite3.Connection, record: AgentRecord) -> None:
    """Insert a new agent; raises sqlite3.IntegrityError when a live agent has its name."""
    values = attrs.astuple(record)
    placeholders = ", ".join("?" for _ in values)
    connection.execute(f"INSERT INTO agents ({_COLUMNS}) VALUES ({placeholders})", values)


def get_agent(connection: sqlite3.Connection, agent_id: str) -> AgentRecord | None:
    row = connection.execute(
        f"SELECT {_COLUMNS} FROM agents WHERE agent_id = ? AND removed_at IS NULL", (agent_id,)
    ).fetchone()
    return _record(row)


def find_by_name(connection: sqlite3.Connection, name: str) -> AgentRecord | None:
    row = connection.execute(
        f"SELECT {_COLUMNS} FROM agents WHERE name = ? AND removed_at IS NULL", (name,)
    ).fetchone()
    return _record(row)


def list_agents(
    connection: sqlite3.Connection, *, status: str | None, limit: int, offset: int
) -> tuple[list[AgentRecord], int]:
    where, params = "removed_at IS NULL", []
    if status is not None:
        where += " AND status = ?"
        params.append(status)
    total = connection.execute(f"SELECT COUNT(*) FROM agents WHERE {where}", params).fetchone()[0]
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM agents WHERE {where} ORDER BY deployed_at, agent_id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [AgentRecord(**dict(row)) for row in rows], total


def live_agents(connection: sqlite3.Connection) -> list[AgentRecord]:
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM agents WHERE removed_at IS NULL ORDER BY deployed_at"
    ).fetchall()
    return [AgentRecord(**dict(row)) for row in rows]


def update_agent(connection: sqlite3.Connection, agent_id: str, **changes: Any) -> None:
    allowed = {"status", "desired_state", "last_error", "removed_at", "config", "module_sha256", "kind"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot update agent columns {sorted(unknown)}")
    assignments = ", ".join(f"{column} = ?" for column in changes)
    connection.execute(
        f"UPDATE agents SET {assignments} WHERE agent_id = ?", [*changes.values(), agent_id]
    )


def add_counts(
    connection: sqlite3.Connection, agent_id: str, processed: int, failed: int, cpu_seconds: float = 0.0, fuel: int = 0
) -> None:
    """Add a handled batch to the agent's stored totals."""
    connection.execute(
        "UPDATE agents SET messages_processed = messages_processed + ?, messages_failed = messages_failed + ?, "
        "cpu_seconds = cpu_seconds + ?, fuel_consumed = fuel_consumed + ? WHERE agent_id = ?",
        (processed, failed, cpu_seconds, fuel, agent_id),
    )


def record_event(connection: sqlite3.Connection, agent_id: str, kind: str, detail: str | None, at: str) -> None:
    connection.execute(
        "INSERT INTO agent_events (agent_id, kind, detail, at) VALUES (?, ?, ?, ?)",
        (agent_id, kind, detail, at),
    )


def recent_events(connection: sqlite3.Connection, agent_id: str, limit: int) -> list[dict[str, Any]]:
    """Return the agent's latest lifecycle events (deployed, restarted, failed, ...), newest first."""
    rows = connection.execute(
        "SELECT kind, detail, at FROM agent_events WHERE agent_id = ? ORDER BY id DESC LIMIT ?", (agent_id, limit)
    ).fetchall()
    return [{"event": row["kind"], "detail": row["detail"], "at": row["at"]} for row in rows]
