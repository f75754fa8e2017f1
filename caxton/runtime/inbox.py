"""A bounded agent inbox that admits outside messages by reservation.

Outside clients must reserve a slot before their message is stored, so a full inbox is a 429
and never a silent drop. Messages from agents and recovered ones are appended without a
reservation: they are already durable, and refusing them would stall their sender.
"""

from __future__ import annotations

from collections import deque

import trio

from caxton.domain.messages import Message


class Inbox:
    """FIFO of stored messages for one agent, with one consumer. Trio-thread only."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Message] = deque()
        self._ids: set[str] = set()
        self._reserved = 0
        self._wakeup = trio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def reserve(self) -> bool:
        """Claim a slot for a message about to be stored; False when the inbox is full."""
        if len(self._items) + self._reserved >= self.capacity:
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        """Give back a reservation whose message was never stored."""
        self._reserved -= 1

    def put_reserved(self, message: Message) -> None:
        self._reserved -= 1
        self.put(message)

    def put(self, message: Message) -> None:
        if message.message_id in self._ids:
            return
        self._items.append(message)
        self._ids.add(message.message_id)
        self._wakeup.set()

    def restore(self, messages: list[Message]) -> None:
        """Put recovered messages ahead of newer ones, skipping any already queued."""
        fresh = [m for m in messages if m.message_id not in self._ids]
        self._items.extendleft(reversed(fresh))
        self._ids.update(m.message_id for m in fresh)
        if self._items:
            self._wakeup.set()

    def take_all(self) -> list[Message]:
        """Remove and return every queued message, oldest first (to hand them to a successor)."""
        items = list(self._items)
        self._items.clear()
        self._ids.clear()
        return items

    async def take(self, max_items: int) -> list[Message]:
        """Wait until a message is queued, then remove and return up to `max_items`."""
        while not self._items:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        batch = []
        while self._items and len(batch) < max_items:
            message = self._items.popleft()
            self._ids.discard(message.message_id)
            batch.append(message)
        return batch
