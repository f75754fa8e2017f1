"""Settings: defaults, then a TOML file, then CAXTON_* variables, then command-line overrides."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from caxton.config import ExtraToken, SettingsError, default_data_dir, load_settings

TOKEN = "admin-token-0123456789"


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "caxton.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_sources():
    settings = load_settings(environ={})

    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.data_dir == default_data_dir()
    assert settings.log_level == "INFO"
    assert settings.shutdown_timeout == 30.0
    assert settings.auth_token is None
    assert settings.limits_max_module_size == 16 * 2**20
    assert settings.limits_max_message_size == 256 * 2**10
    assert settings.limits_inbox_size == 1000
    assert settings.agents_default_memory == 64 * 2**20
    assert settings.agents_default_timeout == 5.0
    assert settings.runtime_workers == 0
    assert settings.extra_tokens == ()


def test_default_data_dir_name():
    assert default_data_dir().name == "caxton-data"


def test_file_overrides_defaults(tmp_path):
    path = write_toml(
        tmp_path,
        """
        [server]
        port = 9000
        log_level = "debug"
        shutdown_timeout = "10s"

        [limits]
        max_message_size = "512KB"
        inbox_size = 50

        [agents]
        default_memory = "32Mi"
        default_cpu = "500m"
        """,
    )

    settings = load_settings(config_file=path, environ={})

    assert settings.port == 9000
    assert settings.log_level == "DEBUG"
    assert settings.shutdown_timeout == 10.0
    assert settings.limits_max_message_size == 512_000
    assert settings.limits_inbox_size == 50
    assert settings.agents_default_memory == 32 * 2**20
    assert settings.agents_default_cpu == 500
    assert settings.host == "127.0.0.1"


def test_environment_overrides_file(tmp_path):
    path = write_toml(tmp_path, "[server]\nport = 9000\nhost = '0.0.0.0'\n")

    settings = load_settings(config_file=path, environ={"CAXTON_PORT": "9100"})

    assert settings.port == 9100
    assert settings.host == "0.0.0.0"


def test_overrides_beat_environment(tmp_path):
    path = write_toml(tmp_path, "[server]\nport = 9000\n")

    settings = load_settings(
        config_file=path, environ={"CAXTON_PORT": "9100"}, overrides={"port": 9200, "host": None}
    )

    assert settings.port == 9200
    assert settings.host == "127.0.0.1"


def test_long_variable_names():
    settings = load_settings(
        environ={
            "CAXTON_SERVER_HOST": "localhost",
            "CAXTON_LIMITS_INBOX_SIZE": "7",
            "CAXTON_AGENTS_MAX_TIMEOUT": "2m",
            "CAXTON_RUNTIME_WORKERS": "3",
        }
    )

    assert settings.host == "localhost"
    assert settings.limits_inbox_size == 7
    assert settings.agents_max_timeout == 120.0
    assert settings.runtime_workers == 3


def test_short_variable_names(tmp_path):
    settings = load_settings(
        environ={
            "CAXTON_HOST": "::1",
            "CAXTON_DATA_DIR": str(tmp_path / "data"),
            "CAXTON_LOG_LEVEL": "warning",
            "CAXTON_TOKEN": TOKEN,
        }
    )

    assert settings.host == "::1"
    assert settings.data_dir == tmp_path / "data"
    assert settings.log_level == "WARNING"
    assert settings.auth_token == TOKEN


def test_data_dir_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))

    settings = load_settings(environ={"CAXTON_DATA_DIR": "~/caxton"})

    assert settings.data_dir == tmp_path / "caxton"


def test_token_hidden_from_repr():
    settings = load_settings(environ={"CAXTON_TOKEN": TOKEN})

    assert TOKEN not in repr(settings)


def test_unknown_variable_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="caxton.config"):
        settings = load_settings(environ={"CAXTON_PROT": "9000"})

    assert settings.port == 8080
    assert "CAXTON_PROT" in caplog.text


def test_client_variables_ignored_quietly(caplog):
    environ = {"CAXTON_API": "http://127.0.0.1:8080", "CAXTON_TIMEOUT": "5", "CAXTON_RETRY_COUNT": "2"}

    with caplog.at_level(logging.WARNING, logger="caxton.config"):
        load_settings(environ=environ)

    assert caplog.records == []


def test_other_variables_ignored():
    settings = load_settings(environ={"PORT": "1", "HOME": "/root", "caxton_port": "2"})

    assert settings.port == 8080


def test_environment_error_names_source():
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"CAXTON_PORT": "eighty"})

    message = str(caught.value)
    assert "server.port" in message
    assert "environment variable CAXTON_PORT" in message
    assert "'eighty'" in message


def test_file_error_names_source(tmp_path):
    path = write_toml(tmp_path, "[limits]\nmax_module_size = \"16 parsecs\"\n")

    with pytest.raises(SettingsError) as caught:
        load_settings(config_file=path, environ={})

    message = str(caught.value)
    assert "limits.max_module_size" in message
    assert str(path) in message


def test_override_error_names_option():
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={}, overrides={"port": 70000})

    message = str(caught.value)
    assert "server.port" in message
    assert "command-line option --port" in message
    assert "outside 0..65535" in message


def test_override_option_spelling():
    with pytest.raises(SettingsError, match="command-line option --data-dir"):
        load_settings(environ={}, overrides={"data_dir": ""})


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
        ("CAXTON_PORT", "-1", "server.port"),
        ("CAXTON_PORT", "true", "server.port"),
        ("CAXTON_LOG_LEVEL", "verbose", "server.log_level"),
        ("CAXTON_TOKEN", "short", "auth.token"),
        ("CAXTON_HOST", "", "server.host"),
        ("CAXTON_LIMITS_INBOX_SIZE", "0", "limits.inbox_size"),
        ("CAXTON_LIMITS_MAX_OUTGOING_MESSAGES", "many", "limits.max_outgoing_messages"),
        ("CAXTON_AGENTS_DEFAULT_CPU", "0m", "agents.default_cpu"),
        ("CAXTON_SERVER_SHUTDOWN_TIMEOUT", "forever", "server.shutdown_timeout"),
        ("CAXTON_RUNTIME_MEMORY_RESERVATION", "64XB", "runtime.memory_reservation"),
    ],
)
def test_invalid_variable_values(variable, value, setting):
    with pytest.raises(SettingsError, match=rf"invalid {setting} from environment variable {variable}"):
        load_settings(environ={variable: value})


def test_port_zero_allowed():
    assert load_settings(environ={"CAXTON_PORT": "0"}).port == 0


def test_toml_bool_port_rejected(tmp_path):
    path = write_toml(tmp_path, "[server]\nport = true\n")

    with pytest.raises(SettingsError, match="invalid server.port"):
        load_settings(config_file=path, environ={})


def test_unknown_file_setting(tmp_path):
    path = write_toml(tmp_path, "[limits]\ninbox = 5\n")

    with pytest.raises(SettingsError, match="unknown setting limits.inbox"):
        load_settings(config_file=path, environ={})


def test_unknown_file_section(tmp_path):
    path = write_toml(tmp_path, "[grpc]\nport = 50051\n")

    with pytest.raises(SettingsError, match="unknown setting grpc.port"):
        load_settings(config_file=path, environ={})


def test_top_level_key_rejected(tmp_path):
    path = write_toml(tmp_path, "port = 9000\n")

    with pytest.raises(SettingsError, match="'port' must be a \\[section\\] table"):
        load_settings(config_file=path, environ={})


def test_invalid_toml(tmp_path):
    path = write_toml(tmp_path, "[server\nport = 1\n")

    with pytest.raises(SettingsError, match="invalid TOML in config file"):
        load_settings(config_file=path, environ={})


def test_missing_config_file(tmp_path):
    path = tmp_path / "absent.toml"

    with pytest.raises(SettingsError) as caught:
        load_settings(config_file=path, environ={})

    assert f"cannot read config file {path}" in str(caught.value)


def test_extra_tokens_parsed(tmp_path):
    path = write_toml(
        tmp_path,
        """
        [auth]
        token = "admin-token-0123456789"

        [[auth.tokens]]
        name = "dashboard"
        token = "reader-token-0123456789"
        role = "reader"

        [[auth.tokens]]
        token = "second-admin-0123456789"
        """,
    )

    settings = load_settings(config_file=path, environ={})

    assert settings.auth_token == TOKEN
    assert settings.extra_tokens == (
        ExtraToken(name="dashboard", token="reader-token-0123456789", role="reader"),
        ExtraToken(name="token-1", token="second-admin-0123456789", role="admin"),
    )


def test_extra_token_hidden_from_repr(tmp_path):
    path = write_toml(tmp_path, '[[auth.tokens]]\nname = "ci"\ntoken = "reader-token-0123456789"\n')

    settings = load_settings(config_file=path, environ={})

    assert "reader-token-0123456789" not in repr(settings)


def test_extra_token_unknown_role(tmp_path):
    path = write_toml(tmp_path, '[[auth.tokens]]\ntoken = "reader-token-0123456789"\nrole = "root"\n')

    with pytest.raises(SettingsError) as caught:
        load_settings(config_file=path, environ={})

    message = str(caught.value)
    assert "auth.tokens[0].role" in message
    assert "'root'" in message


def test_extra_token_too_short(tmp_path):
    path = write_toml(tmp_path, '[[auth.tokens]]\ntoken = "abc"\n')

    with pytest.raises(SettingsError, match=r"auth.tokens\[0\].token: tokens must be at least 16 characters"):
        load_settings(config_file=path, environ={})


def test_extra_token_missing_token(tmp_path):
    path = write_toml(tmp_path, '[[auth.tokens]]\nname = "ci"\n')

    with pytest.raises(SettingsError, match=r"auth.tokens\[0\].token"):
        load_settings(config_file=path, environ={})


def test_extra_token_unknown_key(tmp_path):
    path = write_toml(tmp_path, '[[auth.tokens]]\ntoken = "reader-token-0123456789"\nexpires = 3\n')

    with pytest.raises(SettingsError, match=r"auth.tokens\[0\] must be a table with name, token and role"):
        load_settings(config_file=path, environ={})


def test_extra_tokens_not_array(tmp_path):
    path = write_toml(tmp_path, '[auth]\ntokens = "reader-token-0123456789"\n')

    with pytest.raises(SettingsError, match="auth.tokens must be an array of tables"):
        load_settings(config_file=path, environ={})


def test_default_memory_above_max():
    environ = {"CAXTON_AGENTS_DEFAULT_MEMORY": "2GB", "CAXTON_AGENTS_MAX_MEMORY": "1GB"}

    with pytest.raises(SettingsError, match="agents.default_memory is above agents.max_memory"):
        load_settings(environ=environ)


def test_default_timeout_above_max(tmp_path):
    path = write_toml(tmp_path, '[agents]\ndefault_timeout = "10m"\n')

    with pytest.raises(SettingsError, match="agents.default_timeout is above agents.max_timeout"):
        load_settings(config_file=path, environ={})


def test_workers_zero_means_automatic():
    assert load_settings(environ={"CAXTON_RUNTIME_WORKERS": "0"}).runtime_workers == 0


def test_negative_workers_rejected():
    with pytest.raises(SettingsError, match="runtime.workers"):
        load_settings(environ={"CAXTON_RUNTIME_WORKERS": "-1"})
