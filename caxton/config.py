"""Settings: defaults, then a TOML file, then `CAXTON_*` variables, then command-line flags.

Every setting lives in one table below with its section, type and default, so the file
format, the variable names and the error messages all come from one place. A bad value
anywhere raises `SettingsError` naming the setting and where it came from.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import platformdirs

from caxton.domain.resources import parse_cpu, parse_duration, parse_memory, parse_rate

logger = logging.getLogger(__name__)

# Variables the client side reads; the server ignores them instead of reporting them unknown.
CLIENT_VARIABLES = frozenset({"CAXTON_API", "CAXTON_WS", "CAXTON_GRPC", "CAXTON_TIMEOUT", "CAXTON_RETRY_COUNT"})
ROLES = frozenset({"admin", "reader"})


class SettingsError(ValueError):
    """A setting is unknown or has an invalid value; the message names it and its source."""


def _port(value: object) -> int:
    port = _int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0..65535")
    return port


def _int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _positive_int(value: object) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _non_negative_int(value: object) -> int:
    number = _int(value)
    if number < 0:
        raise ValueError(f"must be 0 or more, got {number}")
    return number


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _log_level(value: object) -> str:
    level = _text(value).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"unknown log level {value!r}; use debug, info, warning or error")
    return level


def _token(value: object) -> str:
    token = _text(value)
    if len(token) < 16:
        raise ValueError("tokens must be at least 16 characters")
    return token


@attrs.frozen
class _Setting:
    section: str
    key: str
    parse: Callable[[object], Any]
    default: Any
    # Variable name without the section, for the settings people set most.
    short_variable: str | None = None

    @property
    def attribute(self) -> str:
        return f"{self.section}_{self.key}" if self.section != "server" else self.key

    @property
    def variable(self) -> str:
        return f"CAXTON_{self.section.upper()}_{self.key.upper()}"


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("server", "host", _text, "127.0.0.1", "CAXTON_HOST"),
    _Setting("server", "port", _port, 8080, "CAXTON_PORT"),
    _Setting("server", "data_dir", lambda v: Path(_text(v)).expanduser(), None, "CAXTON_DATA_DIR"),
    _Setting("server", "log_level", _log_level, "INFO", "CAXTON_LOG_LEVEL"),
    _Setting("server", "shutdown_timeout", parse_duration, 30.0),
    _Setting("auth", "token", _token, None, "CAXTON_TOKEN"),
    _Setting("limits", "max_module_size", parse_memory, 16 * 2**20),
    _Setting("limits", "max_request_size", parse_memory, 2**20),
    _Setting("limits", "max_message_size", parse_memory, 256 * 2**10),
    _Setting("limits", "inbox_size", _positive_int, 1000),
    _Setting("limits", "max_outgoing_messages", _positive_int, 100),
    _Setting("agents", "default_memory", parse_memory, 64 * 2**20),
    _Setting("agents", "max_memory", parse_memory, 2**30),
    _Setting("agents", "default_cpu", parse_cpu, 1000),
    _Setting("agents", "default_timeout", parse_duration, 5.0),
    _Setting("agents", "max_timeout", parse_duration, 300.0),
    _Setting("runtime", "memory_reservation", parse_memory, 64 * 2**20),
    _Setting("runtime", "memory_guard_size", parse_memory, 64 * 2**10),
    _Setting("runtime", "workers", _non_negative_int, 0),
    _Setting("runtime", "fuel_per_message", _non_negative_int, 0),
    _Setting("supervision", "max_restarts", _non_negative_int, 5),
    _Setting("supervision", "restart_window", parse_duration, 60.0),
    _Setting("supervision", "backoff_initial", parse_duration, 0.1),
    _Setting("supervision", "backoff_max", parse_duration, 10.0),
    _Setting("rate_limits", "agent_operations", parse_rate, (10, 60.0)),
    _Setting("rate_limits", "messages", parse_rate, (1000, 1.0)),
    _Setting("rate_limits", "metrics", parse_rate, (100, 60.0)),
    _Setting("events", "queue_size", _positive_int, 1000),
    _Setting("metrics", "sample_interval", parse_duration, 10.0),
    _Setting("metrics", "retention", parse_duration, 86400.0),
)
_BY_VARIABLE = {s.variable: s for s in _SETTINGS} | {s.short_variable: s for s in _SETTINGS if s.short_variable}


@attrs.frozen
class ExtraToken:
    name: str
    token: str = attrs.field(repr=False)
    role: str


@attrs.frozen
class Settings:
    host: str
    port: int
    data_dir: Path
    log_level: str
    shutdown_timeout: float
    auth_token: str | None = attrs.field(repr=False)
    limits_max_module_size: int
    limits_max_request_size: int
    limits_max_message_size: int
    limits_inbox_size: int
    limits_max_outgoing_messages: int
    agents_default_memory: int
    agents_max_memory: int
    agents_default_cpu: int
    agents_default_timeout: float
    agents_max_timeout: float
    runtime_memory_reservation: int
    runtime_memory_guard_size: int
    runtime_workers: int
    runtime_fuel_per_message: int
    supervision_max_restarts: int
    supervision_restart_window: float
    supervision_backoff_initial: float
    supervision_backoff_max: float
    rate_limits_agent_operations: tuple[int, float]
    rate_limits_messages: tuple[int, float]
    rate_limits_metrics: tuple[int, float]
    events_queue_size: int
    metrics_sample_interval: float
    metrics_retention: float
    extra_tokens: tuple[ExtraToken, ...] = ()


def default_data_dir() -> Path:
    return platformdirs.user_data_path() / "caxton-data"


def load_settings(
    *, config_file: Path | None = None, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Resolve settings from every source; raise SettingsError on the first bad one."""
    values: dict[str, Any] = {s.attribute: s.default for s in _SETTINGS}
    extra_tokens: tuple[ExtraToken, ...] = ()
    if config_file is not None:
        extra_tokens = _apply_file(values, config_file)
    _apply_environment(values, os.environ if environ is None else environ)
    for attribute, raw in (overrides or {}).items():
        if raw is None:
            continue
        setting = next(s for s in _SETTINGS if s.attribute == attribute)
        values[attribute] = _parse(setting, raw, f"command-line option --{setting.key.replace('_', '-')}")
    if values["data_dir"] is None:
        values["data_dir"] = default_data_dir()
    if values["agents_default_memory"] > values["agents_max_memory"]:
        raise SettingsError("agents.default_memory is above agents.max_memory")
    if values["agents_default_timeout"] > values["agents_max_timeout"]:
        raise SettingsError("agents.default_timeout is above agents.max_timeout")
    return Settings(**values, extra_tokens=extra_tokens)


def _parse(setting: _Setting, raw: object, source: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise SettingsError(f"invalid {setting.section}.{setting.key} from {source}: {exc}") from None


def _apply_file(values: dict[str, Any], path: Path) -> tuple[ExtraToken, ...]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"invalid TOML in config file {path}: {exc}") from None
    known = {(s.section, s.key): s for s in _SETTINGS}
    tokens: tuple[ExtraToken, ...] = ()
    for section, table in document.items():
        if not isinstance(table, dict):
            raise SettingsError(f"{path}: '{section}' must be a [section] table")
        for key, raw in table.items():
            if section == "auth" and key == "tokens":
                tokens = _parse_tokens(raw, path)
                continue
            setting = known.get((section, key))
            if setting is None:
                raise SettingsError(f"{path}: unknown setting {section}.{key}")
            values[setting.attribute] = _parse(setting, raw, str(path))
    return tokens


def _parse_tokens(raw: object, path: Path) -> tuple[ExtraToken, ...]:
    if not isinstance(raw, list):
        raise SettingsError(f"{path}: auth.tokens must be an array of tables")
    tokens = []
    for index, entry in enumerate(raw):
        where = f"{path}: auth.tokens[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "token", "role"}:
            raise SettingsError(f"{where} must be a table with name, token and role")
        role = entry.get("role", "admin")
        if role not in ROLES:
            raise SettingsError(f"{where}.role: unknown role {role!r}; use {' or '.join(sorted(ROLES))}")
        try:
            token = _token(entry.get("token"))
        except ValueError as exc:
            raise SettingsError(f"{where}.token: {exc}") from None
        tokens.append(ExtraToken(name=str(entry.get("name", f"token-{index}")), token=token, role=role))
    return tuple(tokens)


def _apply_environment(values: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith("CAXTON_") or name in CLIENT_VARIABLES:
            continue
        setting = _BY_VARIABLE.get(name)
        if setting is None:
            logger.warning("ignoring unknown environment variable %s", name)
            continue
        values[setting.attribute] = _parse(setting, raw, f"environment variable {name}")
