"""The SQLite store on real files: group-committed writes, migrations, agent and message queries."""

from __future__ import annotations

import sqlite3

import attrs
import pytest
import trio

from caxton.domain.messages import Message, Performative
from caxton.store import agents, messages
from caxton.store.db import Database
from caxton.store.messages import DELIVERED, HANDLED, QUEUED, HistoryQuery
from caxton.store.schema import MIGRATIONS, migrate

MODULE_SHA = "ab" * 32
REMOVED_AT = "2024-01-16T00:00:00.000Z"


@pytest.fixture
async def db(nursery, tmp_path) -> Database:
    database = Database(tmp_path / "data" / "caxton.db")
    await nursery.start(database.run)
    return database


def make_agent(agent_id: str = "agent_0000000000000001", name: str = "echo", **fields) -> agents.AgentRecord:
    values = {
        "agent_id": agent_id,
        "name": name,
        "config": '{"name": "%s"}' % name,
        "module_sha256": MODULE_SHA,
        "kind": "reactor",
        "desired_state": "running",
        "status": "running",
        "deployed_at": "2024-01-15T10:30:00.000Z",
        "removed_at": None,
        "last_error": None,
        "messages_processed": 0,
        "messages_failed": 0,
    }
    values.update(fields)
    return agents.AgentRecord(**values)


def make_message(number: int, **fields) -> Message:
    values = {
        "message_id": f"msg_{number:016x}",
        "performative": Performative.REQUEST,
        "sender": "client_001",
        "receiver": "agent_0000000000000001",
        "conversation_id": "conv_1",
        "timestamp": f"2024-01-15T10:30:{number:02d}.000Z",
        "content": {"n": number},
    }
    values.update(fields)
    return Message(**values)


async def add_module(db: Database, sha: str = MODULE_SHA, data: bytes = b"\0asm\1\0\0\0") -> None:
    await db.write(lambda c: agents.insert_module(c, sha, data, "2024-01-15T10:30:00.000Z"))


async def add_agent(db: Database, record: agents.AgentRecord) -> None:
    await db.write(lambda c: agents.insert_agent(c, record))


async def add_message(db: Database, message: Message, state: str = QUEUED, kind: str = "agent") -> int:
    return await db.write(lambda c: messages.insert(c, message, receiver_kind=kind, state=state))


def count_rows(connection: sqlite3.Connection, table: str) -> int:
    return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


async def test_database_creates_folder_and_file(db, tmp_path):
    assert (tmp_path / "data" / "caxton.db").is_file()


async def test_database_uses_wal(db):
    mode = await db.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])

    assert mode == "wal"


async def test_database_schema_version(db):
    version = await db.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])

    assert version == len(MIGRATIONS)


async def test_write_returns_result(db):
    seq = await add_message(db, make_message(1))

    assert seq == 1


async def test_write_visible_to_read(db):
    await add_message(db, make_message(1))

    stored = await db.read(lambda c: messages.get(c, "msg_0000000000000001"))

    assert stored.message == make_message(1)


async def test_read_sees_commits(db):
    await add_module(db)

    assert await db.read(lambda c: count_rows(c, "modules")) == 1


async def test_write_error_reraised(db):
    with pytest.raises(ValueError, match="cannot update agent columns"):
        await db.write(lambda c: agents.update_agent(c, "agent_x", name="renamed"))


async def test_failed_write_rolled_back(db):
    def insert_then_fail(connection: sqlite3.Connection) -> None:
        agents.insert_module(connection, "cd" * 32, b"bytes", "2024-01-15T10:30:00.000Z")
        raise RuntimeError("operation failed after its insert")

    with pytest.raises(RuntimeError):
        await db.write(insert_then_fail)

    assert await db.read(lambda c: count_rows(c, "modules")) == 0


async def test_concurrent_writes_all_commit(db):
    failures: list[BaseException] = []

    async def failing_write() -> None:
        try:
            await db.write(lambda c: c.execute("INSERT INTO no_such_table VALUES (1)"))
        except sqlite3.OperationalError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for number in range(1, 41):
            nursery.start_soon(add_message, db, make_message(number))
        nursery.start_soon(failing_write)

    assert await db.read(lambda c: count_rows(c, "messages")) == 40
    assert len(failures) == 1


async def test_data_survives_reopen(tmp_path):
    path = tmp_path / "caxton.db"
    first = Database(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        await add_message(first, make_message(1))
        nursery.cancel_scope.cancel()

    second = Database(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        stored = await second.read(lambda c: messages.get(c, "msg_0000000000000001"))
        nursery.cancel_scope.cancel()

    assert stored.message.content == {"n": 1}


async def test_newer_schema_rejected(tmp_path):
    path = tmp_path / "caxton.db"
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    connection.close()

    with pytest.raises(RuntimeError, match="newer than this Caxton supports"):
        await Database(path).run()


def test_migrate_twice_keeps_version(tmp_path):
    connection = sqlite3.connect(tmp_path / "caxton.db", isolation_level=None)
    migrate(connection)
    migrate(connection)

    assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    connection.close()


async def test_module_round_trip(db):
    await add_module(db, data=b"module bytes")

    assert await db.read(lambda c: agents.load_module(c, MODULE_SHA)) == b"module bytes"


async def test_module_insert_ignores_duplicate(db):
    await add_module(db, data=b"first")
    await add_module(db, data=b"second")

    assert await db.read(lambda c: agents.load_module(c, MODULE_SHA)) == b"first"


async def test_module_missing_raises(db):
    with pytest.raises(LookupError, match="is missing from the store"):
        await db.read(lambda c: agents.load_module(c, "ef" * 32))


async def test_agent_round_trip(db):
    await add_module(db)
    record = make_agent(last_error="none yet")
    await add_agent(db, record)

    assert await db.read(lambda c: agents.get_agent(c, record.agent_id)) == record


async def test_agent_find_by_name(db):
    await add_module(db)
    await add_agent(db, make_agent())

    found = await db.read(lambda c: agents.find_by_name(c, "echo"))

    assert found.agent_id == "agent_0000000000000001"


async def test_agent_unknown_module_rejected(db):
    with pytest.raises(sqlite3.IntegrityError):
        await add_agent(db, make_agent())


async def test_agent_duplicate_live_name(db):
    await add_module(db)
    await add_agent(db, make_agent())

    with pytest.raises(sqlite3.IntegrityError):
        await add_agent(db, make_agent(agent_id="agent_0000000000000002"))


async def test_agent_name_reused_after_removal(db):
    await add_module(db)
    await add_agent(db, make_agent())
    await db.write(lambda c: agents.update_agent(c, "agent_0000000000000001", removed_at=REMOVED_AT))

    await add_agent(db, make_agent(agent_id="agent_0000000000000002"))

    found = await db.read(lambda c: agents.find_by_name(c, "echo"))
    assert found.agent_id == "agent_0000000000000002"


async def test_removed_agent_hidden(db):
    await add_module(db)
    await add_agent(db, make_agent())
    await db.write(lambda c: agents.update_agent(c, "agent_0000000000000001", removed_at=REMOVED_AT))

    assert await db.read(lambda c: agents.get_agent(c, "agent_0000000000000001")) is None
    assert await db.read(lambda c: agents.live_agents(c)) == []


async def test_agent_update_columns(db):
    await add_module(db)
    await add_agent(db, make_agent())

    await db.write(
        lambda c: agents.update_agent(c, "agent_0000000000000001", status="failed", last_error="trapped")
    )

    record = await db.read(lambda c: agents.get_agent(c, "agent_0000000000000001"))
    assert record.status == "failed"
    assert record.last_error == "trapped"


async def test_agent_counts_accumulate(db):
    await add_module(db)
    await add_agent(db, make_agent())

    await db.write(lambda c: agents.add_counts(c, "agent_0000000000000001", 3, 1))
    await db.write(lambda c: agents.add_counts(c, "agent_0000000000000001", 2, 0))

    record = await db.read(lambda c: agents.get_agent(c, "agent_0000000000000001"))
    assert record.messages_processed == 5
    assert record.messages_failed == 1


async def test_agent_list_filter_and_page(db):
    await add_module(db)
    for number in range(1, 6):
        status = "failed" if number == 4 else "running"
        record = make_agent(
            f"agent_{number:016x}", f"agent-{number}", status=status, deployed_at=f"2024-01-15T10:30:0{number}.000Z"
        )
        await add_agent(db, record)

    page, total = await db.read(lambda c: agents.list_agents(c, status=None, limit=2, offset=1))
    running, running_total = await db.read(lambda c: agents.list_agents(c, status="running", limit=10, offset=0))

    assert total == 5
    assert [record.name for record in page] == ["agent-2", "agent-3"]
    assert running_total == 4
    assert "agent-4" not in [record.name for record in running]


async def test_agent_event_recorded(db):
    await db.write(lambda c: agents.record_event(c, "agent_1", "started", None, "2024-01-15T10:30:00.000Z"))

    rows = await db.read(lambda c: c.execute("SELECT agent_id, kind, detail FROM agent_events").fetchall())

    assert [tuple(row) for row in rows] == [("agent_1", "started", None)]


async def test_message_seq_increases(db):
    seqs = [await add_message(db, make_message(number)) for number in range(1, 4)]

    assert seqs == [1, 2, 3]


@pytest.mark.parametrize("content", [None, "text", 0, [1, {"a": None}], {"text": "héllo ✓"}])
async def test_message_content_round_trip(db, content):
    await add_message(db, make_message(1, content=content))

    stored = await db.read(lambda c: messages.get(c, "msg_0000000000000001"))

    assert stored.message.content == content


async def test_message_envelope_round_trip(db):
    message = make_message(
        1,
        performative=Performative.ACCEPT_PROPOSAL,
        reply_with="r-1",
        in_reply_to="msg_0",
        reply_by="2024-01-16T00:00:00Z",
        protocol="fipa-contract-net",
        language="json",
        ontology="tasks",
    )
    await add_message(db, message)

    stored = await db.read(lambda c: messages.get(c, message.message_id))

    assert stored.message == message
    assert stored.state == QUEUED


async def test_message_duplicate_id_rejected(db):
    await add_message(db, make_message(1))

    with pytest.raises(sqlite3.IntegrityError):
        await add_message(db, make_message(1))


async def test_message_get_missing(db):
    assert await db.read(lambda c: messages.get(c, "msg_missing")) is None


async def test_message_mark_handled(db):
    await add_message(db, make_message(1))

    await db.write(
        lambda c: messages.mark(c, "msg_0000000000000001", HANDLED, None, "2024-01-15T10:31:00.000Z")
    )

    stored = await db.read(lambda c: messages.get(c, "msg_0000000000000001"))
    assert stored.state == HANDLED
    assert stored.handled_at == "2024-01-15T10:31:00.000Z"
    assert stored.to_json()["status"] == HANDLED


async def test_queued_for_receiver_in_order(db):
    for number in range(1, 6):
        receiver = "agent_b" if number == 3 else "agent_a"
        await add_message(db, make_message(number, receiver=receiver))
    await db.write(lambda c: messages.mark(c, "msg_0000000000000002", HANDLED, None, "2024-01-15T10:31:00.000Z"))

    queued = await db.read(lambda c: messages.queued_for(c, "agent_a"))

    assert [stored.message.message_id for stored in queued] == [
        "msg_0000000000000001", "msg_0000000000000004", "msg_0000000000000005",
    ]
    assert [stored.seq for stored in queued] == [1, 4, 5]


async def test_history_filters(db):
    await add_message(db, make_message(1, conversation_id="conv_a"))
    reply = make_message(2, conversation_id="conv_b", sender="agent_0000000000000001", receiver="client_001")
    await add_message(db, reply, DELIVERED, "client")
    await add_message(db, make_message(3, conversation_id="conv_a", sender="client_002"))

    by_conversation, total = await db.read(lambda c: messages.history(c, HistoryQuery(conversation_id="conv_a")))
    by_sender, _ = await db.read(lambda c: messages.history(c, HistoryQuery(sender="client_002")))
    by_receiver, _ = await db.read(lambda c: messages.history(c, HistoryQuery(receiver="client_001")))

    assert total == 2
    assert [s.message.message_id for s in by_conversation] == ["msg_0000000000000001", "msg_0000000000000003"]
    assert [s.message.message_id for s in by_sender] == ["msg_0000000000000003"]
    assert [s.state for s in by_receiver] == [DELIVERED]


async def test_history_since_and_page(db):
    for number in range(1, 8):
        await add_message(db, make_message(number))

    query = HistoryQuery(since="2024-01-15T10:30:03.000Z", limit=2, offset=1)
    page, total = await db.read(lambda c: messages.history(c, query))

    assert total == 5
    assert [s.message.message_id for s in page] == ["msg_0000000000000004", "msg_0000000000000005"]


async def test_client_identities_exclude_agents(db):
    await add_message(db, make_message(1, sender="client_001"))
    await add_message(db, make_message(2, sender="agent_0000000000000001", receiver="client_001"))
    await add_message(db, make_message(3, sender="client_002"))

    clients = await db.read(lambda c: messages.client_identities(c, ["agent_0000000000000001"]))

    assert clients == {"client_001", "client_002"}


def test_agent_record_fields_match_columns(tmp_path):
    connection = sqlite3.connect(tmp_path / "caxton.db", isolation_level=None)
    migrate(connection)
    columns = [row[1] for row in connection.execute("PRAGMA table_info(agents)")]
    connection.close()

    assert columns == [field.name for field in attrs.fields(agents.AgentRecord)]
