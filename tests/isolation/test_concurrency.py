"""Loads, swaps and unloads from concurrent RPCs are serialised by the plugin host's lock:
eight admins installing, upgrading and uninstalling at once get no error and leave a
consistent state behind."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from listener.v1 import listener_instance_pb2, plugin_pb2
from tests.isolation.support import (
    alert_status,
    create_instance,
    install,
    recorder_package,
    sqlite_pair,
    update,
)
from tests.support.servers import Clients, eventually

LOOPS = 8
ROUNDS = 3


async def churn(c: Clients, n: int, out: Path) -> int:
    plugin_id = f"churn{n}"
    done = 0
    for r in range(ROUNDS):
        await install(c, recorder_package(f"{r}.1", name=plugin_id))
        await create_instance(c, plugin_id, plugin_id, {"logFile": str(out / f"{n}.jsonl")})
        await update(c, plugin_id, recorder_package(f"{r}.2", name=plugin_id))  # a hot swap
        await c.instances.DeleteListenerInstance(
            listener_instance_pb2.DeleteListenerInstanceRequest(
                name=f"listenerInstances/{plugin_id}"
            )
        )
        await c.plugins.DeletePlugin(plugin_pb2.DeletePluginRequest(name=f"plugins/{plugin_id}"))
        done += 1
    return done


async def test_concurrent_install_update_uninstall_loops(tmp_path: Path) -> None:
    async with sqlite_pair(tmp_path) as pair:
        c = pair.clients
        started = time.monotonic()
        results = await asyncio.gather(
            *(churn(c, n, tmp_path) for n in range(LOOPS)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        assert results == [ROUNDS] * LOOPS  # no RPC failed
        listed = await c.plugins.ListPlugins(plugin_pb2.ListPluginsRequest())
        assert list(listed.plugins) == []
        status = await alert_status(pair)
        assert list(status.plugins) == [] and list(status.instances) == []
        host = pair.alert.host
        assert host.packages.loaded == {} and host.runners == {} and host.packages.load_errors == {}
        assert not [n for n in sys.modules if n.startswith("_listener_plugins.churn")]
        assert host.packages.loader.loaded_prefixes() == []
        await eventually(lambda: not host.leak_watch.pending, timeout=60)
        assert host.leak_watch.reports() == []
        assert not list(host.packages.cache.directory.glob("*.zip"))
    print(
        f"\n[figures] {LOOPS} concurrent admins x {ROUNDS} rounds of install, instance, "
        f"update, delete: {elapsed:.1f} s"
    )
