from __future__ import annotations

from pathlib import Path

import pytest

from listener_core.config import ConfigError, load_config


def test_defaults_just_work() -> None:
    config = load_config(env={})
    assert config.api_addr == "127.0.0.1:50051"
    assert config.alert_targets == () and config.discovers_alert_servers
    assert config.database_url == "sqlite+aiosqlite:///data/listener.db"


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "listener.toml"
    path.write_text(
        'api_addr = "0.0.0.0:7000"\nhandler_timeout = 5\nalert_targets = ["a:1", "b:2"]\n'
    )
    config = load_config(path, env={"LISTENER_HANDLER_TIMEOUT": "2.5", "LISTENER_DB_URL": "x://"})
    assert config.api_addr == "0.0.0.0:7000"
    assert config.handler_timeout == 2.5
    assert config.alert_targets == ("a:1", "b:2")
    assert config.database_url == "x://"
    env_targets = load_config(env={"LISTENER_ALERT_TARGETS": "h1:1, h2:2"})
    assert env_targets.alert_targets == ("h1:1", "h2:2")


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="handler_timeout"):
        load_config(env={"LISTENER_HANDLER_TIMEOUT": "soon"})
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
