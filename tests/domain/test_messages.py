"""FIPA-ACL messages: performatives, the JSON form and validation of client and agent input."""

from __future__ import annotations

import json

import pytest

from caxton.domain.errors import InvalidRequest
from caxton.domain.messages import (
    Message,
    Performative,
    check_identity,
    parse_agent_message,
    parse_client_message,
)

MAX_BYTES = 4096


def make_message(**fields) -> Message:
    values = {
        "message_id": "msg_0000000000000001",
        "performative": Performative.REQUEST,
        "sender": "client_001",
        "receiver": "agent_00000000000000aa",
        "conversation_id": "conv_0000000000000001",
        "timestamp": "2024-01-15T10:30:00.000Z",
    }
    values.update(fields)
    return Message(**values)


def client(body: object, size: int = 100):
    return parse_client_message(body, max_bytes=MAX_BYTES, size=size)


def agent(body: object, **options):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_agent_message(raw, max_bytes=MAX_BYTES, **options)


def test_performative_count_is_22():
    assert len(Performative) == 22


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inform", Performative.INFORM),
        ("INFORM", Performative.INFORM),
        ("accept-proposal", Performative.ACCEPT_PROPOSAL),
        ("ACCEPT_PROPOSAL", Performative.ACCEPT_PROPOSAL),
        ("accept_proposal", Performative.ACCEPT_PROPOSAL),
        ("  query-ref ", Performative.QUERY_REF),
    ],
)
def test_performative_parse_accepts_forms(text, expected):
    assert Performative.parse(text) is expected


def test_performative_parse_unknown_raises():
    with pytest.raises(ValueError, match="unknown performative 'shout'"):
        Performative.parse("shout")


def test_performative_parse_non_string_raises():
    with pytest.raises(ValueError, match="expected a string, got int"):
        Performative.parse(3)


def test_message_to_json_lists_every_field():
    body = make_message(content={"a": 1}, protocol="fipa-request").to_json()

    assert body["performative"] == "request"
    assert body["content"] == {"a": 1}
    assert body["protocol"] == "fipa-request"
    assert body["reply_with"] is None
    assert set(body) == {
        "message_id", "performative", "sender", "receiver", "content", "conversation_id",
        "reply_with", "in_reply_to", "reply_by", "protocol", "language", "ontology", "timestamp",
    }


def test_message_encode_is_compact_utf8():
    encoded = make_message(content={"text": "héllo"}).encode()

    assert b'"content":{"text":"h\xc3\xa9llo"}' in encoded
    assert b", " not in encoded
    assert json.loads(encoded)["sender"] == "client_001"


@pytest.mark.parametrize("value", ["client_001", "agent_00ff", "echo", "user@example.org/x:1", "a" * 128])
def test_check_identity_accepts_valid(value):
    assert check_identity("receiver", value) == value


@pytest.mark.parametrize("value", ["", "two words", "-leading-dash", "a" * 129, "tab\there"])
def test_check_identity_rejects_invalid(value):
    with pytest.raises(InvalidRequest) as caught:
        check_identity("receiver", value)

    assert caught.value.field == "receiver"
    assert "invalid identity" in caught.value.reason


def test_check_identity_rejects_non_string():
    with pytest.raises(InvalidRequest, match="expected a string, got int"):
        check_identity("sender", 7)


def test_client_message_minimal_fields():
    draft = client({"performative": "request", "receiver": "echo"})

    assert draft.performative is Performative.REQUEST
    assert draft.receiver == "echo"
    assert draft.sender is None
    assert draft.content is None
    assert draft.conversation_id is None


def test_client_message_keeps_envelope_fields():
    draft = client(
        {
            "performative": "query_ref",
            "receiver": "echo",
            "sender": "client_7",
            "content": [1, "two", None],
            "conversation_id": "conv-1",
            "reply_with": "r-1",
            "in_reply_to": "msg_1",
            "reply_by": "2024-01-15T10:30:00Z",
            "protocol": "fipa-query",
            "language": "json",
            "ontology": "weather",
        }
    )

    assert draft.performative is Performative.QUERY_REF
    assert draft.sender == "client_7"
    assert draft.content == [1, "two", None]
    assert draft.conversation_id == "conv-1"
    assert draft.reply_with == "r-1"
    assert draft.in_reply_to == "msg_1"
    assert draft.reply_by == "2024-01-15T10:30:00Z"
    assert draft.protocol == "fipa-query"
    assert draft.language == "json"
    assert draft.ontology == "weather"


def test_client_message_accepts_id_and_timestamp():
    draft = client(
        {
            "performative": "inform",
            "receiver": "echo",
            "message_id": "msg_forged",
            "timestamp": "2000-01-01T00:00:00Z",
        }
    )

    assert draft.performative is Performative.INFORM


def test_client_message_requires_receiver():
    with pytest.raises(InvalidRequest) as caught:
        client({"performative": "request"})

    assert caught.value.field == "receiver"


def test_client_message_requires_performative():
    with pytest.raises(InvalidRequest) as caught:
        client({"receiver": "echo"})

    assert caught.value.field == "performative"
    assert "missing" in caught.value.reason


def test_client_message_unknown_performative():
    with pytest.raises(InvalidRequest) as caught:
        client({"performative": "yell", "receiver": "echo"})

    assert caught.value.field == "performative"
    assert "'yell'" in caught.value.reason


def test_client_message_unknown_field_named():
    with pytest.raises(InvalidRequest) as caught:
        client({"performative": "inform", "receiver": "echo", "priority": 1})

    assert caught.value.field == "priority"


@pytest.mark.parametrize(
    ("body", "kind"),
    [([1, 2], "an array"), ("text", "a string"), (True, "a boolean"), (3.5, "a number"), (None, "null")],
)
def test_client_message_non_object_kind(body, kind):
    with pytest.raises(InvalidRequest) as caught:
        client(body)

    assert caught.value.field == "body"
    assert caught.value.reason == f"expected a JSON object, got {kind}"


def test_client_message_over_size():
    with pytest.raises(InvalidRequest) as caught:
        client({"performative": "inform", "receiver": "echo"}, size=MAX_BYTES + 1)

    assert caught.value.field == "body"
    assert f"over the {MAX_BYTES}-byte limit" in caught.value.reason


def test_client_message_at_size_limit():
    draft = client({"performative": "inform", "receiver": "echo"}, size=MAX_BYTES)

    assert draft.receiver == "echo"


@pytest.mark.parametrize("reply_by", ["2024-01-15T10:30:00", "tomorrow", "2024-01-15", "Tuesday"])
def test_client_message_invalid_reply_by(reply_by):
    with pytest.raises(InvalidRequest) as caught:
        client({"performative": "request", "receiver": "echo", "reply_by": reply_by})

    assert caught.value.field == "reply_by"


def test_client_message_reply_by_with_offset():
    draft = client({"performative": "request", "receiver": "echo", "reply_by": "2024-01-15T10:30:00+02:00"})

    assert draft.reply_by == "2024-01-15T10:30:00+02:00"


@pytest.mark.parametrize("value", ["", "x" * 257])
def test_client_message_text_field_length(value):
    with pytest.raises(InvalidRequest) as caught:
        client({"performative": "inform", "receiver": "echo", "conversation_id": value})

    assert caught.value.field == "conversation_id"
    assert caught.value.reason == "must be 1 to 256 characters"


def test_client_message_text_field_type():
    with pytest.raises(InvalidRequest) as caught:
        client({"performative": "inform", "receiver": "echo", "ontology": 5})

    assert caught.value.field == "ontology"
    assert caught.value.reason == "expected a string, got int"


def test_client_message_error_text_names_field():
    with pytest.raises(InvalidRequest) as caught:
        client({"performative": "inform", "receiver": "bad receiver"})

    assert str(caught.value).startswith("receiver: ")


def test_agent_message_without_receiver_is_reply():
    draft = agent({"performative": "inform", "content": {"ok": True}})

    assert draft.receiver is None
    assert draft.content == {"ok": True}


def test_agent_message_explicit_receiver():
    draft = agent({"performative": "request", "receiver": "echo"})

    assert draft.receiver == "echo"


def test_agent_message_cannot_forge_host_fields():
    draft = agent(
        {
            "performative": "inform",
            "sender": "someone_else",
            "message_id": "msg_forged",
            "timestamp": "2000-01-01T00:00:00Z",
        }
    )

    assert draft.sender is None


def test_agent_message_default_performative():
    draft = agent({"content": 1}, default_performative=Performative.INFORM)

    assert draft.performative is Performative.INFORM


def test_agent_message_default_keeps_explicit():
    draft = agent({"performative": "failure"}, default_performative=Performative.INFORM)

    assert draft.performative is Performative.FAILURE


def test_agent_message_missing_performative():
    with pytest.raises(InvalidRequest) as caught:
        agent({"content": 1})

    assert caught.value.field == "performative"


@pytest.mark.parametrize(
    "raw", [b"not json", b'{"performative": "inform"', b"", b'{"performative": "inform", "content": "\xc3\x28"}']
)
def test_agent_message_invalid_json(raw):
    with pytest.raises(InvalidRequest) as caught:
        agent(raw)

    assert caught.value.field == "message"
    assert caught.value.reason.startswith("invalid JSON")


def test_agent_message_non_object():
    with pytest.raises(InvalidRequest) as caught:
        agent(b"[1, 2]")

    assert caught.value.field == "body"
    assert caught.value.reason == "expected a JSON object, got an array"


def test_agent_message_over_size():
    raw = json.dumps({"performative": "inform", "content": "x" * MAX_BYTES}).encode()

    with pytest.raises(InvalidRequest) as caught:
        agent(raw)

    assert caught.value.field == "message"
    assert f"{len(raw)} bytes" in caught.value.reason


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_agent_message_rejects_nan(constant):
    with pytest.raises(InvalidRequest):
        agent(b'{"performative": "inform", "content": ' + constant + b"}")
