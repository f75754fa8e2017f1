"""Messages over REST against the real server: delivery, replies, routing and history."""

from __future__ import annotations

import trio

from tests import wat
from tests.conftest import example_bytes


async def test_quick_start_reply_in_history(server):
    agent = await server.deploy(example_bytes("echo"), {"name": "my-agent", "resources": {"memory": "50MB"}})
    receipt = await server.send(
        agent["agent_id"], {"action": "process", "data": {"key": "value"}}, sender="client_001"
    )
    assert receipt["status"] == "delivered"
    assert receipt["message_id"].startswith("msg_")

    conversation = receipt["conversation_id"]
    messages = await server.wait_for_history(lambda m: len(m) == 2, conversation_id=conversation)
    request, reply = messages
    assert request["status"] == "handled"
    assert reply["performative"] == "inform"
    assert reply["sender"] == agent["agent_id"]
    assert reply["receiver"] == "client_001"
    assert reply["in_reply_to"] == receipt["message_id"]
    assert reply["content"]["content"] == {"action": "process", "data": {"key": "value"}}


async def test_receiver_by_name_and_default_sender(server):
    await server.deploy(example_bytes("echo"), {"name": "echo"})
    receipt = await server.send("echo", {"n": 1})
    messages = await server.wait_for_history(lambda m: len(m) == 2, conversation_id=receipt["conversation_id"])
    assert messages[0]["sender"].startswith("client_")
    assert messages[1]["receiver"] == messages[0]["sender"]


async def test_forwarder_routes_between_agents(server):
    echo = await server.deploy(example_bytes("echo"), {"name": "echo"})
    forwarder = await server.deploy(example_bytes("forwarder"), {"name": "forwarder"})
    receipt = await server.send(
        "forwarder", {"forward_to": "echo", "job": 7}, sender="client_fw", conversation_id="conv_forward_1"
    )
    assert receipt["conversation_id"] == "conv_forward_1"

    def relayed(messages):
        return any(m["sender"] == forwarder["agent_id"] and m["receiver"] == "client_fw" for m in messages)

    messages = await server.wait_for_history(relayed, conversation_id="conv_forward_1")
    hops = [(m["sender"], m["receiver"], m["performative"]) for m in messages]
    assert (forwarder["agent_id"], echo["agent_id"], "request") in hops
    assert (echo["agent_id"], forwarder["agent_id"], "inform") in hops
    assert all(m["conversation_id"] == "conv_forward_1" for m in messages)


async def test_counter_keeps_state(server):
    await server.deploy(example_bytes("counter"), {"name": "counter"})
    for _ in range(3):
        await server.send("counter", {"action": "increment"}, conversation_id="conv_count")
    replies = await server.wait_for_history(
        lambda m: sum(x["performative"] == "inform" for x in m) == 3, conversation_id="conv_count"
    )
    counts = [m["content"]["count"] for m in replies if m["performative"] == "inform"]
    assert counts == [1, 2, 3]


async def test_messages_handled_in_send_order(server):
    await server.deploy(example_bytes("counter"), {"name": "ordered"})
    for _ in range(40):
        await server.send("ordered", {"action": "increment"}, conversation_id="conv_order")
    messages = await server.wait_for_history(
        lambda m: sum(x["performative"] == "inform" for x in m) == 40, conversation_id="conv_order", limit=200
    )
    counts = [m["content"]["count"] for m in messages if m["performative"] == "inform"]
    assert counts == list(range(1, 41))


async def test_wasi_command_agent_replies(server):
    await server.deploy(example_bytes("wasi-echo"), {"name": "wasi-echo"})
    receipt = await server.send("wasi-echo", {"text": "héllo"})
    messages = await server.wait_for_history(lambda m: len(m) == 2, conversation_id=receipt["conversation_id"])
    reply = messages[1]
    assert reply["performative"] == "inform"
    assert reply["content"]["echo"]["content"] == {"text": "héllo"}


async def test_spinning_handler_times_out_and_agent_recovers(server):
    agent = await server.deploy(wat.SPIN_ON_LARGE, {"name": "spinner", "resources": {"timeout": "300ms"}})
    first = await server.send("spinner", {"pad": "x" * 3000}, sender="client_spin")

    # The API keeps answering while the handler spins.
    with trio.fail_after(2):
        health = await server.client.get("/health")
    assert health.status_code == 200

    messages = await server.wait_for_history(lambda m: len(m) == 2, conversation_id=first["conversation_id"])
    assert messages[0]["status"] == "failed"
    assert "timed out" in messages[0]["error"]
    assert messages[1]["performative"] == "failure"
    assert messages[1]["receiver"] == "client_spin"

    second = await server.send("spinner", {"n": 2})
    handled = await server.wait_for_history(
        lambda m: m and m[0]["status"] != "queued", conversation_id=second["conversation_id"]
    )
    assert handled[0]["status"] == "handled"
    details = (await server.client.get(f"/agents/{agent['agent_id']}")).json()
    assert details["status"] == "running"
    assert details["metrics"]["messages_failed"] == 1


async def test_trapping_handler_fails_message_and_replies_failure(server):
    await server.deploy(wat.TRAP_ALWAYS, {"name": "trapper"})
    receipt = await server.send("trapper", {"n": 1}, sender="client_trap")
    messages = await server.wait_for_history(lambda m: len(m) == 2, conversation_id=receipt["conversation_id"])
    assert messages[0]["status"] == "failed"
    assert "unreachable" in messages[0]["error"]
    assert messages[1]["performative"] == "failure"
    assert messages[1]["in_reply_to"] == receipt["message_id"]


async def test_history_filters_and_pagination(server):
    await server.deploy(example_bytes("echo"), {"name": "echo"})
    for index in range(5):
        await server.send("echo", {"i": index}, sender="client_pages", conversation_id=f"conv_p{index}")
    await server.wait_for_history(lambda m: len(m) == 5, sender="echo")

    response = await server.client.get("/messages", params={"sender": "client_pages", "limit": 2, "offset": 1})
    body = response.json()
    assert body["total"] == 5
    assert [m["content"]["i"] for m in body["messages"]] == [1, 2]

    to_client = await server.history(receiver="client_pages")
    assert len(to_client) == 5
    since = (await server.history(conversation_id="conv_p4"))[0]["timestamp"]
    recent = await server.history(since=since, sender="client_pages")
    assert [m["content"]["i"] for m in recent] == [4]


async def test_full_inbox_answers_429(start_server):
    live = await start_server(limits_inbox_size=2)
    async with live.client:
        await live.deploy(wat.SPIN_FOREVER, {"name": "slow", "resources": {"timeout": "2s"}})
        statuses = []
        for _ in range(6):
            response = await live.client.post("/messages", json={"performative": "request", "receiver": "slow"})
            statuses.append(response.status_code)
        assert 429 in statuses
        rejected = [s for s in statuses if s == 429]
        body = (await live.client.post("/messages", json={"performative": "request", "receiver": "slow"})).json()
        assert body["error"]["code"] == "RESOURCE_LIMIT_EXCEEDED"
        total = (await live.client.get("/messages")).json()["total"]
        assert total == len(statuses) - len(rejected)
