"""Bearer tokens and roles on the API server, the internal token on the alert server, and the
refusal to serve an open API on a public address."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from alert_server import app as alert_app
from api_server import app as api_app
from listener.alert.v1 import plugin_host_pb2, plugin_host_pb2_grpc
from listener.v1 import event_service_pb2, plugin_pb2, plugin_pb2_grpc
from listener_core import auth
from listener_core.config import Config, ConfigError, load_config
from tests.security.helpers import (
    INTERNAL_SERVICE,
    bearer,
    call_code,
    details,
    method_path,
    public_methods,
)
from tests.support.databases import sqlite_url
from tests.support.samples import logger_package, sample_event
from tests.support.servers import REPO, eventually, free_port, running_pair, wait_serving

TOKENS = {"admin": "adm-7f3a", "publisher": "pub-91bc", "viewer": "view-22de"}
TOKEN_CONFIG = (
    f"admin:{TOKENS['admin']}",
    f"publisher:sha256:{hashlib.sha256(TOKENS['publisher'].encode()).hexdigest()}",
    f"viewer:{TOKENS['viewer']}",
)

# What the issue asks, written out independently of listener_core.auth's table: viewers read,
# publishers publish, admins do everything.
VIEWER_METHODS = {
    "GetPlugin",
    "ListPlugins",
    "GetListenerInstance",
    "ListListenerInstances",
    "ListEvents",
    "ListParkedEvents",
    "GetCaller",
}
PUBLISHER_METHODS = {"PublishEvent", "PublishEvents", "GetCaller"}
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


# -- the table ----------------------------------------------------------------------------


def test_the_role_table_lists_every_public_method_and_nothing_else() -> None:
    paths = {method_path(m) for m in public_methods()}
    assert set(auth.PUBLIC_METHOD_ROLES) == paths
    for path, roles in auth.PUBLIC_METHOD_ROLES.items():
        assert auth.ADMIN in roles, path
        assert roles <= auth.PUBLIC_ROLES, path


def test_the_internal_table_lists_every_alert_server_method() -> None:
    paths = {method_path(m) for m in INTERNAL_SERVICE.methods}
    assert set(auth.INTERNAL_METHOD_ROLES) == paths
    assert all(roles == {auth.INTERNAL} for roles in auth.INTERNAL_METHOD_ROLES.values())


# -- tokens -------------------------------------------------------------------------------


def test_tokens_are_held_as_digests_and_matched() -> None:
    table = auth.TokenTable.parse(TOKEN_CONFIG)
    assert len(table) == 3
    caller = table.identify(TOKENS["publisher"])  # configured as a sha256 digest
    assert caller is not None and caller.role == "publisher"
    assert table.identify("adm-7f3") is None
    assert table.identify("") is None
    redacted = table.redacted()
    assert all(":sha256:" in entry for entry in redacted)
    assert not any(token in "".join(redacted) for token in TOKENS.values())
    assert auth.TokenTable.parse(redacted).identify(TOKENS["admin"]).role == "admin"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("root:abc", "unknown role 'root'"),
        ("admin", "expected 'role:token'"),
        ("admin:", "expected 'role:token'"),
        ("viewer:sha256:abcd", "64 hex digits"),
    ],
)
def test_bad_token_entries_are_config_errors_that_do_not_echo_the_token(
    spec: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        auth.TokenTable.parse(["admin:fine", spec])
    assert "tokens[1]" in str(caught.value)
    assert "fine" not in str(caught.value)


def test_tokens_from_env_toml_table_and_array(tmp_path: Path) -> None:
    env = load_config(env={"LISTENER_TOKENS": "admin:a1, viewer:v1", "LISTENER_INSECURE": "yes"})
    assert env.security.tokens == ("admin:a1", "viewer:v1")
    assert env.security.insecure is True
    path = tmp_path / "c.toml"
    path.write_text('insecure = false\n[tokens]\nadmin = "a1"\npublisher = ["p1", "p2"]\n')
    table = load_config(path, env={})
    assert table.security.tokens == ("admin:a1", "publisher:p1", "publisher:p2")
    assert table.security.insecure is False
    path.write_text('tokens = ["viewer:v9"]\n')
    assert load_config(path, env={}).security.tokens == ("viewer:v9",)
    with pytest.raises(ConfigError, match="insecure"):
        load_config(env={"LISTENER_INSECURE": "maybe"})


def test_config_repr_hides_secrets() -> None:
    config = Config.from_keys(
        tokens=("admin:tok-123",), internal_token="int-456", secret_key="key-789"
    )
    text = repr(config)
    assert "tok-123" not in text and "int-456" not in text and "key-789" not in text


def test_bearer_parsing() -> None:
    assert auth.bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert auth.bearer_token([("authorization", "bearer  abc ")]) == "abc"
    assert auth.bearer_token([("authorization", "Basic abc")]) is None
    assert auth.bearer_token([("x-other", "Bearer abc")]) is None
    assert auth.bearer_token(None) is None
    assert auth.caller_key(None, "ipv4:10.0.0.1:5555") == "peer:ipv4:10.0.0.1"
    assert auth.caller_key(None, "ipv4:10.0.0.1:6666") == "peer:ipv4:10.0.0.1"
    assert auth.caller_key(bearer("abc"), "ipv4:10.0.0.1:6666").startswith("token:")


# -- role x method, against the real servers ----------------------------------------------


async def test_role_by_method_table(tmp_path: Path) -> None:
    """Every public method, called by no token, a wrong token and each role."""
    methods = public_methods()
    # What each method answers an authorised caller (empty requests): an open server's answer.
    async with running_pair(sqlite_url(tmp_path / "open"), tmp_path / "open") as open_pair:
        baseline = {
            method_path(m): (await call_code(open_pair.clients.channel, m))[0] for m in methods
        }
    assert not set(baseline.values()) & (REFUSED | {grpc.StatusCode.UNKNOWN})
    assert grpc.StatusCode.INTERNAL not in baseline.values(), baseline

    callers: dict[str, list[tuple[str, str]] | None] = {
        "no token": None,
        "wrong token": bearer("not-a-token"),
        "not bearer": [("authorization", f"Basic {TOKENS['admin']}")],
        **{role: bearer(token) for role, token in TOKENS.items()},
    }
    mismatches = []
    async with running_pair(sqlite_url(tmp_path), tmp_path, tokens=TOKEN_CONFIG) as pair:
        for method in methods:
            path = method_path(method)
            for who, metadata in callers.items():
                if who not in TOKENS:
                    expected = grpc.StatusCode.UNAUTHENTICATED
                elif (
                    who == "admin"
                    or (who == "viewer" and method.name in VIEWER_METHODS)
                    or (who == "publisher" and method.name in PUBLISHER_METHODS)
                ):
                    expected = baseline[path]
                else:
                    expected = grpc.StatusCode.PERMISSION_DENIED
                code, err = await call_code(pair.clients.channel, method, metadata=metadata)
                if code != expected:
                    mismatches.append(f"{who} {path}: {code.name}, expected {expected.name}")
                elif err is not None and code in REFUSED:
                    reason = details(err).reason
                    assert reason in ("TOKEN_MISSING", "TOKEN_INVALID", "ROLE_NOT_ALLOWED")
                    assert not any(t in (err.details() or "") for t in TOKENS.values())
                    assert "not-a-token" not in (err.details() or "")
    assert not mismatches, "\n".join(mismatches)


async def test_health_and_reflection_stay_open(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path, tokens=TOKEN_CONFIG) as pair:
        channel = pair.clients.channel
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = [s.name async for r in call for s in r.list_services_response.service]
        assert "listener.v1.PluginService" in names
        # ... and the rest is not.
        err = None
        try:
            await pair.clients.plugins.ListPlugins(plugin_pb2.ListPluginsRequest())
        except grpc.aio.AioRpcError as exc:
            err = exc
        assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details(err).reason == "TOKEN_MISSING"


# -- open only on loopback ----------------------------------------------------------------


async def test_open_servers_refuse_a_public_address(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    with pytest.raises(ConfigError, match="--insecure"):
        await api_app.start(
            Config.from_keys(db_url=db, data_dir=str(tmp_path), api_addr="0.0.0.0:0")
        )
    with pytest.raises(ConfigError, match="--insecure"):
        await alert_app.start(
            Config.from_keys(db_url=db, data_dir=str(tmp_path), alert_addr="0.0.0.0:0")
        )
    assert not (tmp_path / "listener.db").exists()  # refused before opening anything

    alert = await alert_app.start(
        Config.from_keys(
            db_url=db, data_dir=str(tmp_path), alert_addr="0.0.0.0:0", internal_token="i"
        )
    )
    try:
        target = f"127.0.0.1:{alert.port}"
        for settings in ({"tokens": ("admin:x",)}, {"insecure": True}):
            api = await api_app.start(
                Config.from_keys(
                    db_url=db,
                    data_dir=str(tmp_path),
                    api_addr="0.0.0.0:0",
                    http_addr="127.0.0.1:0",
                    alert_targets=(target,),
                    internal_token="i",
                    **settings,  # type: ignore[arg-type]
                )
            )
            await api.stop(0)
    finally:
        await alert.stop(0)


def test_the_command_line_says_why_and_insecure_overrides(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "LISTENER_DATA_DIR": str(tmp_path),
        "LISTENER_API_ADDR": f"0.0.0.0:{port}",
        "LISTENER_ALERT_TARGETS": f"127.0.0.1:{free_port()}",
    }
    refused = subprocess.run(
        [sys.executable, "-m", "api_server"], cwd=REPO, env=env, capture_output=True, timeout=60
    )
    assert refused.returncode == 1
    assert b"without authentication" in refused.stderr and b"--insecure" in refused.stderr
    assert b"Traceback" not in refused.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "api_server", "--insecure"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_serving(f"127.0.0.1:{port}", proc=proc)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert b"accepts calls from anyone" in err


# -- the internal API ---------------------------------------------------------------------


async def test_alert_server_takes_calls_from_the_api_server_only(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path, internal_token="int-secret") as pair:
        # The API server presents the token: installing (which probes the alert server) works.
        await pair.clients.plugins.CreatePlugin(
            plugin_pb2.CreatePluginRequest(package=logger_package())
        )
        async with grpc.aio.insecure_channel(pair.alert_addr) as channel:
            stub = plugin_host_pb2_grpc.PluginHostServiceStub(channel)
            for metadata in (None, bearer("guess"), bearer("int-secre")):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetStatus(plugin_host_pb2.GetStatusRequest(), metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            status = await stub.GetStatus(
                plugin_host_pb2.GetStatusRequest(), metadata=bearer("int-secret")
            )
            assert [p.plugin_id for p in status.plugins] == ["logger"]
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert pair.alert.config.security.internal_token == ""  # only its digest is kept


async def test_the_nudge_stream_is_refused_without_the_internal_token(tmp_path: Path) -> None:
    async with running_pair(sqlite_url(tmp_path), tmp_path, internal_token="int-secret") as pair:
        assert pair.alert.servicer is not None
        signal = pair.alert.servicer.signal
        async with grpc.aio.insecure_channel(pair.alert_addr) as channel:
            stub = plugin_host_pb2_grpc.PluginHostServiceStub(channel)
            for metadata in (None, bearer("guess"), bearer("int-secre")):
                call = stub.NotifyStream(metadata=metadata)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call.write(plugin_host_pb2.NotifyRequest(max_sequence=10**6))
                    await call.done_writing()
                    await call
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert signal.latest < 10**6  # no refused message was read
            call = stub.NotifyStream(metadata=bearer("int-secret"))
            await call.write(plugin_host_pb2.NotifyRequest(max_sequence=10**6))
            await call.done_writing()
            await call
            assert signal.latest == 10**6
        # The API server's own stream carries the token from its start: a publish's nudge
        # is read on it.
        assert pair.alert.metrics is not None
        registry = pair.alert.metrics.registry
        before = registry.get_sample_value("listener_notify_stream_messages_total") or 0
        await pair.clients.events.PublishEvent(
            event_service_pb2.PublishEventRequest(event=sample_event("task_fail"))
        )
        await eventually(
            lambda: (
                (registry.get_sample_value("listener_notify_stream_messages_total") or 0) > before
            )
        )


async def test_an_api_server_with_the_wrong_internal_token_is_refused(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path)
    alert = await alert_app.start(
        Config.from_keys(
            db_url=db,
            data_dir=str(tmp_path / "a"),
            alert_addr="127.0.0.1:0",
            internal_token="right",
        )
    )
    api = await api_app.start(
        Config.from_keys(
            db_url=db,
            data_dir=str(tmp_path / "b"),
            api_addr="127.0.0.1:0",
            http_addr="127.0.0.1:0",
            alert_targets=(f"127.0.0.1:{alert.port}",),
            internal_token="wrong",
        )
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{api.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await plugin_pb2_grpc.PluginServiceStub(channel).CreatePlugin(
                    plugin_pb2.CreatePluginRequest(package=logger_package())
                )
        assert "UNAUTHENTICATED" in (caught.value.details() or "")
        assert "right" not in (caught.value.details() or "")
        assert alert.host.packages.loaded == {}
    finally:
        await api.stop(0)
        await alert.stop(0)
