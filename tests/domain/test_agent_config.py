"""Agent deploy configs: names, defaults from the limit policy and field-naming errors."""

from __future__ import annotations

import re

import pytest

from caxton.domain.agents import (
    AgentConfig,
    AgentStatus,
    LimitPolicy,
    Limits,
    check_name,
    name_from_filename,
    parse_config,
)
from caxton.domain.errors import InvalidRequest

POLICY = LimitPolicy(
    default_memory=64 * 2**20,
    max_memory=256 * 10**6,
    default_cpu=1000,
    default_timeout=5.0,
    max_timeout=60.0,
)


def parse(raw: object, filename: str | None = "agent.wasm") -> AgentConfig:
    return parse_config(raw, filename=filename, policy=POLICY)


def error_field(raw: object) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse(raw)
    return caught.value.field


def test_agent_status_values():
    assert [status.value for status in AgentStatus] == ["starting", "running", "stopping", "stopped", "failed"]


@pytest.mark.parametrize(
    "name", ["echo", "my-agent", "a", "Agent.v2_beta", "9lives", "x" * 63, "agent-1", "agent_123", "agent_fast"]
)
def test_check_name_accepts_valid(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-echo", ".hidden", "two words", "x" * 64, "agent_0123456789abcdef", "echo/1"])
def test_check_name_rejects_invalid(name):
    with pytest.raises(InvalidRequest) as caught:
        check_name(name)

    assert caught.value.field == "config.name"
    assert "invalid agent name" in caught.value.reason


def test_check_name_rejects_non_string():
    with pytest.raises(InvalidRequest, match="expected a string, got int"):
        check_name(42)


def test_check_name_custom_field():
    with pytest.raises(InvalidRequest) as caught:
        check_name("", field="name")

    assert caught.value.field == "name"


@pytest.mark.parametrize(
    ("filename", "stem"),
    [
        ("echo.wasm", "echo"),
        ("/uploads/my agent!.wasm", "my-agent"),
        ("agent_foo.wasm", "agent_foo"),
        ("_agent_foo.wasm", "agent_foo"),
        ("agent_0123456789abcdef.wasm", "agent_0123456789abcdef"),
        ("---.wasm", "agent"),
        (None, "agent"),
        ("", "agent"),
    ],
)
def test_name_from_filename_stem(filename, stem):
    name = name_from_filename(filename)

    assert re.fullmatch(rf"{re.escape(stem)}-[0-9a-f]{{6}}", name), name
    assert check_name(name) == name


def test_name_from_filename_long_stem_cut():
    name = name_from_filename("x" * 100 + ".wasm")

    assert name.startswith("x" * 40 + "-")
    assert len(name) == 47


def test_name_from_filename_unique():
    names = {name_from_filename("echo.wasm") for _ in range(20)}

    assert len(names) == 20


def test_parse_config_none_uses_defaults():
    config = parse(None, filename="echo.wasm")

    assert config.name.startswith("echo-")
    assert config.version == "1.0.0"
    assert config.description is None
    assert config.limits == Limits(memory=POLICY.default_memory, cpu=1000, timeout=5.0)
    assert config.memory_text == "64Mi"
    assert config.cpu_text == "1000m"


def test_parse_config_full():
    config = parse(
        {
            "name": "worker",
            "version": "2.1.0",
            "description": "does work",
            "resources": {"memory": "50MB", "cpu": "250m", "timeout": "500ms"},
        }
    )

    assert config.name == "worker"
    assert config.version == "2.1.0"
    assert config.description == "does work"
    assert config.limits == Limits(memory=50 * 10**6, cpu=250, timeout=0.5)


def test_parse_config_echoes_resource_text():
    config = parse({"name": "worker", "resources": {"memory": "64Mi", "cpu": "0.5"}})

    assert config.limits.memory == 64 * 2**20
    assert config.limits.cpu == 500
    assert config.memory_text == "64Mi"
    assert config.cpu_text == "0.5"


def test_config_to_json():
    config = parse({"name": "worker", "version": "3", "resources": {"memory": "50MB", "timeout": "500ms"}})

    assert config.to_json() == {
        "name": "worker",
        "version": "3",
        "description": None,
        "resources": {"memory": "50MB", "cpu": "1000m", "timeout": "0.5s", "fuel": 0},
    }


def test_parse_config_non_object():
    assert error_field(["name"]) == "config"


def test_parse_config_unknown_field():
    with pytest.raises(InvalidRequest) as caught:
        parse({"name": "worker", "replicas": 3})

    assert caught.value.field == "config.replicas"
    assert "allowed: description, name, resources, version" in caught.value.reason


def test_parse_config_invalid_name():
    assert error_field({"name": "agent_00000000000000aa"}) == "config.name"


@pytest.mark.parametrize("version", ["", "v" * 65, 2, None])
def test_parse_config_invalid_version(version):
    assert error_field({"version": version}) == "config.version"


def test_parse_config_description_limit():
    config = parse({"description": "d" * 1024})

    assert len(config.description) == 1024
    assert error_field({"description": "d" * 1025}) == "config.description"


def test_parse_config_description_type():
    assert error_field({"description": 5}) == "config.description"


def test_parse_config_resources_not_object():
    assert error_field({"resources": "50MB"}) == "config.resources"


def test_parse_config_unknown_resource():
    assert error_field({"resources": {"gpu": 1}}) == "config.resources.gpu"


def test_parse_config_invalid_memory():
    with pytest.raises(InvalidRequest) as caught:
        parse({"resources": {"memory": "50XB"}})

    assert caught.value.field == "config.resources.memory"
    assert "unknown memory unit 'XB'" in caught.value.reason


def test_parse_config_memory_above_max():
    with pytest.raises(InvalidRequest) as caught:
        parse({"resources": {"memory": "1GB"}})

    assert caught.value.field == "config.resources.memory"
    assert f"server maximum of {POLICY.max_memory} bytes" in caught.value.reason


def test_parse_config_memory_at_max():
    config = parse({"resources": {"memory": "256MB"}})

    assert config.limits.memory == POLICY.max_memory


def test_parse_config_invalid_cpu():
    assert error_field({"resources": {"cpu": "fast"}}) == "config.resources.cpu"


def test_parse_config_invalid_timeout():
    assert error_field({"resources": {"timeout": "soon"}}) == "config.resources.timeout"


def test_parse_config_timeout_above_max():
    with pytest.raises(InvalidRequest) as caught:
        parse({"resources": {"timeout": "2m"}})

    assert caught.value.field == "config.resources.timeout"
    assert caught.value.reason == "120s is above the server maximum of 60s"


@pytest.mark.parametrize("fuel", [-1, 1.5, "lots", True, 2**63])
def test_fuel_must_be_a_bounded_integer(fuel):
    with pytest.raises(InvalidRequest) as caught:
        parse({"name": "worker", "resources": {"fuel": fuel}})
    assert caught.value.field == "config.resources.fuel"


def test_fuel_budget_parsed():
    assert parse({"name": "worker", "resources": {"fuel": 5000}}).limits.fuel == 5000
