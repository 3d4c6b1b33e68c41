"""The smaller findings of issue #21: secrets left in the environment, the internal token in
clear, audit lines without their caller, a world-readable data directory, and an instance
left BLOCKED by a decrypt error after the right key is back."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from cryptography.fernet import Fernet

from listener.v1 import listener_instance_pb2 as li_pb2
from listener.v1 import plugin_pb2
from listener_core import logs
from listener_core import server as grpc_server
from listener_core.auth import BearerToken
from tests.plugins.support import package
from tests.support.databases import sqlite_url
from tests.support.servers import Clients, ServerPair, eventually, running_pair

STATE = li_pb2.ListenerInstance.State


def test_secret_variables_are_removed_from_the_environment_once_read() -> None:
    environ = {
        "LISTENER_TOKENS": "admin:a",
        "LISTENER_INTERNAL_TOKEN": "i",
        "LISTENER_SECRET_KEY": "k",
        "LISTENER_DB_URL": "sqlite+aiosqlite:///x",
        "PATH": "/usr/bin",
    }
    removed = grpc_server.forget_secret_variables(environ)
    assert sorted(removed) == ["LISTENER_INTERNAL_TOKEN", "LISTENER_SECRET_KEY", "LISTENER_TOKENS"]
    assert environ == {"LISTENER_DB_URL": "sqlite+aiosqlite:///x", "PATH": "/usr/bin"}


def test_the_servers_forget_their_secret_variables_at_start() -> None:
    """Both mains call it right after the config is read (the source says so)."""
    for module in ("api_server/app.py", "alert_server/app.py"):
        text = (Path(__file__).resolve().parents[2] / module).read_text()
        main = text[text.index("def main(") :]
        read = main.index("load_config(")
        assert read < main.index("forget_secret_variables()") < main.index("grpc_server.run(")


def test_the_internal_token_in_clear_off_loopback_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "listener_core.server"):
        grpc_server.warn_plaintext_internal_token(["127.0.0.1:1"], tls=False, what="t")
        assert not caplog.records
        grpc_server.warn_plaintext_internal_token(["10.1.2.3:50052"], tls=True, what="t")
        assert not caplog.records
        grpc_server.warn_plaintext_internal_token(
            ["127.0.0.1:1", "10.1.2.3:50052"], tls=False, what="alert targets"
        )
    [record] = caplog.records
    assert "10.1.2.3:50052" in record.getMessage() and "in clear" in record.getMessage()


async def test_the_api_server_warns_at_start_about_a_plaintext_internal_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with running_pair(sqlite_url(tmp_path), tmp_path, internal_token="tok-1") as pair:
            # The pair's alert target is on loopback: no warning for it.
            assert not [r for r in caplog.records if "in clear" in r.getMessage()]
            assert pair.api.config.security.internal_token == "tok-1"


def test_a_world_readable_data_dir_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "listener.db"
    db.write_bytes(b"")
    data.chmod(0o700)
    db.chmod(0o600)
    url = f"sqlite+aiosqlite:///{db}"
    with caplog.at_level(logging.WARNING, "listener_core.server"):
        grpc_server.check_data_dir(str(data), url)
        assert not caplog.records
        db.chmod(0o644)  # as SQLite creates it: others cannot enter the directory, no alarm
        grpc_server.check_data_dir(str(data), url)
        assert not caplog.records
        data.chmod(0o755)
        db.chmod(0o644)
        grpc_server.check_data_dir(str(data), url)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith(f"{data} is accessible") and "chmod 700" in messages[0]
    assert messages[1].startswith(f"{db} is accessible")


async def test_audit_lines_in_text_carry_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    formatter = logging.Formatter(logs.TEXT_FORMAT)
    async with running_pair(sqlite_url(tmp_path), tmp_path, tokens=("admin:adm-aud-1",)) as pair:
        channel = grpc.aio.insecure_channel(pair.api_addr, interceptors=[BearerToken("adm-aud-1")])
        try:
            with caplog.at_level(logging.INFO, "listener.audit"):
                await Clients(channel).plugins.DeletePlugin(
                    plugin_pb2.DeletePluginRequest(name="plugins/nothing-here")
                )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await channel.close()
    [line] = [formatter.format(r) for r in caplog.records if r.name == "listener.audit"]
    assert "DeletePlugin plugins/nothing-here: NOT_FOUND by token:" in line
    assert "adm-aud-1" not in line


async def test_an_instance_blocked_by_a_wrong_key_recovers_when_the_key_is_back(
    tmp_path: Path,
) -> None:
    """Without waiting for an event: its status clears as soon as it starts."""
    data = tmp_path / "data"
    servers = ServerPair(sqlite_url(data), data)
    servers.start_both()
    channel = grpc.aio.insecure_channel(servers.api_addr)
    try:
        c = Clients(channel)
        await c.plugins.CreatePlugin(
            plugin_pb2.CreatePluginRequest(package=package("webhook", tmp_path))
        )
        await c.instances.CreateListenerInstance(
            li_pb2.CreateListenerInstanceRequest(
                listener_instance_id="hook",
                listener_instance=li_pb2.ListenerInstance(
                    plugin="plugins/webhook",
                    params={"url": "http://127.0.0.1:9/hook?token=t"},  # a secret param
                    event_types=[1],
                ),
            )
        )

        async def instance() -> li_pb2.ListenerInstance:
            return await c.instances.GetListenerInstance(
                li_pb2.GetListenerInstanceRequest(name="listenerInstances/hook")
            )

        async def restart_alert(key: str) -> None:
            servers.kill("alert_server")
            servers.spawn(
                "alert_server", "alert_server", servers.alert_addr, LISTENER_SECRET_KEY=key
            )

        await restart_alert(Fernet.generate_key().decode())  # the wrong key

        async def blocked() -> bool:
            got = await instance()
            return got.state == STATE.STATE_BLOCKED and "decrypted" in got.delivery.last_error

        await eventually(blocked, timeout=60, interval=0.2)

        await restart_alert(servers.secret_key)  # the right one again; no event published

        async def recovered() -> bool:
            got = await instance()
            return got.state == STATE.STATE_ACTIVE and got.delivery.last_error == ""

        await eventually(recovered, timeout=60, interval=0.2)
    finally:
        await channel.close()
        servers.stop()
