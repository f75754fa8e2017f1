"""The SQLite store: WAL mode, one writer with group commit, one reader connection.

Every write is a function of a connection, submitted with `Database.write`. A committer task
collects whatever writes are waiting, runs them on a worker thread in one transaction (each
inside its own savepoint, so one failing write does not undo its neighbours) and commits once.
`write` returns only after that commit, which is what lets the API acknowledge a message only
once it is durable. Reads run on a second connection that WAL lets proceed beside the writer.

Durability is chosen per write. A durable write (the default) is committed with
`synchronous=FULL`, so it survives power loss. A write with `durable=False` is committed with
`synchronous=NORMAL`: it survives a crash of the process but not of the machine, and skips
the fsync. That suits writes the server can redo, such as a handler's outcome, whose input
stays queued and is handled again if the outcome is lost. The WAL is sequential, so the next
durable commit makes every earlier one durable too.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from caxton.store.schema import migrate

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Writes per transaction: large enough to amortise one fsync over a burst, small enough that
# one transaction never holds the write lock for long.
MAX_BATCH = 512
# Pending writes before `write` waits: bounds memory when the disk is slower than the API.
QUEUE_SIZE = 4096


@attrs.define
class _PendingWrite:
    operation: Callable[[sqlite3.Connection], Any]
    durable: bool = True
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class Database:
    """The process's one store. Start it with `nursery.start(db.run)` before anything uses it.

    `run` opens the file, applies migrations, serves writes until cancelled, then commits what
    is already queued and closes both connections. Callers must stop submitting writes first.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._send, self._receive = trio.open_memory_channel[_PendingWrite](QUEUE_SIZE)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_thread = trio.CapacityLimiter(1)
        self._read_thread = trio.CapacityLimiter(1)
        self._synchronous = "FULL"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(self._open, limiter=self._write_thread)
        logger.info("store opened at %s", self.path)
        try:
            task_status.started()
            await self._commit_loop()
        finally:
            with trio.CancelScope(shield=True):
                await self._flush_and_close()

    async def write(self, operation: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `operation` in a write transaction and return its result once committed.

        With `durable=False` the commit survives a process crash but may be lost with the
        machine (see the module docstring). An exception raised by `operation` is re-raised
        here and rolls back only that operation. A failed commit raises `sqlite3.Error` for
        every write in the batch.
        """
        pending = _PendingWrite(operation, durable)
        await self._send.send(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run `operation` on the read connection in a worker thread and return its result."""
        return await trio.to_thread.run_sync(self._read_sync, operation, limiter=self._read_thread)

    def _read_sync(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        assert self._reader is not None, "store is not open"
        return operation(self._reader)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(self.path)
        self._writer.execute("PRAGMA journal_mode=WAL")
        migrate(self._writer)
        self._reader = _connect(self.path)

    async def _commit_loop(self) -> None:
        async for first in self._receive:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            # Shielded: once a batch is taken, its callers must learn its outcome.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._apply, batch, limiter=self._write_thread)
            for pending in batch:
                pending.done.set()

    def _apply(self, batch: list[_PendingWrite]) -> None:
        assert self._writer is not None
        connection = self._writer
        synchronous = "FULL" if any(pending.durable for pending in batch) else "NORMAL"
        try:
            if synchronous != self._synchronous:
                connection.execute(f"PRAGMA synchronous={synchronous}")
                self._synchronous = synchronous
            connection.execute("BEGIN IMMEDIATE")
            for index, pending in enumerate(batch):
                savepoint = f"write_{index}"
                connection.execute(f"SAVEPOINT {savepoint}")
                try:
                    pending.result = pending.operation(connection)
                except Exception as exc:  # noqa: BLE001 - handed back to the caller of write()
                    connection.execute(f"ROLLBACK TO {savepoint}")
                    pending.error = exc
                connection.execute(f"RELEASE {savepoint}")
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            logger.exception("store commit of %d writes failed", len(batch))
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            for pending in batch:
                pending.result = None
                pending.error = exc

    async def _flush_and_close(self) -> None:
        self._send.close()
        leftover: list[_PendingWrite] = []
        while True:
            try:
                leftover.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        if leftover:
            await trio.to_thread.run_sync(self._apply, leftover, limiter=self._write_thread)
            for pending in leftover:
                pending.done.set()
        await trio.to_thread.run_sync(self._close, limiter=self._write_thread)
        logger.info("store closed (%d writes flushed at shutdown)", len(leftover))

    def _close(self) -> None:
        for connection in (self._reader, self._writer):
            if connection is not None:
                connection.close()
        self._reader = self._writer = None


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    connection.row_factory = sqlite3.Row
    # FULL: an acknowledged message survives power loss, not only a process crash.
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection
