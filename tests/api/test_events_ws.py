"""WebSocket events at /ws, driven by a trio-websocket client against the real server."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from tests import wat
from tests.conftest import TOKEN, example_bytes


def _ws_url(server, token: str | None = None) -> str:
    base = server.running.urls[0].replace("http://", "ws://") + "/ws"
    return f"{base}?token={token}" if token else base


async def _request(ws, frame: dict) -> dict:
    await ws.send_message(json.dumps(frame))
    return json.loads(await ws.get_message())


async def _collect(ws, count: int, timeout: float = 10) -> list[dict]:
    frames = []
    with trio.fail_after(timeout):
        while len(frames) < count:
            frames.append(json.loads(await ws.get_message()))
    return frames


async def test_subscriber_sees_exchange_for_its_agent(server):
    echo = await server.deploy(example_bytes("echo"), {"name": "echo"})
    await server.deploy(example_bytes("counter"), {"name": "other"})
    async with open_websocket_url(_ws_url(server), extra_headers=[("X-Caxton-Token", TOKEN)]) as ws:
        ack = await _request(ws, {"type": "subscribe", "agents": ["echo"], "events": ["message.*"]})
        assert ack["type"] == "subscribed"
        assert ack["agents"] == [echo["agent_id"]]

        await server.send("other", {"action": "increment"}, sender="client_ws")
        receipt = await server.send("echo", {"hello": "ws"}, sender="client_ws")
        events = await _collect(ws, 4)

    assert [e["type"] for e in events] == ["message.sent", "message.delivered", "message.sent", "message.delivered"]
    request, handled, reply, delivered = events
    assert request["from"] == "client_ws"
    assert request["to"] == echo["agent_id"]
    assert request["message_id"] == receipt["message_id"]
    assert handled["message_id"] == receipt["message_id"]
    assert reply["from"] == echo["agent_id"]
    assert reply["to"] == "client_ws"
    assert reply["performative"] == "inform"
    assert delivered["content"]["content"] == {"hello": "ws"}
    assert all(e["timestamp"].endswith("Z") and e["message"] for e in events)


async def test_client_watches_its_own_replies(server):
    await server.deploy(example_bytes("echo"), {"name": "echo"})
    async with open_websocket_url(_ws_url(server, TOKEN)) as ws:
        await _request(ws, {"type": "subscribe", "agents": ["client_watch"], "events": ["message.delivered"]})
        await server.send("echo", {"n": 1}, sender="client_watch")
        events = await _collect(ws, 2)
    assert [e["to"] for e in events] == [events[0]["to"], "client_watch"]
    assert events[1]["performative"] == "inform"


async def test_wildcard_sees_everything(server):
    async with open_websocket_url(_ws_url(server, TOKEN)) as ws:
        await _request(ws, {"type": "subscribe", "events": ["*"]})
        agent = await server.deploy(wat.TRAP_ALWAYS, {"name": "trapper"})
        await server.send("trapper", {"n": 1}, sender="client_all")
        events = await _collect(ws, 7)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["agent.deployed", "agent.started"]
    assert "message.failed" in kinds
    assert "agent.restarted" in kinds
    failed = next(e for e in events if e["type"] == "message.failed")
    assert "unreachable" in failed["error"]
    assert failed["to"] == agent["agent_id"]


async def test_bad_frames_get_error_frames(server):
    async with open_websocket_url(_ws_url(server, TOKEN)) as ws:
        for frame, fragment in [
            ("not json", "invalid JSON"),
            ("[1]", "JSON object"),
            ('{"type": "dance"}', "unknown frame type"),
            ('{"type": "subscribe", "events": "message.*"}', "events"),
            ('{"type": "subscribe", "agents": "echo"}', "agents"),
            ('{"type": "unsubscribe", "subscription_id": "sub_missing"}', "sub_missing"),
        ]:
            await ws.send_message(frame)
            reply = json.loads(await ws.get_message())
            assert reply["type"] == "error"
            assert reply["error"]["code"] == "INVALID_REQUEST"
            assert fragment in reply["error"]["message"]
        pong = await _request(ws, {"type": "ping", "data": 7})
        assert pong == {"type": "pong", "data": 7}


async def test_unsubscribe_stops_events(server):
    await server.deploy(example_bytes("echo"), {"name": "echo"})
    async with open_websocket_url(_ws_url(server, TOKEN)) as ws:
        ack = await _request(ws, {"type": "subscribe", "events": ["agent.*"]})
        done = await _request(ws, {"type": "unsubscribe", "subscription_id": ack["subscription_id"]})
        assert done == {"type": "unsubscribed", "subscription_ids": [ack["subscription_id"]]}
        await server.deploy(example_bytes("echo"), {"name": "quiet"})
        assert await _request(ws, {"type": "ping"}) == {"type": "pong", "data": None}


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
async def test_handshake_needs_token(server, token):
    with pytest.raises(HandshakeError) as caught:
        async with open_websocket_url(_ws_url(server, token)):
            pass
    assert caught.value.status_code == 401
    assert json.loads(caught.value.body)["error"]["code"] == "UNAUTHORIZED"


async def test_slow_subscriber_is_bounded(start_server):
    live = await start_server(events_queue_size=50)
    async with live.client:
        await live.deploy(wat.FAN_OUT, {"name": "flood"})
        async with open_websocket_url(_ws_url(live, TOKEN), message_queue_size=0) as ws:
            await _request(ws, {"type": "subscribe", "events": ["message.*"]})
            # 50 requests make 100 replies each: over 20,000 events while nobody reads.
            for _ in range(50):
                await live.send("flood", {"n": 1}, sender="client_slow")
            await live.wait_for_history(lambda m: True, sender="flood")
            with trio.fail_after(20):
                while (await live.client.get("/messages", params={"sender": "flood", "limit": 1})).json()["total"] < 5000:
                    await trio.sleep(0.05)
            health = await live.client.get("/health")
            assert health.status_code == 200
            received, dropped = 0, 0
            with trio.move_on_after(2):
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "overflow":
                        dropped += frame["dropped"]
                    else:
                        received += 1
        assert dropped > 0
        assert received + dropped >= 10_000


async def test_shutdown_closes_with_1001(start_server):
    live = await start_server()
    async with live.client:
        async with open_websocket_url(_ws_url(live, TOKEN)) as ws:
            await _request(ws, {"type": "subscribe", "events": ["*"]})
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(live.stop)
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            await ws.get_message()
            assert closed.value.reason.code == 1001


async def test_wrong_websocket_path_is_404(server):
    url = server.running.urls[0].replace("http://", "ws://") + "/api/v1/ws"
    with pytest.raises(HandshakeError) as caught:
        async with open_websocket_url(url, extra_headers=[("X-Caxton-Token", TOKEN)]):
            pass
    assert caught.value.status_code == 404
    assert json.loads(caught.value.body)["error"]["code"] == "NOT_FOUND"


async def test_plain_get_on_ws_explains(server):
    root = server.running.urls[0]
    response = await server.client.get(f"{root}/ws")
    assert response.status_code == 400
    assert "WebSocket client" in response.json()["error"]["message"]
