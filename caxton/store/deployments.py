"""Queries on deployments: one row per rollout of a new agent version."""

from __future__ import annotations

import sqlite3
from typing import Any

import attrs


@attrs.frozen
class DeploymentRecord:
    deployment_id: str
    agent_id: str
    strategy: str
    status: str
    from_version: str
    to_version: str
    from_sha256: str
    to_sha256: str
    config: str
    error: str | None
    created_at: str
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment_id": self.deployment_id,
            "agent_id": self.agent_id,
            "strategy": self.strategy,
            "status": self.status,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


_COLUMNS = ", ".join(field.name for field in attrs.fields(DeploymentRecord))


def insert(connection: sqlite3.Connection, record: DeploymentRecord) -> None:
    values = attrs.astuple(record)
    connection.execute(
        f"INSERT INTO deployments ({_COLUMNS}) VALUES ({', '.join('?' for _ in values)})", values
    )


def finish(connection: sqlite3.Connection, deployment_id: str, status: str, error: str | None, at: str) -> None:
    connection.execute(
        "UPDATE deployments SET status = ?, error = ?, updated_at = ? WHERE deployment_id = ?",
        (status, error, at, deployment_id),
    )


def latest_for(connection: sqlite3.Connection, agent_id: str) -> DeploymentRecord | None:
    row = connection.execute(
        f"SELECT {_COLUMNS} FROM deployments WHERE agent_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
        (agent_id,),
    ).fetchone()
    return DeploymentRecord(**dict(row)) if row is not None else None


def get(connection: sqlite3.Connection, deployment_id: str) -> DeploymentRecord | None:
    row = connection.execute(f"SELECT {_COLUMNS} FROM deployments WHERE deployment_id = ?", (deployment_id,)).fetchone()
    return DeploymentRecord(**dict(row)) if row is not None else None


def interrupted(connection: sqlite3.Connection) -> list[DeploymentRecord]:
    """Deployments a previous process left in progress."""
    rows = connection.execute(f"SELECT {_COLUMNS} FROM deployments WHERE status = 'in_progress'").fetchall()
    return [DeploymentRecord(**dict(row)) for row in rows]
