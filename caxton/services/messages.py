"""The message service: accept messages, commit handler outcomes, route them, query history.

Delivery contract: `send` returns only after the message is committed and queued in the
receiver's inbox. `batch_done` commits, in one transaction, each handled message's new
state and the messages its handler sent (or the failure reply), then routes them.
"""

from __future__ import annotations

import logging
import sqlite3

import attrs

from caxton.domain import ids
from caxton.domain.errors import (
    AgentNotFound,
    InvalidRequest,
    MessageDeliveryFailed,
    ResourceLimitExceeded,
)
from caxton.domain.messages import Draft, Message, Performative, check_identity, parse_client_message
from caxton.domain.timefmt import format_time, now, parse_time
from caxton.runtime.directory import Directory
from caxton.runtime.instance import Outcome
from caxton.runtime.runner import AgentRunner
from caxton.services.events import EventHub
from caxton.services.metrics import MetricsService
from caxton.store import agents as agent_rows
from caxton.store import messages as message_rows
from caxton.store.db import Database

logger = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000
# A failure gets no failure reply, so two failing agents cannot loop.
_NO_FAILURE_REPLY = frozenset({Performative.FAILURE, Performative.NOT_UNDERSTOOD})


@attrs.frozen
class SendReceipt:
    message_id: str
    conversation_id: str
    status: str = "delivered"

    def to_json(self) -> dict[str, str]:
        return {"message_id": self.message_id, "status": self.status, "conversation_id": self.conversation_id}


class MessageService:
    def __init__(
        self, db: Database, directory: Directory, events: EventHub, metrics: MetricsService, *, max_message_bytes: int
    ) -> None:
        self._db = db
        self._directory = directory
        self._events = events
        self._metrics = metrics
        self.max_message_bytes = max_message_bytes

    async def send(self, body: object, *, size: int, client_identity: str) -> SendReceipt:
        """Store a client's message and queue it for its receiver.

        Raises InvalidRequest (bad field), AgentNotFound (no such agent),
        MessageDeliveryFailed (agent not running), ResourceLimitExceeded (inbox full).
        """
        draft = parse_client_message(body, max_bytes=self.max_message_bytes, size=size)
        receiver_id = self._directory.agent_id(draft.receiver)
        if receiver_id is None:
            raise AgentNotFound(f"Agent with ID '{draft.receiver}' not found")
        runner = self._directory.runner(receiver_id)
        if runner is None or not runner.accepting:
            if runner is not None:
                state = runner.state.value
            else:
                record = await self._db.read(lambda c: agent_rows.get_agent(c, receiver_id))
                state = record.status if record is not None else "stopped"
            raise MessageDeliveryFailed(
                f"agent '{draft.receiver}' is {state}, not running; start it or wait until it runs"
            )
        if not runner.inbox.reserve():
            raise ResourceLimitExceeded(
                f"inbox of agent '{draft.receiver}' is full ({runner.inbox.capacity} messages); retry later"
            )
        sender = draft.sender or client_identity
        message = self._materialize(draft, sender=self._directory.agent_id(sender) or sender, receiver=receiver_id)
        try:
            await self._db.write(
                lambda c: message_rows.insert(c, message, receiver_kind="agent", state=message_rows.QUEUED)
            )
        except sqlite3.IntegrityError:
            runner.inbox.release()
            raise InvalidRequest("message_id", "already used") from None
        except BaseException:
            runner.inbox.release()
            raise
        current = self._directory.runner(receiver_id)
        if current is runner:
            runner.inbox.put_reserved(message)
        else:
            # An update switched versions during the commit: the message goes to the new
            # one. Without any runner it stays queued in the store for the next start.
            runner.inbox.release()
            if current is not None:
                current.inbox.put(message)
        if not self._directory.is_agent(sender):
            self._directory.add_client(sender)
        self._publish_sent(message)
        logger.debug("message %s from %s queued for %s", message.message_id, sender, receiver_id)
        return SendReceipt(message_id=message.message_id, conversation_id=message.conversation_id)

    def _materialize(self, draft: Draft, *, sender: str, receiver: str, reply_to: Message | None = None) -> Message:
        conversation = draft.conversation_id or (reply_to.conversation_id if reply_to else None) or ids.conversation_id()
        in_reply_to = draft.in_reply_to
        if reply_to is not None and draft.receiver is None and in_reply_to is None:
            in_reply_to = reply_to.reply_with or reply_to.message_id
        return Message(
            message_id=ids.message_id(),
            performative=draft.performative,
            sender=sender,
            receiver=receiver,
            conversation_id=conversation,
            timestamp=format_time(now()),
            content=draft.content,
            reply_with=draft.reply_with,
            in_reply_to=in_reply_to,
            reply_by=draft.reply_by,
            protocol=draft.protocol or (reply_to.protocol if reply_to and draft.receiver is None else None),
            language=draft.language,
            ontology=draft.ontology,
        )

    async def batch_done(self, runner: AgentRunner, results: list[tuple[Message, Outcome]]) -> None:
        """Commit a handled batch and route what it sent. A store error is logged, not raised."""
        at = format_time(now())
        updates: list[tuple[Message, str, str | None]] = []
        outgoing: list[tuple[Message, str]] = []
        for message, outcome in results:
            if outcome.ok:
                updates.append((message, message_rows.HANDLED, None))
                for draft in outcome.outgoing:
                    outgoing.append(self._route_target(draft, runner.agent_id, message))
            else:
                updates.append((message, message_rows.FAILED, outcome.error))
                if message.performative not in _NO_FAILURE_REPLY:
                    outgoing.append(self._failure_reply(runner.agent_id, message, outcome.error or "failed"))
        processed = sum(1 for _, state, _ in updates if state == message_rows.HANDLED)

        def commit(connection: sqlite3.Connection) -> None:
            for message, state, error in updates:
                message_rows.mark(connection, message.message_id, state, error, at)
            for message, kind in outgoing:
                state = message_rows.QUEUED if kind == "agent" else message_rows.DELIVERED
                message_rows.insert(connection, message, receiver_kind=kind, state=state)
            agent_rows.add_counts(
                connection, runner.agent_id, processed, len(updates) - processed,
                sum(outcome.cpu_seconds for _, outcome in results),
                sum(outcome.fuel_consumed for _, outcome in results),
            )
            for message, state, error in updates:
                if state == message_rows.FAILED:
                    agent_rows.record_event(connection, runner.agent_id, "message_failed", f"{message.message_id}: {error}", at)

        try:
            # Not durable: if a machine crash loses this commit, the inputs are still queued
            # and are handled again after the restart (at-least-once), so skip the fsync.
            await self._db.write(commit, durable=False)
        except Exception:
            # The inputs stay queued in the store and run again after a restart (at-least-once).
            logger.exception(
                "cannot commit %d outcomes of agent %s (first message %s)",
                len(updates), runner.agent_id, results[0][0].message_id,
            )
            return
        self._metrics.record_batch(runner.agent_id, [outcome for _, outcome in results])
        for message, state, error in updates:
            self._publish_outcome(message, state, error)
        for message, kind in outgoing:
            self._publish_sent(message)
            if kind == "agent":
                target = self._directory.runner(message.receiver)
                if target is not None:
                    target.inbox.put(message)
            else:
                self._publish_outcome(message, message_rows.DELIVERED, None)

    def _publish_sent(self, message: Message) -> None:
        self._events.publish(
            "message.sent",
            f"{message.performative.value} from {message.sender} to {message.receiver}",
            subjects=(message.sender, message.receiver),
            **_event_fields(message),
        )

    def _publish_outcome(self, message: Message, state: str, error: str | None) -> None:
        if state == message_rows.FAILED:
            self._events.publish(
                "message.failed",
                f"{message.receiver} failed {message.message_id}: {error}",
                subjects=(message.sender, message.receiver),
                error=error,
                **_event_fields(message),
            )
            return
        self._events.publish(
            "message.delivered",
            f"{message.performative.value} {message.message_id} delivered to {message.receiver}",
            subjects=(message.sender, message.receiver),
            **_event_fields(message),
        )

    def _route_target(self, draft: Draft, sender: str, handled: Message) -> tuple[Message, str]:
        receiver = handled.sender if draft.receiver is None else draft.receiver
        agent_id = self._directory.agent_id(receiver)
        message = self._materialize(draft, sender=sender, receiver=agent_id or receiver, reply_to=handled)
        return message, "agent" if agent_id is not None else "client"

    def _failure_reply(self, sender: str, handled: Message, error: str) -> tuple[Message, str]:
        draft = Draft(performative=Performative.FAILURE, receiver=None, content={"error": error})
        return self._route_target(draft, sender, handled)

    async def restore_queued(self, runner: AgentRunner) -> int:
        """Queue the stored, unhandled messages of `runner`'s agent; return how many."""
        stored = await self._db.read(lambda c: message_rows.queued_for(c, runner.agent_id))
        runner.inbox.restore([item.message for item in stored])
        if stored:
            logger.info("agent %s: %d stored messages queued again", runner.agent_id, len(stored))
        return len(stored)

    async def fail_queued(self, agent_id: str, reason: str) -> None:
        """Mark every unhandled message of a removed agent failed, so none waits forever."""
        at = format_time(now())

        def commit(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE messages SET state = ?, error = ?, handled_at = ? WHERE receiver = ? AND state = ?",
                (message_rows.FAILED, reason, at, agent_id, message_rows.QUEUED),
            )

        await self._db.write(commit)

    async def history(
        self,
        *,
        conversation_id: str | None = None,
        sender: str | None = None,
        receiver: str | None = None,
        since: str | None = None,
        limit: object = None,
        offset: object = None,
    ) -> tuple[list[dict], int]:
        """Query stored messages, oldest first. Names of live agents match their ids."""
        query = message_rows.HistoryQuery(
            conversation_id=_optional_filter("conversation_id", conversation_id),
            sender=self._identity_filter("sender", sender),
            receiver=self._identity_filter("receiver", receiver),
            since=_since_filter(since),
            limit=parse_bounded_int("limit", limit, default=DEFAULT_HISTORY_LIMIT, low=1, high=MAX_HISTORY_LIMIT),
            offset=parse_bounded_int("offset", offset, default=0, low=0, high=2**62),
        )
        rows, total = await self._db.read(lambda c: message_rows.history(c, query))
        return [row.to_json() for row in rows], total

    def _identity_filter(self, field: str, value: str | None) -> str | None:
        if value is None:
            return None
        check_identity(field, value)
        return self._directory.agent_id(value) or value

    async def load_clients(self) -> None:
        known = await self._db.read(lambda c: [r.agent_id for r in agent_rows.live_agents(c)])
        clients = await self._db.read(lambda c: message_rows.client_identities(c, known))
        self._directory.add_clients(clients)


def _event_fields(message: Message) -> dict:
    return {
        "message_id": message.message_id,
        "from": message.sender,
        "to": message.receiver,
        "performative": message.performative.value,
        "conversation_id": message.conversation_id,
        "in_reply_to": message.in_reply_to,
        "content": message.content,
    }


def _optional_filter(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > 256:
        raise InvalidRequest(field, "must be 1 to 256 characters")
    return value


def _since_filter(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return format_time(parse_time(value))
    except ValueError as exc:
        hint = "; a '+' in a URL query reads as a space, so write it as %2B" if " " in value else ""
        raise InvalidRequest("since", f"{exc}{hint}") from None


def parse_bounded_int(field: str, value: object, *, default: int, low: int, high: int) -> int:
    """Parse a query or body integer; raise InvalidRequest naming `field` when invalid."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InvalidRequest(field, "expected an integer")
    try:
        number = int(value) if isinstance(value, (int, str)) else None
    except ValueError:
        number = None
    if number is None:
        raise InvalidRequest(field, f"expected an integer, got {str(value)[:32]!r}")
    if not low <= number <= high:
        raise InvalidRequest(field, f"must be between {low} and {high}, got {number}")
    return number
