"""Bad input over REST: documented status and code, the problem named, nothing changed."""

from __future__ import annotations

import logging
import os

import pytest
import trio

from tests import wat
from tests.conftest import TOKEN, example_bytes


async def _state(server) -> tuple[dict, dict]:
    agents = (await server.client.get("/agents")).json()
    messages = (await server.client.get("/messages")).json()
    return agents, messages


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["trace_id"].startswith("trace_")
    return error


async def _deploy_raw(server, wasm: bytes, config: str | None):
    data = {"config": config} if config is not None else {}
    return await server.client.post("/agents", files={"wasm": ("bad.wasm", wasm)}, data=data)


@pytest.mark.parametrize(
    ("wasm", "config", "code", "fragment"),
    [
        (os.urandom(4096), '{"name":"random"}', "INVALID_WASM", "not a WebAssembly module"),
        (wat.UNKNOWN_IMPORT, '{"name":"imports"}', "INVALID_WASM", "env.fd_write"),
        (wat.KV_IMPORT, '{"name":"kv"}', "INVALID_WASM", "caxton.store_data"),
        (wat.NO_HANDLER, '{"name":"nohandler"}', "INVALID_WASM", "handle_message"),
        (b"\0asm\x01\x00\x00\x00\xff\xff", '{"name":"broken"}', "INVALID_WASM", "failed to compile"),
        (
            wat.BIG_MEMORY,
            '{"name":"big","resources":{"memory":"1MB"}}',
            "INVALID_WASM",
            "memory limit",
        ),
        (wat.RETURN_ONE, '{"name":"x","resources":{"memory":"50XB"}}', "INVALID_REQUEST", "config.resources.memory"),
        (wat.RETURN_ONE, '["not", "an", "object"]', "INVALID_REQUEST", "config"),
        (wat.RETURN_ONE, '{"name": 5}', "INVALID_REQUEST", "config.name"),
        (wat.RETURN_ONE, '{"nmae": "typo"}', "INVALID_REQUEST", "config.nmae"),
        (wat.RETURN_ONE, "{not json", "INVALID_REQUEST", "config"),
    ],
)
async def test_bad_deploy_changes_nothing(server, wasm, config, code, fragment):
    before = await _state(server)
    error = _error(await _deploy_raw(server, wasm, config), 400, code)
    assert fragment in error["message"]
    assert await _state(server) == before


async def test_init_failure_is_deployment_failed(server):
    before = await _state(server)
    error = _error(await _deploy_raw(server, wat.INIT_FAILS, '{"name":"initfail"}'), 500, "DEPLOYMENT_FAILED")
    assert "agent_init returned 7" in error["message"]
    assert await _state(server) == before


async def test_missing_wasm_part(server):
    response = await server.client.post("/agents", files={"config": (None, '{"name":"x"}')})
    assert "wasm" in _error(response, 400, "INVALID_REQUEST")["message"]


async def test_deploy_json_body_rejected(server):
    response = await server.client.post("/agents", json={"name": "x"})
    assert "multipart/form-data" in _error(response, 400, "INVALID_REQUEST")["message"]


async def test_upload_over_limit(start_server):
    live = await start_server(limits_max_module_size="64KB")
    async with live.client:
        before = await _state(live)
        response = await _deploy_raw(live, example_bytes("echo") + b"\0" * 70_000, '{"name":"huge"}')
        assert "limit" in _error(response, 413, "PAYLOAD_TOO_LARGE")["message"]
        assert await _state(live) == before


async def test_duplicate_name_conflict(server):
    await server.deploy(example_bytes("echo"), {"name": "twin"})
    before = await _state(server)
    response = await _deploy_raw(server, example_bytes("echo"), '{"name":"twin"}')
    assert "twin" in _error(response, 409, "AGENT_ALREADY_EXISTS")["message"]
    assert await _state(server) == before


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('"text"', "expected a JSON object"),
        ("{bad json", "invalid JSON"),
        ('{"receiver": "echo"}', "performative"),
        ('{"performative": "shout", "receiver": "echo"}', "unknown performative"),
        ('{"performative": "request"}', "receiver"),
        ('{"performative": "request", "receiver": "echo", "colour": 1}', "colour"),
        ('{"performative": "request", "receiver": "echo", "reply_by": "tomorrow"}', "reply_by"),
        ('{"performative": "request", "receiver": "has space"}', "receiver"),
        ('{"performative": "request", "receiver": "echo", "receiver": "other"}', "duplicate key"),
    ],
)
async def test_bad_message_changes_nothing(server, body, fragment):
    await server.deploy(example_bytes("echo"), {"name": "echo"})
    before = await _state(server)
    response = await server.client.post("/messages", content=body, headers={"Content-Type": "application/json"})
    assert fragment in _error(response, 400, "INVALID_REQUEST")["message"]
    assert await _state(server) == before


async def test_message_to_unknown_agent(server):
    before = await _state(server)
    response = await server.client.post("/messages", json={"performative": "request", "receiver": "agent_999"})
    error = _error(response, 404, "AGENT_NOT_FOUND")
    assert error["message"] == "Agent with ID 'agent_999' not found"
    assert await _state(server) == before


async def test_message_to_stopped_agent(server):
    agent = await server.deploy(example_bytes("echo"), {"name": "sleepy"})
    stop = await server.client.post(f"/agents/{agent['agent_id']}/stop", json={})
    assert stop.json()["status"] == "stopping"
    response = await server.client.post("/messages", json={"performative": "request", "receiver": "sleepy"})
    assert "sleepy" in _error(response, 500, "MESSAGE_DELIVERY_FAILED")["message"]


async def test_accept_proposal_spellings(server):
    await server.deploy(example_bytes("echo"), {"name": "echo"})
    for spelling in ("accept_proposal", "ACCEPT-PROPOSAL", "Accept_Proposal"):
        receipt = await server.send("echo", performative=spelling)
        stored = await server.history(conversation_id=receipt["conversation_id"])
        assert stored[0]["performative"] == "accept-proposal"


@pytest.mark.parametrize("headers", [{}, {"X-Caxton-Token": "wrong-token-value-123456"}])
async def test_token_required(server, headers):
    response = await server.client.get("/agents", headers={"X-Caxton-Token": ""} | headers)
    _error(response, 401, "UNAUTHORIZED")
    deploy = await server.client.post(
        "/agents", files={"wasm": ("a.wasm", example_bytes("echo"))}, headers={"X-Caxton-Token": ""} | headers
    )
    _error(deploy, 401, "UNAUTHORIZED")
    assert (await server.client.get("/agents")).json()["total"] == 0


async def test_health_needs_no_token(server):
    response = await server.client.get("/health", headers={"X-Caxton-Token": ""})
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


async def test_reader_token_forbidden_to_write(start_server, tmp_path):
    reader = "reader-token-0123456789"
    config = tmp_path / "caxton.toml"
    config.write_text(f'[[auth.tokens]]\nname = "dashboard"\ntoken = "{reader}"\nrole = "reader"\n')
    live = await start_server(config_file=config)
    async with live.client:
        headers = {"X-Caxton-Token": reader}
        assert (await live.client.get("/agents", headers=headers)).status_code == 200
        deploy = await live.client.post("/agents", files={"wasm": ("a.wasm", example_bytes("echo"))}, headers=headers)
        assert "reader" in _error(deploy, 403, "FORBIDDEN")["message"]
        assert (await live.client.get("/agents")).json()["total"] == 0


async def test_unknown_path_and_method(server):
    _error(await server.client.get("/nothing-here"), 404, "NOT_FOUND")
    _error(await server.client.patch("/agents"), 405, "METHOD_NOT_ALLOWED")


async def test_bad_query_parameters(server):
    for params, field in [
        ({"limit": "ten"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"since": "yesterday"}, "since"),
        ({"colour": "red"}, "colour"),
    ]:
        response = await server.client.get("/messages", params=params)
        assert field in _error(response, 400, "INVALID_REQUEST")["message"]
    response = await server.client.get("/agents", params={"status": "sleeping"})
    assert "status" in _error(response, 400, "INVALID_REQUEST")["message"]


async def test_oversized_message_body(start_server):
    live = await start_server(limits_max_request_size="4KB")
    async with live.client:
        await live.deploy(example_bytes("echo"), {"name": "echo"})
        body = {"performative": "request", "receiver": "echo", "content": "x" * 8000}
        _error(await live.client.post("/messages", json=body), 413, "PAYLOAD_TOO_LARGE")
        assert (await live.client.get("/messages")).json()["total"] == 0


async def test_trace_id_in_server_log(server, caplog):
    caplog.set_level(logging.WARNING, logger="caxton.api.app")
    response = await server.client.get("/agents/agent_missing")
    trace = _error(response, 404, "AGENT_NOT_FOUND")["trace_id"]
    assert any(trace in record.getMessage() for record in caplog.records)
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


async def test_connection_reusable_after_early_error(server):
    """A rejected upload whose body was never read must not hang the client's next request."""
    body = b"\0asm" + b"x" * 3_000_000
    for _ in range(8):
        rejected = await server.client.post(
            "/agents", files={"wasm": ("a.wasm", body)}, headers={"X-Caxton-Token": "wrong-token-0123456789"}
        )
        assert rejected.status_code == 401
        with trio.fail_after(3):
            assert (await server.client.get("/health")).status_code == 200


async def test_deep_content_cannot_break_agent(server):
    agent = await server.deploy(example_bytes("echo"), {"name": "echo"})
    content: list = []
    for _ in range(62):
        content = [content]
    # The body is 64 levels deep, the limit, so it is accepted; the echo's reply wraps the
    # whole message one level deeper, so the host rejects that send and the handler fails.
    receipt = await server.send("echo", content, sender="client_deep")
    messages = await server.wait_for_history(
        lambda m: m and m[0]["status"] != "queued", conversation_id=receipt["conversation_id"]
    )
    assert messages[0]["status"] == "failed"
    assert (await server.client.get(f"/agents/{agent['agent_id']}")).json()["status"] == "running"
    assert (await server.client.get("/messages")).status_code == 200


async def test_start_rejects_fields(server):
    agent = await server.deploy(example_bytes("echo"), {"name": "echo"})
    response = await server.client.post(f"/agents/{agent['agent_id']}/start", json={"x": 1})
    assert "start takes no fields" in _error(response, 400, "INVALID_REQUEST")["message"]


async def test_since_with_unescaped_plus_hints(server):
    response = await server.client.get("/messages?since=2026-01-01T00:00:00+00:00")
    assert "%2B" in _error(response, 400, "INVALID_REQUEST")["message"]
