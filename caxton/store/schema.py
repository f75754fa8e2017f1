"""Schema and migrations, applied in order inside one transaction at start."""

from __future__ import annotations

import logging
import sqlite3

logger = logging.getLogger(__name__)

# Each entry upgrades the schema by one version; never edit an entry that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE modules (
        sha256      TEXT PRIMARY KEY,
        bytes       BLOB NOT NULL,
        size        INTEGER NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE agents (
        agent_id            TEXT PRIMARY KEY,
        name                TEXT NOT NULL,
        config              TEXT NOT NULL,
        module_sha256       TEXT NOT NULL REFERENCES modules (sha256),
        kind                TEXT NOT NULL,
        desired_state       TEXT NOT NULL,
        status              TEXT NOT NULL,
        deployed_at         TEXT NOT NULL,
        removed_at          TEXT,
        last_error          TEXT,
        messages_processed  INTEGER NOT NULL DEFAULT 0,
        messages_failed     INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX agents_live_name ON agents (name) WHERE removed_at IS NULL;
    CREATE TABLE messages (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id       TEXT NOT NULL UNIQUE,
        performative     TEXT NOT NULL,
        sender           TEXT NOT NULL,
        receiver         TEXT NOT NULL,
        receiver_kind    TEXT NOT NULL,
        conversation_id  TEXT NOT NULL,
        reply_with       TEXT,
        in_reply_to      TEXT,
        reply_by         TEXT,
        protocol         TEXT,
        language         TEXT,
        ontology         TEXT,
        content          TEXT NOT NULL,
        timestamp        TEXT NOT NULL,
        state            TEXT NOT NULL,
        error            TEXT,
        handled_at       TEXT
    );
    CREATE INDEX messages_conversation ON messages (conversation_id, seq);
    CREATE INDEX messages_sender ON messages (sender, seq);
    CREATE INDEX messages_receiver ON messages (receiver, seq);
    CREATE INDEX messages_time ON messages (timestamp);
    CREATE INDEX messages_queued ON messages (receiver, seq) WHERE state = 'queued';
    CREATE TABLE agent_events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        agent_id   TEXT NOT NULL,
        kind       TEXT NOT NULL,
        detail     TEXT,
        at         TEXT NOT NULL
    );
    CREATE INDEX agent_events_agent ON agent_events (agent_id, id);
    """,
    """
    CREATE TABLE metric_samples (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        subject  TEXT NOT NULL,
        at       TEXT NOT NULL,
        data     TEXT NOT NULL
    );
    CREATE INDEX metric_samples_subject ON metric_samples (subject, at);
    CREATE INDEX metric_samples_at ON metric_samples (at);
    """,
    """
    CREATE TABLE deployments (
        deployment_id  TEXT PRIMARY KEY,
        agent_id       TEXT NOT NULL,
        strategy       TEXT NOT NULL,
        status         TEXT NOT NULL,
        from_version   TEXT NOT NULL,
        to_version     TEXT NOT NULL,
        from_sha256    TEXT NOT NULL,
        to_sha256      TEXT NOT NULL,
        config         TEXT NOT NULL,
        error          TEXT,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL
    );
    CREATE INDEX deployments_agent ON deployments (agent_id, created_at);
    """,
    """
    ALTER TABLE agents ADD COLUMN cpu_seconds REAL NOT NULL DEFAULT 0;
    ALTER TABLE agents ADD COLUMN fuel_consumed INTEGER NOT NULL DEFAULT 0;
    """,
)


def migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema to the newest version; refuse a file written by a newer Caxton."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"store schema version {version} is newer than this Caxton supports "
            f"({len(MIGRATIONS)}); upgrade Caxton or use another data folder"
        )
    for target in range(version + 1, len(MIGRATIONS) + 1):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target - 1].split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version={target}")
            connection.execute("COMMIT")
        except sqlite3.Error:
            connection.execute("ROLLBACK")
            raise
        logger.info("store schema migrated to version %d", target)
