"""Agent configuration and status: the deploy-time contract, validated at the boundary."""

from __future__ import annotations

import enum
import re
import secrets
from pathlib import PurePath
from typing import Any

import attrs

from caxton.domain.errors import InvalidRequest
from caxton.domain.resources import format_memory_exact, parse_cpu, parse_duration, parse_memory

# Names are used in URLs, logs and as message receivers.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# The shape of a generated agent id, which a name may not take.
_ID_SHAPE = re.compile(r"^agent_[0-9a-f]{16}$")
_CONFIG_FIELDS = frozenset({"name", "version", "description", "resources"})
_RESOURCE_FIELDS = frozenset({"memory", "cpu", "timeout", "fuel"})
# Largest fuel budget per message; wasmtime counts fuel in a signed 64-bit integer.
MAX_FUEL = 2**62
_MAX_DESCRIPTION = 1024


class AgentStatus(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@attrs.frozen
class Limits:
    """Per-agent budgets: bytes of linear memory, CPU millicores, seconds and fuel per message.

    `fuel` 0 means no fuel budget: only the time limit bounds a handler.
    """

    memory: int
    cpu: int
    timeout: float
    fuel: int = 0


@attrs.frozen
class AgentConfig:
    """The configuration a deploy requests, after validation and defaults."""

    name: str
    limits: Limits
    version: str = "1.0.0"
    description: str | None = None
    # The resource strings as given, so details can echo the caller's own units.
    memory_text: str = ""
    cpu_text: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "resources": {
                "memory": self.memory_text,
                "cpu": self.cpu_text,
                "timeout": f"{self.limits.timeout:g}s",
                "fuel": self.limits.fuel,
            },
        }


@attrs.frozen
class LimitPolicy:
    """Server-wide defaults and ceilings that every config is checked against."""

    default_memory: int
    max_memory: int
    default_cpu: int
    default_timeout: float
    max_timeout: float
    default_fuel: int = 0


def check_name(name: object, field: str = "config.name") -> str:
    if not isinstance(name, str):
        raise InvalidRequest(field, f"expected a string, got {type(name).__name__}")
    if not _NAME.match(name) or _ID_SHAPE.match(name):
        raise InvalidRequest(
            field,
            f"invalid agent name {name[:80]!r}: use 1 to 63 letters, digits or ._- starting "
            "with a letter or digit, not shaped like an agent id (agent_ and 16 hex digits)",
        )
    return name


def name_from_filename(filename: str | None) -> str:
    """Derive a unique name from an upload's file name: `echo.wasm` becomes `echo-3fa9c1`."""
    stem = PurePath(filename or "").stem if filename else ""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:40] or "agent"
    return f"{stem}-{secrets.token_hex(3)}"


def parse_config(raw: object, *, filename: str | None, policy: LimitPolicy) -> AgentConfig:
    """Validate a deploy config object; raise InvalidRequest naming the first bad field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidRequest("config", "expected a JSON object")
    unknown = sorted(set(raw) - _CONFIG_FIELDS)
    if unknown:
        raise InvalidRequest(f"config.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(_CONFIG_FIELDS))}")

    name = check_name(raw["name"]) if "name" in raw else name_from_filename(filename)
    version = raw.get("version", "1.0.0")
    if not isinstance(version, str) or not 0 < len(version) <= 64:
        raise InvalidRequest("config.version", "expected a string of 1 to 64 characters")
    description = raw.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > _MAX_DESCRIPTION):
        raise InvalidRequest("config.description", f"expected a string of at most {_MAX_DESCRIPTION} characters")

    resources = raw.get("resources", {})
    if not isinstance(resources, dict):
        raise InvalidRequest("config.resources", "expected a JSON object")
    unknown = sorted(set(resources) - _RESOURCE_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"config.resources.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(_RESOURCE_FIELDS))}"
        )
    limits, memory_text, cpu_text = _parse_limits(resources, policy)
    return AgentConfig(
        name=name, version=version, description=description, limits=limits,
        memory_text=memory_text, cpu_text=cpu_text,
    )


def _parse_limits(resources: dict[str, Any], policy: LimitPolicy) -> tuple[Limits, str, str]:
    try:
        memory = parse_memory(resources["memory"]) if "memory" in resources else policy.default_memory
    except ValueError as exc:
        raise InvalidRequest("config.resources.memory", str(exc)) from None
    if memory > policy.max_memory:
        raise InvalidRequest(
            "config.resources.memory", f"{resources['memory']!r} is above the server maximum of {policy.max_memory} bytes"
        )
    try:
        cpu = parse_cpu(resources["cpu"]) if "cpu" in resources else policy.default_cpu
    except ValueError as exc:
        raise InvalidRequest("config.resources.cpu", str(exc)) from None
    try:
        timeout = parse_duration(resources["timeout"]) if "timeout" in resources else policy.default_timeout
    except ValueError as exc:
        raise InvalidRequest("config.resources.timeout", str(exc)) from None
    if timeout > policy.max_timeout:
        raise InvalidRequest(
            "config.resources.timeout", f"{timeout:g}s is above the server maximum of {policy.max_timeout:g}s"
        )
    fuel = resources.get("fuel", policy.default_fuel)
    if isinstance(fuel, bool) or not isinstance(fuel, int) or not 0 <= fuel <= MAX_FUEL:
        raise InvalidRequest("config.resources.fuel", f"expected an integer from 0 (no budget) to {MAX_FUEL}")
    memory_text = str(resources.get("memory", "")) or format_memory_exact(memory)
    cpu_text = str(resources.get("cpu", "")) or f"{cpu}m"
    return Limits(memory=memory, cpu=cpu, timeout=timeout, fuel=fuel), memory_text, cpu_text

