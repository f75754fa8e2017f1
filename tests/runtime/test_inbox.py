"""The agent inbox: reservations against capacity, restore order and dedup, batched takes."""

from __future__ import annotations

import trio
import trio.testing

from caxton.domain.messages import Message, Performative
from caxton.runtime.inbox import Inbox


def make_message(number: int) -> Message:
    return Message(
        message_id=f"msg_{number:016x}",
        performative=Performative.REQUEST,
        sender="client_001",
        receiver="agent_00000000000000aa",
        conversation_id="conv_1",
        timestamp="2024-01-15T10:30:00.000Z",
        content={"n": number},
    )


def numbers(messages: list[Message]) -> list[int]:
    return [message.content["n"] for message in messages]


def test_reserve_until_full():
    inbox = Inbox(capacity=2)

    assert inbox.reserve()
    assert inbox.reserve()
    assert not inbox.reserve()


def test_reserve_counts_queued_messages():
    inbox = Inbox(capacity=2)
    inbox.put(make_message(1))

    assert inbox.reserve()
    assert not inbox.reserve()


def test_release_frees_slot():
    inbox = Inbox(capacity=1)
    inbox.reserve()

    inbox.release()

    assert inbox.reserve()


def test_put_reserved_keeps_slot_taken():
    inbox = Inbox(capacity=1)
    inbox.reserve()

    inbox.put_reserved(make_message(1))

    assert len(inbox) == 1
    assert not inbox.reserve()


async def test_taken_message_frees_slot():
    inbox = Inbox(capacity=1)
    inbox.reserve()
    inbox.put_reserved(make_message(1))

    await inbox.take(10)

    assert inbox.reserve()


def test_put_ignores_capacity():
    inbox = Inbox(capacity=1)

    for number in range(3):
        inbox.put(make_message(number))

    assert len(inbox) == 3


def test_put_skips_queued_duplicate():
    inbox = Inbox(capacity=10)

    inbox.put(make_message(1))
    inbox.put(make_message(1))

    assert len(inbox) == 1


async def test_take_in_put_order():
    inbox = Inbox(capacity=10)
    for number in range(1, 4):
        inbox.put(make_message(number))

    assert numbers(await inbox.take(10)) == [1, 2, 3]
    assert len(inbox) == 0


async def test_take_batch_limit():
    inbox = Inbox(capacity=10)
    for number in range(1, 6):
        inbox.put(make_message(number))

    first = await inbox.take(2)
    second = await inbox.take(2)

    assert numbers(first) == [1, 2]
    assert numbers(second) == [3, 4]
    assert len(inbox) == 1


async def test_take_waits_for_put():
    inbox = Inbox(capacity=10)
    received: list[Message] = []

    async def consume() -> None:
        received.extend(await inbox.take(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        inbox.put(make_message(1))

    assert numbers(received) == [1]


async def test_take_waits_again_after_empty():
    inbox = Inbox(capacity=10)
    inbox.put(make_message(1))
    await inbox.take(10)
    received: list[Message] = []

    async def consume() -> None:
        received.extend(await inbox.take(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        inbox.put(make_message(2))

    assert numbers(received) == [2]


async def test_put_after_take_accepted():
    inbox = Inbox(capacity=10)
    inbox.put(make_message(1))
    await inbox.take(10)

    inbox.put(make_message(1))

    assert len(inbox) == 1


async def test_restore_goes_first():
    inbox = Inbox(capacity=10)
    inbox.put(make_message(5))
    inbox.put(make_message(6))

    inbox.restore([make_message(1), make_message(2), make_message(3)])

    assert numbers(await inbox.take(10)) == [1, 2, 3, 5, 6]


async def test_restore_skips_queued():
    inbox = Inbox(capacity=10)
    inbox.put(make_message(2))
    inbox.put(make_message(4))

    inbox.restore([make_message(1), make_message(2), make_message(3)])

    assert numbers(await inbox.take(10)) == [1, 3, 2, 4]


async def test_restore_untaken_rest():
    inbox = Inbox(capacity=10)
    for number in range(1, 5):
        inbox.put(make_message(number))
    batch = await inbox.take(4)
    inbox.put(make_message(5))

    inbox.restore(batch[2:])

    assert numbers(await inbox.take(10)) == [3, 4, 5]


async def test_restore_wakes_taker():
    inbox = Inbox(capacity=10)
    received: list[Message] = []

    async def consume() -> None:
        received.extend(await inbox.take(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        inbox.restore([make_message(1), make_message(2)])

    assert numbers(received) == [1, 2]


def test_restore_empty_list():
    inbox = Inbox(capacity=10)

    inbox.restore([])

    assert len(inbox) == 0


def test_restore_ignores_capacity():
    inbox = Inbox(capacity=1)

    inbox.restore([make_message(1), make_message(2)])

    assert len(inbox) == 2
    assert not inbox.reserve()
