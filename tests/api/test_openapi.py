"""The OpenAPI document: valid OpenAPI 3.1, true to the route table, and no 5xx for its requests.

The property test drives schemathesis (which sends with `requests`, so it blocks) in a worker
thread, while the server runs on the test's trio loop on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from typing import Any

import attrs
import httpx
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from trio_websocket import open_websocket_url

import caxton.server
from caxton.api.openapi import API_PREFIX, OPENAPI_DOCUMENT
from caxton.domain import errors
from tests.conftest import TOKEN, example_bytes

# Methods that Quart adds to every rule by itself: HEAD to each GET route, OPTIONS everywhere.
AUTOMATIC_METHODS = frozenset({"HEAD", "OPTIONS"})
# Quart adds this rule for an app's `static` folder. Caxton ships no such folder, so the route
# returns 404 NOT_FOUND to every request and the document leaves it out.
STATIC_RULE = "/static/<path:filename>"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
AUTH_HEADERS = {"X-Caxton-Token": TOKEN}
GENEROUS_RATE_LIMITS = {
    "rate_limits_agent_operations": "100000/min",
    "rate_limits_messages": "100000/s",
    "rate_limits_metrics": "100000/min",
}
# Generated cases per operation and generation mode. With 25, the whole property test took
# 18 to 33 s per run on the 2-core development machine.
EXAMPLES_PER_OPERATION = 25
MESSAGE_TARGET = "openapi-echo"
LIFECYCLE_TARGET = "openapi-lifecycle"
CONFORMANCE_CHECKS = (
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)


@pytest.fixture
def served_apps(monkeypatch) -> list:
    """Record every app that `caxton.server.serve` creates, so tests can read its url_map."""
    apps = []
    create_app = caxton.server.create_app

    def recording_create_app(*args, **kwargs):
        app = create_app(*args, **kwargs)
        apps.append(app)
        return app

    monkeypatch.setattr(caxton.server, "create_app", recording_create_app)
    return apps


def _rule_path(rule: str) -> str:
    """Turn a Werkzeug rule such as `/agents/<agent_id>` into the OpenAPI `/agents/{agent_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _app_routes(app) -> tuple[set[tuple[str, str]], set[str]]:
    """Return the (METHOD, path) pairs of the HTTP rules and the paths of the WebSocket rules."""
    routes = set()
    websockets = set()
    for rule in app.url_map.iter_rules():
        if rule.websocket:
            websockets.add(rule.rule)
            continue
        if rule.rule == STATIC_RULE:
            continue
        for method in rule.methods - AUTOMATIC_METHODS:
            routes.add((method, _rule_path(rule.rule)))
    return routes, websockets


def _documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


async def _fetch_document(server) -> httpx.Response:
    response = await server.client.get("/openapi.json")
    assert response.status_code == 200, response.text
    return response


# ---------------------------------------------------------------------------------------------
# Validity and the served document
# ---------------------------------------------------------------------------------------------


def test_document_validates_as_openapi_31():
    assert OPENAPI_DOCUMENT["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(OPENAPI_DOCUMENT).validate()


def test_error_code_enum_lists_every_code():
    defined = {
        value.code
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.CaxtonError) and value is not errors.CaxtonError
    }
    documented = set(OPENAPI_DOCUMENT["components"]["schemas"]["ErrorCode"]["enum"])
    assert documented == defined


async def test_served_document_needs_token(server):
    anonymous = await server.client.get("/openapi.json", headers={"X-Caxton-Token": ""})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "UNAUTHORIZED"

    response = await _fetch_document(server)
    assert response.headers["content-type"] == "application/json"
    assert response.json() == OPENAPI_DOCUMENT
    assert int(response.headers["X-RateLimit-Limit"]) >= 1
    assert "X-RateLimit-Remaining" in response.headers


async def test_served_document_accepts_bearer_token(server):
    response = await server.client.get(
        "/openapi.json", headers={"X-Caxton-Token": "", "Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------------------------
# The document against the route table
# ---------------------------------------------------------------------------------------------


async def test_documented_routes_match_app(served_apps, server):
    document = (await _fetch_document(server)).json()
    assert len(served_apps) == 1
    routes, websockets = _app_routes(served_apps[0])
    documented = _documented_routes(document)

    undocumented = routes - documented
    assert not undocumented, f"routes missing from the OpenAPI document: {sorted(undocumented)}"
    phantom = documented - routes
    assert not phantom, f"documented routes that the app does not have: {sorted(phantom)}"
    assert websockets == {document["x-websocket"]["path"]}


async def test_documented_path_parameters_match_rules(server):
    document = (await _fetch_document(server)).json()
    for path, item in document["paths"].items():
        parameters = [_resolve(document, parameter) for parameter in item.get("parameters", [])]
        declared = {parameter["name"] for parameter in parameters if parameter["in"] == "path"}
        assert declared == set(re.findall(r"{([^}]+)}", path)), path


def _resolve(document: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """Follow one local `$ref` such as `#/components/parameters/Limit`."""
    if "$ref" not in value:
        return value
    node: Any = document
    for part in value["$ref"].removeprefix("#/").split("/"):
        node = node[part]
    return node


async def _exchange(ws, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send_message(json.dumps(frame))
    with trio.fail_after(10):
        return json.loads(await ws.get_message())


async def test_websocket_frames_match_extension(server):
    websocket = OPENAPI_DOCUMENT["x-websocket"]
    client_frames = websocket["clientFrames"]
    server_frames = websocket["serverFrames"]
    event_types = server_frames["event"]["properties"]["type"]["examples"]
    await server.deploy(example_bytes("echo"), {"name": "echo"})
    url = server.running.urls[0].replace("http://", "ws://") + websocket["path"]

    ping = {"type": "ping", "data": {"n": 1}}
    subscribe = {"type": "subscribe", "agents": ["echo"], "events": ["message.*"]}
    unsubscribe = {"type": "unsubscribe"}
    for frame in (ping, subscribe, unsubscribe):
        Draft202012Validator(client_frames[frame["type"]]).validate(frame)

    async with open_websocket_url(url, extra_headers=[("X-Caxton-Token", TOKEN)]) as ws:
        pong = await _exchange(ws, ping)
        Draft202012Validator(server_frames["pong"]).validate(pong)
        subscribed = await _exchange(ws, subscribe)
        Draft202012Validator(server_frames["subscribed"]).validate(subscribed)
        error = await _exchange(ws, {"type": "subscribe", "events": "message.*"})
        Draft202012Validator(server_frames["error"]).validate(error)

        await server.send("echo", {"n": 1}, sender="client_openapi")
        with trio.fail_after(10):
            event = json.loads(await ws.get_message())
        Draft202012Validator(server_frames["event"]).validate(event)
        assert event["type"] in event_types

        await ws.send_message(json.dumps(unsubscribe))
        with trio.fail_after(10):
            while (reply := json.loads(await ws.get_message()))["type"] != "unsubscribed":
                # Events of the exchange above may still arrive before the reply.
                Draft202012Validator(server_frames["event"]).validate(reply)
        Draft202012Validator(server_frames["unsubscribed"]).validate(reply)


# ---------------------------------------------------------------------------------------------
# Generated requests against a live server
# ---------------------------------------------------------------------------------------------


@attrs.define
class Finding:
    """One generated request whose response broke a rule."""

    operation: str
    mode: str
    status: int
    problem: str
    request: str

    def __str__(self) -> str:
        return f"{self.operation} [{self.mode}] -> {self.status}: {self.problem}\n    {self.request}"


@attrs.define
class Run:
    """What the generated requests found, and the statuses per operation."""

    findings: list[Finding] = attrs.field(factory=list)
    statuses: dict[str, Counter] = attrs.field(factory=lambda: defaultdict(Counter))
    without_negative_cases: list[str] = attrs.field(factory=list)

    @property
    def requests(self) -> int:
        return sum(sum(counts.values()) for counts in self.statuses.values())


def _label(operation) -> str:
    return f"{operation.method.upper()} {operation.path}"


def _describe_request(response) -> str:
    request = response.request
    body = request.body
    if isinstance(body, bytes):
        body = body[:300].decode("utf-8", "replace")
    elif isinstance(body, str):
        body = body[:300]
    return f"{request.method} {request.url} body={body!r}"


def _summary(failure: BaseException) -> str:
    lines = [line.strip() for line in str(failure).splitlines() if line.strip()]
    return " | ".join(lines[:4]) or type(failure).__name__


def _operations_in_order(schema) -> list:
    """Every operation, with DELETE last, so the lifecycle agent is removed only at the end."""
    operations = [result.ok() for result in schema.get_all_operations()]
    return sorted(operations, key=lambda operation: operation.method.upper() == "DELETE")


def _path_target(operation) -> str | None:
    """The live agent that about half the cases of an `{agent_id}` route are aimed at."""
    if "{agent_id}" not in operation.path:
        return None
    # Metrics routes only read, so they share the message target. The others may stop or remove it.
    return MESSAGE_TARGET if operation.path.startswith(f"{API_PREFIX}/metrics") else LIFECYCLE_TARGET


def _cases(operation, mode):
    """Build the generated cases, of which about half name a live agent or carry a real module.

    Aimed cases put a live agent in the path, the message target in `receiver`, and the echo
    module in a `wasm` part, so that they get past the lookups and the module check.
    """
    strategy = operation.as_strategy(generation_mode=mode)
    path_target = _path_target(operation)
    sends_messages = _label(operation) == f"POST {API_PREFIX}/messages"
    module = example_bytes("echo")

    def aim(pair):
        case, aimed = pair
        if not aimed:
            return case
        if path_target is not None and "agent_id" in (case.path_parameters or {}):
            case.path_parameters["agent_id"] = path_target
        if sends_messages and isinstance(case.body, dict):
            case.body["receiver"] = MESSAGE_TARGET
        if isinstance(case.body, dict) and "wasm" in case.body:
            case.body["wasm"] = module
        return case

    return st.tuples(strategy, st.booleans()).map(aim)


def _check(case, response, mode, run: Run) -> None:
    """Record a 5xx in any mode, and a response that contradicts the document in positive mode."""
    label = _label(case.operation)
    run.statuses[label][response.status_code] += 1
    if response.status_code >= 500:
        run.findings.append(
            Finding(label, mode.value, response.status_code, response.text[:300], _describe_request(response))
        )
    if mode is not schemathesis.GenerationMode.POSITIVE:
        return
    try:
        case.validate_response(response, checks=list(CONFORMANCE_CHECKS), headers=AUTH_HEADERS)
    except (AssertionError, BaseExceptionGroup) as exc:
        # One failed check raises a Failure (an AssertionError), and several raise a group of them.
        failures = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        for failure in failures:
            run.findings.append(
                Finding(label, mode.value, response.status_code, _summary(failure), _describe_request(response))
            )


def _property_test(operation, mode, base_url: str, run: Run):
    """Build the Hypothesis test that sends generated cases of one operation in one mode."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_cases(operation, mode))
    def send(case) -> None:
        response = case.call(base_url=base_url, headers=AUTH_HEADERS, timeout=60)
        _check(case, response, mode, run)

    return send


def _exercise(schema, base_url: str, run: Run) -> None:
    """Send generated cases for every operation in both modes. Call it in a worker thread."""
    for operation in _operations_in_order(schema):
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                _property_test(operation, mode, base_url, run)()
            except Unsatisfiable:
                # An operation without parameters or body has nothing to make invalid.
                if mode is schemathesis.GenerationMode.POSITIVE:
                    raise
                run.without_negative_cases.append(_label(operation))


async def test_generated_requests_get_no_server_error(start_server):
    server = await start_server(**GENEROUS_RATE_LIMITS)
    async with server.client:
        await server.deploy(example_bytes("echo"), {"name": MESSAGE_TARGET})
        await server.deploy(example_bytes("echo"), {"name": LIFECYCLE_TARGET})
        document = (await _fetch_document(server)).json()
        schema = schemathesis.openapi.from_dict(document)
        run = Run()

        started = time.monotonic()
        await trio.to_thread.run_sync(_exercise, schema, server.running.urls[0], run)
        elapsed = time.monotonic() - started

    print(f"\n{run.requests} generated requests in {elapsed:.1f}s")
    for label, counts in run.statuses.items():
        print(f"  {label}: {dict(sorted(counts.items()))}")
    print(f"  no negative cases for: {', '.join(run.without_negative_cases) or 'none'}")
    report = "\n".join(str(finding) for finding in run.findings)
    assert not run.findings, f"{len(run.findings)} findings:\n{report}"
    # The aimed cases reach a running agent, so sending succeeds at least once.
    assert run.statuses[f"POST {API_PREFIX}/messages"][200] > 0


# ---------------------------------------------------------------------------------------------
# Server errors found outside the generated cases
# ---------------------------------------------------------------------------------------------

# float() of 400 digits is inf, and int(inf) raises OverflowError, not ValueError.
OVERFLOWING_DIGITS = "1" * 400
# json.loads in CPython 3.11 raises RecursionError from 1000 levels of nesting on.
NESTED_DEPTH = 2000


def _deploy_request(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "files": {"wasm": ("echo.wasm", example_bytes("echo"), "application/wasm")},
        "data": {"config": json.dumps(config)},
    }


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _message(**fields: Any) -> dict[str, Any]:
    return {"performative": "request", "receiver": "nobody", **fields}


@pytest.mark.parametrize(
    ("method", "path", "request_args"),
    [
        pytest.param(
            "POST", "/messages", {"json": _message(reply_by="0001-01-01T00:00:00+01:00")},
            id="reply_by-before-year-1-in-utc",
        ),
        pytest.param(
            "GET", "/messages", {"params": {"since": "0001-01-01T00:00:00+01:00"}},
            id="since-before-year-1-in-utc",
        ),
        pytest.param(
            "GET", "/messages", {"params": {"since": "9999-12-31T23:59:59-01:00"}},
            id="since-after-year-9999-in-utc",
        ),
        pytest.param(
            "POST", "/agents", _deploy_request({"resources": {"memory": f"{OVERFLOWING_DIGITS}MB"}}),
            id="memory-overflows-float",
        ),
        pytest.param(
            "POST", "/agents", _deploy_request({"resources": {"cpu": OVERFLOWING_DIGITS}}),
            id="cpu-overflows-float",
        ),
        pytest.param(
            "POST", "/messages",
            {"content": f'{{"performative": "request", "receiver": "nobody", "content": {"[" * NESTED_DEPTH}{"]" * NESTED_DEPTH}}}'},
            id="content-nested-2000-deep",
        ),
        pytest.param(
            "POST", "/messages", {"json": _message(content=_nested(100))},
            id="content-nested-100-deep",
        ),
    ],
)
async def test_invalid_input_gets_400(server, method, path, request_args):
    response = await server.client.request(method, path, **request_args)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
