"""Configuration: defaults, file then environment, and every mistake stopping the server at
start with the key, the value, where it came from and what is allowed."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from listener_core.config import (
    KEYS,
    OTHER_TOOLS_ENV,
    OTHER_TOOLS_ENV_PREFIXES,
    Config,
    ConfigError,
    load_config,
)
from listener_core.settings import DeliverySettings, ProcessConfig, SettingError
from tests.support.servers import REPO


def test_defaults_just_work() -> None:
    config = load_config(env={})
    assert config.listen.api_addr == "127.0.0.1:50051"
    assert config.listen.http_addr == "127.0.0.1:8080"
    assert config.fleet.alert_targets == () and config.discovers_alert_servers
    assert config.store.database_url == "sqlite+aiosqlite:///data/listener.db"
    assert config.runtime.event_loop == "uvloop"
    assert config == Config()


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "listener.toml"
    path.write_text(
        'api_addr = "0.0.0.0:7000"\nhandler_timeout = 5\nalert_targets = ["a:1", "b:2"]\n'
        "delivery_batch = 50\n"
    )
    env = {"LISTENER_HANDLER_TIMEOUT": "2.5", "LISTENER_DB_URL": "postgresql://h/db"}
    config = load_config(path, env=env)
    assert config.listen.api_addr == "0.0.0.0:7000"
    # One key, both sections that need it.
    assert config.delivery.handler_timeout == 2.5 == config.process.call_timeout
    assert config.delivery.batch_size == 50
    assert config.fleet.alert_targets == ("a:1", "b:2") and not config.discovers_alert_servers
    assert config.store.database_url == "postgresql://h/db"
    env_targets = load_config(env={"LISTENER_ALERT_TARGETS": "h1:1, h2:2"})
    assert env_targets.fleet.alert_targets == ("h1:1", "h2:2")
    assert load_config(env={"LISTENER_LOG_LEVEL": "debug"}).logging.level == "DEBUG"


def _refused(path: Path | None = None, env: dict[str, str] | None = None, **keys: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {}, **keys)
    return str(caught.value)


def test_unknown_keys_stop_the_server(tmp_path: Path) -> None:
    path = tmp_path / "listener.toml"
    path.write_text('db_ulr = "postgresql://h/db"\n')
    said = _refused(path)
    assert "unknown key 'db_ulr'" in said and str(path) in said
    assert "did you mean 'db_url'?" in said
    said = _refused(env={"LISTENER_DELIVRY_BATCH": "5"})
    assert "unknown environment variable LISTENER_DELIVRY_BATCH" in said
    assert "did you mean LISTENER_DELIVERY_BATCH?" in said


def test_other_tools_variables_are_not_mistakes() -> None:
    env = {
        "LISTENER_SERVER": "h:1",
        "LISTENER_TOKEN": "t",
        "LISTENER_ADMIN_TOKEN": "t",
        "LISTENER_TEST_PG": "h:5432",
        "LISTENER_DB_URL": "",  # empty: unset, as a compose file's blank leaves it
    }
    assert load_config(env=env) == Config()


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("delivery_batch", "-5", "an integer, >= 1"),
        ("lease_ttl", "0", "a number, > 0"),
        ("log_level", "LOUD", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("log_format", "xml", "one of text, json"),
        ("event_loop", "libuv", "one of uvloop, asyncio"),
        ("handler_timeout", "soon", "a number"),
        ("api_addr", "localhost", "host:port"),
        ("alert_targets", "a:1,b", "host:port entries"),
        ("http_addr", "8080", "host:port, or off"),
        ("insecure", "maybe", "true or false"),
        ("progress_interval", "-1", ">= 0"),
        ("db_url", "postgres-is-here", "postgresql://"),
        ("stream_window_bytes", "1024", "0, or 65535 to 2147483647"),
    ],
)
def test_invalid_values_name_key_value_source_and_allowed(
    key: str, value: str, allowed: str
) -> None:
    name = f"LISTENER_{key.upper()}"
    said = _refused(env={name: value})
    shown = "(hidden)" if key == "db_url" else repr(value)  # as written
    assert f"{key} = {shown}" in said, said
    assert f"environment {name}" in said and allowed in said, said


def test_file_values_are_checked_too_and_all_mistakes_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "listener.toml"
    path.write_text('delivery_batch = -5\nlease_ttl = 0\nlog_level = "LOUD"\nretry_base = "1"\n')
    said = _refused(path)
    for key in ("delivery_batch = -5", "lease_ttl = 0", "log_level = 'LOUD'", "retry_base = '1'"):
        assert key in said, said
    assert said.count(f"file {path}") == 4
    assert "retry_max = 1 (argument): allowed: a number, >= retry_base (2)" in _refused(
        retry_base=2, retry_max=1
    )


def test_secrets_stay_out_of_messages_and_reprs() -> None:
    said = _refused(env={"LISTENER_DB_URL": "oracle://user:hunter2@h/db"})
    assert "hunter2" not in said and "db_url = (hidden)" in said
    config = Config.from_keys(
        tokens=("admin:tok-123",), internal_token="int-456", secret_key="key-789"
    )
    assert not {"tok-123", "int-456", "key-789"} & set(repr(config).replace("'", " ").split())


def test_sections_hold_their_own_rules() -> None:
    with pytest.raises(SettingError, match="delivery_batch = -5"):
        DeliverySettings(batch_size=-5)
    assert ProcessConfig().call_timeout == DeliverySettings().handler_timeout


def test_every_key_sets_a_section_field_and_defaults_agree() -> None:
    """A key that sets two fields (handler_timeout) has one default."""
    for key, targets in KEYS.items():
        defaults = {
            next(
                f
                for f in dataclasses.fields(type(getattr(Config(), t.section)))
                if f.name == t.name
            ).default
            for t in targets
        }
        assert len(defaults) == 1, key


def test_a_misspelt_key_stops_the_real_server(tmp_path: Path) -> None:
    path = tmp_path / "listener.toml"
    path.write_text(f'db_ulr = "postgresql://h/db"\ndata_dir = "{tmp_path}"\n')
    for module in ("api_server", "alert_server"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--config", str(path)],
            cwd=REPO,
            env={"PATH": "/usr/bin:/bin", "LISTENER_DELIVERY_BATCH": "0"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0
        assert "unknown key 'db_ulr'" in proc.stderr, proc.stderr
        assert "delivery_batch = '0' (environment LISTENER_DELIVERY_BATCH)" in proc.stderr
        assert not (tmp_path / "listener.db").exists()  # nothing was opened


def test_bad_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("api_addr = [")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(bad, env={})


def test_advertised_address_replaces_a_wildcard_host() -> None:
    import socket

    from alert_server.app import advertised_address

    assert advertised_address("0.0.0.0:0", 50052) == f"{socket.gethostname()}:50052"
    assert advertised_address("[::]:50052", 50052) == f"{socket.gethostname()}:50052"
    assert advertised_address("127.0.0.1:0", 4711) == "127.0.0.1:4711"
    assert advertised_address("0.0.0.0:50052", 50052, "10.1.2.3:50052") == "10.1.2.3:50052"


def test_every_listener_variable_the_repository_names_is_a_key_or_another_tools() -> None:
    """A variable that listenerctl, the compose file, the docs or the tests use must not stop
    a server started from the same shell; a new one is added to OTHER_TOOLS_ENV."""
    named: set[str] = set()
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        path = REPO / name
        if not path.is_file() or path.suffix not in (".py", ".md", ".yml", ".toml", ".sh", ""):
            continue
        named |= set(
            re.findall(r"(?<![A-Z_])LISTENER_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="replace"))
        )
    documented_mistakes = {"LISTENER_DELIVRY_BATCH"}  # this file's example of a typo
    refused = [
        name
        for name in sorted(named - documented_mistakes)
        if not (name + "_").startswith(OTHER_TOOLS_ENV_PREFIXES)
        and name not in OTHER_TOOLS_ENV
        and name.removeprefix("LISTENER_").lower() not in KEYS
    ]
    assert not refused, f"servers would refuse these variables: {refused}"
