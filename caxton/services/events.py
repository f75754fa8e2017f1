"""The event hub: services publish events, WebSocket connections receive what they match.

Publishing never waits: each connection has a bounded queue, and when it is full the newest
events are dropped and counted, and the connection is told how many it missed. A slow
client therefore costs at most its queue's memory and never slows the server.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import trio

from caxton.domain.events import Event, SubscriptionState
from caxton.domain.timefmt import format_time, now

logger = logging.getLogger(__name__)


class Listener:
    """One connection's view of the hub: its subscriptions and its bounded queue."""

    def __init__(self, queue_size: int, identity: str) -> None:
        self.state = SubscriptionState()
        self.identity = identity
        self.dropped = 0
        self._queue: deque[str] = deque()
        self._queue_size = queue_size
        self._wakeup = trio.Event()
        self.closing = False

    def wants(self, event: Event) -> bool:
        return self.state.matches(event)

    def push(self, frame: str) -> None:
        """Queue one encoded event frame, or count it as dropped when the queue is full."""
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
        else:
            self._queue.append(frame)
        self._wakeup.set()

    def close(self) -> None:
        self.closing = True
        self._wakeup.set()

    async def next_frames(self) -> list[str]:
        """Wait for queued events (or close) and return their frames, led by an overflow notice."""
        while not self._queue and not self.dropped and not self.closing:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        frames = []
        if self.dropped:
            notice = {
                "type": "overflow",
                "timestamp": format_time(now()),
                "dropped": self.dropped,
                "message": f"{self.dropped} events dropped because this connection read too slowly",
            }
            frames.append(json.dumps(notice, separators=(",", ":")))
            self.dropped = 0
        frames.extend(self._queue)
        self._queue.clear()
        return frames

    def __len__(self) -> int:
        return len(self._queue)


class EventHub:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._listeners: set[Listener] = set()
        self.closed = False

    def publish(self, kind: str, message: str, *, subjects: Iterable[str] = (), **fields: Any) -> None:
        """Fan an event out to every matching listener without waiting on any of them."""
        event = Event(
            type=kind, timestamp=format_time(now()), message=message, fields=fields,
            subjects=frozenset(s for s in subjects if s),
        )
        frame = None
        for listener in list(self._listeners):
            if listener.wants(event):
                # Encoded once, however many connections receive it.
                frame = frame or event.to_text()
                listener.push(frame)

    def listen(self, identity: str) -> Listener:
        listener = Listener(self.queue_size, identity)
        self._listeners.add(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    async def close_all(self, timeout: float) -> None:
        """Ask every connection to close (code 1001) and wait until they are gone."""
        self.closed = True
        for listener in list(self._listeners):
            listener.close()
        with trio.move_on_after(timeout):
            while self._listeners:
                await trio.sleep(0.01)
        if self._listeners:
            logger.warning("%d WebSocket connections did not close in time", len(self._listeners))
