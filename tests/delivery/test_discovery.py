"""Alert servers found through the store: API servers with no target list drive every live
alert server, follow joins and departures, and reach late joiners' plugins by reconcile."""

from __future__ import annotations

import collections
from pathlib import Path

import grpc

from listener.alert.v1 import plugin_host_pb2, plugin_host_pb2_grpc
from tests.delivery.helpers import create_instance, get_instance, install
from tests.support.databases import postgres_database
from tests.support.samples import logger_package
from tests.support.servers import Clients, ServerPair, eventually, free_port

INSTANCES = 9  # as issue #18 asks: 3 each on three servers; a fourth joins and gets 2 or 3


async def loaded_plugins(addr: str) -> set[str]:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = plugin_host_pb2_grpc.PluginHostServiceStub(channel)
        reply = await stub.GetStatus(plugin_host_pb2.GetStatusRequest(), timeout=10)
        return {p.plugin_id for p in reply.plugins}


async def test_api_servers_find_alert_servers_through_the_store(tmp_path: Path) -> None:
    async with postgres_database() as url:
        pair = ServerPair(url, tmp_path / "data", extra_env={"LISTENER_LEASE_TTL": "2"})
        alerts: dict[str, str] = {}

        def start_alert(name: str) -> None:
            addr = f"127.0.0.1:{free_port()}"
            pair.spawn(
                name,
                "alert_server",
                addr,
                LISTENER_ALERT_ADDR=addr,
                LISTENER_DATA_DIR=str(tmp_path / name),
                LISTENER_SERVER_ID=name,
            )
            alerts[name] = addr

        apis = [f"127.0.0.1:{free_port()}" for _ in range(2)]
        try:
            for name in ("alert-1", "alert-2", "alert-3"):
                start_alert(name)
            for n, addr in enumerate(apis):
                # No LISTENER_ALERT_TARGETS anywhere: each API server reads the store.
                pair.spawn(
                    f"api-{n}",
                    "api_server",
                    addr,
                    LISTENER_API_ADDR=addr,
                    LISTENER_HTTP_ADDR="off",
                    LISTENER_DATA_DIR=str(tmp_path / f"api-{n}"),
                )
            channels = [grpc.aio.insecure_channel(a) for a in apis]
            c0, c1 = (Clients(ch) for ch in channels)
            out = tmp_path / "out.jsonl"
            await install(c0, logger_package())
            for n in range(INSTANCES):
                await create_instance(
                    c1 if n % 2 else c0,
                    f"i{n}",
                    "plugins/logger",
                    {"logFile": str(out)},
                    ["TASK_FAIL"],
                )

            # The install reached every alert server through both API servers' discovery.
            for addr in alerts.values():
                assert "logger" in await loaded_plugins(addr)

            async def owners() -> dict[str, int]:
                return dict(
                    collections.Counter(
                        [(await get_instance(c0, f"i{n}")).delivery.owner for n in range(INSTANCES)]
                    )
                )

            async def spread(expected: dict[str, int]) -> dict[str, int] | None:
                found = await owners()
                return found if found == expected else None

            three = {"alert-1": 3, "alert-2": 3, "alert-3": 3}
            assert await eventually(lambda: spread(three), timeout=60, interval=0.3)

            # A fourth joins: it takes its share, and has the plugin (reconciled at start).
            start_alert("alert-4")
            assert "logger" in await loaded_plugins(alerts["alert-4"])

            async def joined() -> dict[str, int] | None:
                # 9 over 4: 2 each and one 3; the joiner holds at least its 2.
                found = await owners()
                shares = sorted(found.values())
                fair = shares == [2, 2, 2, 3] and found.get("alert-4", 0) >= 2
                return found if fair and set(found) == set(alerts) else None

            assert await eventually(joined, timeout=60, interval=0.3)
            for n in range(2):
                await eventually(
                    lambda n=n: f"alert server {alerts['alert-4']} joined" in pair.log(f"api-{n}"),
                    timeout=30,
                )

            # One dies: its instances move to the others, and the API servers drop it.
            pair.kill("alert-2")
            rest = {"alert-1": 3, "alert-3": 3, "alert-4": 3}
            assert await eventually(lambda: spread(rest), timeout=60, interval=0.3)
            for n in range(2):
                await eventually(
                    lambda n=n: f"alert server {alerts['alert-2']} left" in pair.log(f"api-{n}"),
                    timeout=30,
                )
            # Instances created now run on the live ones only.
            await create_instance(
                c1, "late", "plugins/logger", {"logFile": str(out)}, ["TASK_FAIL"]
            )
            owner = await eventually(lambda: _owner(c0, "late"), timeout=60, interval=0.3)
            assert owner in {"alert-1", "alert-3", "alert-4"}
            for ch in channels:
                await ch.close()
        finally:
            pair.stop()


async def _owner(clients: Clients, instance_id: str) -> str:
    return (await get_instance(clients, instance_id)).delivery.owner
