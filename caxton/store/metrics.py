"""Queries on stored metric samples: one JSON sample per subject (system or agent) and time."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

SYSTEM = "system"


def insert_samples(connection: sqlite3.Connection, at: str, samples: dict[str, dict[str, Any]]) -> None:
    connection.executemany(
        "INSERT INTO metric_samples (subject, at, data) VALUES (?, ?, ?)",
        [(subject, at, json.dumps(data, separators=(",", ":"))) for subject, data in samples.items()],
    )


def samples_since(connection: sqlite3.Connection, subject: str, since: str) -> list[dict[str, Any]]:
    rows = connection.execute(
        "SELECT at, data FROM metric_samples WHERE subject = ? AND at >= ? ORDER BY at", (subject, since)
    ).fetchall()
    return [{"timestamp": row["at"], **json.loads(row["data"])} for row in rows]


def sample_before(connection: sqlite3.Connection, subject: str, before: str) -> dict[str, Any] | None:
    """Return the last sample of `subject` taken before `before`, which is still current then."""
    row = connection.execute(
        "SELECT at, data FROM metric_samples WHERE subject = ? AND at < ? ORDER BY at DESC LIMIT 1",
        (subject, before),
    ).fetchone()
    return {"timestamp": row["at"], **json.loads(row["data"])} if row is not None else None


def prune_before(connection: sqlite3.Connection, before: str) -> int:
    """Delete samples older than `before`, except each subject's latest, which still holds."""
    return connection.execute(
        "DELETE FROM metric_samples WHERE at < ? "
        "AND id NOT IN (SELECT MAX(id) FROM metric_samples GROUP BY subject)",
        (before,),
    ).rowcount
