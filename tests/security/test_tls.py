"""TLS and mTLS on both servers, with certificates made by the test, including the internal
channel from the API server to the alert server."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from listener.alert.v1 import plugin_host_pb2, plugin_host_pb2_grpc
from listener.v1 import plugin_pb2, plugin_pb2_grpc
from listener_core import tls
from listener_core.config import Config, ConfigError
from tests.security.helpers import Certs, channel_credentials, make_certs
from tests.support.databases import sqlite_url
from tests.support.samples import logger_package
from tests.support.servers import running_pair


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


async def list_plugins(channel: grpc.aio.Channel) -> list[str]:
    reply = await plugin_pb2_grpc.PluginServiceStub(channel).ListPlugins(
        plugin_pb2.ListPluginsRequest(), timeout=5
    )
    return [p.name for p in reply.plugins]


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await list_plugins(channel)
    return caught.value.code()


async def test_tls_on_both_servers_and_the_internal_channel(tmp_path: Path, certs: Certs) -> None:
    settings = {
        "tls_cert": str(certs.server_cert),
        "tls_key": str(certs.server_key),
        "alert_tls_ca": str(certs.ca),
    }
    async with running_pair(sqlite_url(tmp_path), tmp_path, **settings) as pair:
        creds = channel_credentials(certs.ca)
        async with grpc.aio.secure_channel(pair.api_addr, creds) as channel:
            # Installing has the API server probe the package on the alert server: over TLS.
            await plugin_pb2_grpc.PluginServiceStub(channel).CreatePlugin(
                plugin_pb2.CreatePluginRequest(package=logger_package())
            )
            assert await list_plugins(channel) == ["plugins/logger"]
        assert set(pair.alert.host.packages.loaded) == {"logger"}
        # Plaintext to a TLS port, and a client that trusts another CA, get nowhere.
        async with grpc.aio.insecure_channel(pair.api_addr) as channel:
            assert await refused(channel) == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(
            pair.api_addr, channel_credentials(certs.other_ca)
        ) as ch:
            assert await refused(ch) == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(pair.alert_addr) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_clients_without_a_certificate(tmp_path: Path, certs: Certs) -> None:
    settings = {
        "tls_cert": str(certs.server_cert),
        "tls_key": str(certs.server_key),
        "tls_client_ca": str(certs.ca),
        "alert_tls_ca": str(certs.ca),
        "alert_tls_cert": str(certs.client_cert),
        "alert_tls_key": str(certs.client_key),
    }
    async with running_pair(sqlite_url(tmp_path), tmp_path, **settings) as pair:
        without = channel_credentials(certs.ca)
        async with grpc.aio.secure_channel(pair.api_addr, without) as channel:
            assert await refused(channel) == grpc.StatusCode.UNAVAILABLE
        with_cert = channel_credentials(certs.ca, certs.client_cert, certs.client_key)
        async with grpc.aio.secure_channel(pair.api_addr, with_cert) as channel:
            # The API server presents its client certificate to the alert server in turn.
            await plugin_pb2_grpc.PluginServiceStub(channel).CreatePlugin(
                plugin_pb2.CreatePluginRequest(package=logger_package())
            )
            assert await list_plugins(channel) == ["plugins/logger"]
        # The internal API: no certificate, no call; the API server's certificate, a call.
        async with grpc.aio.secure_channel(pair.alert_addr, without) as channel:
            stub = plugin_host_pb2_grpc.PluginHostServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetStatus(plugin_host_pb2.GetStatusRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(pair.alert_addr, with_cert) as channel:
            stub = plugin_host_pb2_grpc.PluginHostServiceStub(channel)
            status = await stub.GetStatus(plugin_host_pb2.GetStatusRequest(), timeout=5)
            assert [p.plugin_id for p in status.plugins] == ["logger"]


def test_tls_settings_are_checked(tmp_path: Path, certs: Certs) -> None:
    assert tls.server_credentials(Config().tls) is None
    assert tls.alert_channel_credentials(Config().tls) is None
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        tls.server_credentials(Config.from_keys(tls_cert=str(certs.server_cert)).tls)
    with pytest.raises(ConfigError, match="tls_client_ca needs"):
        tls.server_credentials(Config.from_keys(tls_client_ca=str(certs.ca)).tls)
    with pytest.raises(ConfigError, match="tls_key: cannot read"):
        tls.server_credentials(
            Config.from_keys(
                tls_cert=str(certs.server_cert), tls_key=str(tmp_path / "missing.pem")
            ).tls
        )
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM file"):
        tls.alert_channel_credentials(Config.from_keys(alert_tls_ca=str(not_pem)).tls)
    with pytest.raises(ConfigError, match="alert_tls_cert and alert_tls_key"):
        tls.alert_channel_credentials(Config.from_keys(alert_tls_cert=str(certs.client_cert)).tls)
