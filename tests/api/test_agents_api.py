"""Agent management over REST: deploy, list, details, stop, start and remove."""

from __future__ import annotations

import os

import pytest
import trio

from tests import wat
from tests.conftest import example_bytes


async def test_deploy_without_config_derives_name(server):
    agent = await server.deploy(example_bytes("echo"), None, filename="echo.wasm")
    assert agent["name"].startswith("echo-")
    assert agent["agent_id"].startswith("agent_")
    again = await server.deploy(example_bytes("echo"), None, filename="echo.wasm")
    assert again["name"] != agent["name"]


async def test_list_filters_and_paginates(server):
    ids = [(await server.deploy(example_bytes("echo"), {"name": f"worker-{i}"}))["agent_id"] for i in range(3)]
    await server.client.post(f"/agents/{ids[0]}/stop", json={})
    with trio.fail_after(10):
        while (await server.client.get(f"/agents/{ids[0]}")).json()["status"] != "stopped":
            await trio.sleep(0.02)

    everything = (await server.client.get("/agents")).json()
    assert everything["total"] == 3
    running = (await server.client.get("/agents", params={"status": "running"})).json()
    assert running["total"] == 2
    assert {a["agent_id"] for a in running["agents"]} == set(ids[1:])
    stopped = (await server.client.get("/agents", params={"status": "stopped"})).json()
    assert [a["agent_id"] for a in stopped["agents"]] == [ids[0]]
    page = (await server.client.get("/agents", params={"limit": 1, "offset": 1})).json()
    assert page["total"] == 3
    assert [a["agent_id"] for a in page["agents"]] == [ids[1]]


async def test_details_show_live_figures(server):
    agent = await server.deploy(example_bytes("echo"), {"name": "figures", "resources": {"memory": "50MB", "cpu": "100m"}})
    receipt = await server.send("figures", {"n": 1})
    await server.wait_for_history(lambda m: len(m) == 2, conversation_id=receipt["conversation_id"])
    details = (await server.client.get(f"/agents/{agent['agent_id']}")).json()
    assert details["status"] == "running"
    assert details["resources"]["memory"].endswith("/50MB")
    assert details["resources"]["cpu"].endswith("/100m")
    assert details["metrics"]["messages_processed"] == 1
    assert details["metrics"]["messages_failed"] == 0
    assert details["metrics"]["uptime_seconds"] >= 0
    assert details["deployed_at"].endswith("Z")
    by_name = (await server.client.get("/agents/figures")).json()
    assert by_name["agent_id"] == agent["agent_id"]


async def test_unknown_agent_details(server):
    response = await server.client.get("/agents/agent_999")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "AGENT_NOT_FOUND"


async def test_stop_then_start_keeps_queued_messages(server):
    agent = await server.deploy(wat.SLOW_ECHO, {"name": "slow"})
    sent = [await server.send("slow", {"i": i}) for i in range(20)]
    stop = await server.client.post(f"/agents/{agent['agent_id']}/stop", json={"drain_messages": False})
    assert stop.json() == {"agent_id": agent["agent_id"], "status": "stopping"}
    with trio.fail_after(10):
        while (await server.client.get(f"/agents/{agent['agent_id']}")).json()["status"] != "stopped":
            await trio.sleep(0.02)

    started = await server.client.post(f"/agents/{agent['agent_id']}/start")
    assert started.json()["status"] == "running"
    ids = {receipt["message_id"] for receipt in sent}
    handled = await server.wait_for_history(
        lambda m: ids <= {x["message_id"] for x in m if x["status"] == "handled"}, receiver=agent["agent_id"], limit=100
    )
    assert len([m for m in handled if m["message_id"] in ids]) == 20


async def test_stop_with_drain_handles_queue(server):
    agent = await server.deploy(wat.SLOW_ECHO, {"name": "drainer"})
    sent = [await server.send("drainer", {"i": i}) for i in range(10)]
    await server.client.post(
        f"/agents/{agent['agent_id']}/stop", json={"grace_period_seconds": 30, "drain_messages": True}
    )
    with trio.fail_after(20):
        while (await server.client.get(f"/agents/{agent['agent_id']}")).json()["status"] != "stopped":
            await trio.sleep(0.02)
    stored = await server.history(receiver=agent["agent_id"])
    assert {m["message_id"] for m in stored if m["status"] == "handled"} == {r["message_id"] for r in sent}


async def test_remove_keeps_history(server):
    agent = await server.deploy(example_bytes("echo"), {"name": "gone"})
    receipt = await server.send("gone", {"n": 1})
    await server.wait_for_history(lambda m: len(m) == 2, conversation_id=receipt["conversation_id"])

    removed = await server.client.delete(f"/agents/{agent['agent_id']}", params={"force": "true"})
    assert removed.json() == {"agent_id": agent["agent_id"], "status": "removed"}
    assert (await server.client.get("/agents")).json()["total"] == 0
    assert (await server.client.get(f"/agents/{agent['agent_id']}")).status_code == 404
    assert len(await server.history(conversation_id=receipt["conversation_id"])) == 2
    # The name is free again.
    await server.deploy(example_bytes("echo"), {"name": "gone"})


async def test_agents_restart_with_server(start_server, tmp_path):
    first = await start_server()
    async with first.client:
        agent = await first.deploy(example_bytes("counter"), {"name": "counter"})
        await first.send("counter", {"action": "increment"})
        stopped = await first.deploy(example_bytes("echo"), {"name": "resting"})
        await first.client.post(f"/agents/{stopped['agent_id']}/stop", json={})
    await first.stop()
    second = await start_server()
    async with second.client:
        listing = {a["name"]: a["status"] for a in (await second.client.get("/agents")).json()["agents"]}
        assert listing["counter"] == "running"
        assert listing["resting"] == "stopped"
        receipt = await second.send("counter", {"action": "increment"})
        replies = await second.wait_for_history(lambda m: len(m) == 2, conversation_id=receipt["conversation_id"])
        # Agent memory is not persisted: a restarted agent starts from its initial state.
        assert replies[1]["content"]["count"] == 1
        assert agent["agent_id"] in {m["receiver"] for m in await second.history()}


async def test_default_memory_survives_restart(start_server):
    first = await start_server(agents_default_memory="64Mi")
    async with first.client:
        # 1024 pages are exactly 64 MiB: the default limit must come back exactly.
        module = wat._wat(
            '(module (memory (export "memory") 1024)'
            ' (func (export "alloc") (param i32) (result i32) (i32.const 1024))'
            ' (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0)))'
        )
        agent = await first.deploy(module, {"name": "exact"})
    await first.stop()
    second = await start_server(agents_default_memory="64Mi")
    async with second.client:
        details = (await second.client.get(f"/agents/{agent['agent_id']}")).json()
        assert details["status"] == "running", details["last_error"]
        assert details["config"]["resources"]["memory"] == "64Mi"


async def test_shutdown_commits_message_in_hand(start_server):
    first = await start_server()
    async with first.client:
        await first.deploy(wat.SPIN_ON_LARGE, {"name": "busy", "resources": {"timeout": "1s"}})
        receipt = await first.send("busy", {"pad": "x" * 3000})
        await trio.sleep(0.3)
    await first.stop()
    second = await start_server()
    async with second.client:
        stored = await second.history(conversation_id=receipt["conversation_id"])
        # The handler timed out while the server stopped; its outcome was still committed.
        assert stored[0]["status"] == "failed"
        assert "timed out" in stored[0]["error"]


async def test_second_server_refuses_same_data_folder(start_server, tmp_path):
    from caxton.store.lock import DataDirInUse

    first = await start_server()
    async with first.client:
        with pytest.raises(DataDirInUse) as caught:
            await start_server()
        assert str(tmp_path) in str(caught.value)
        assert f"pid {os.getpid()}" in str(caught.value)
