"""Every Plugin message shows its package's size: the upload's size, after create, get, list
and an update to a new package."""

from __future__ import annotations

from pathlib import Path

from listener.v1 import plugin_pb2
from tests.isolation.support import recorder_package
from tests.support.databases import sqlite_url
from tests.support.servers import running_pair


async def test_plugin_messages_carry_the_package_size(tmp_path: Path) -> None:
    package = recorder_package("1")
    async with running_pair(sqlite_url(tmp_path), tmp_path) as pair:
        plugins = pair.clients.plugins
        created = await plugins.CreatePlugin(plugin_pb2.CreatePluginRequest(package=package))
        assert created.package_size == len(package) > 0
        got = await plugins.GetPlugin(plugin_pb2.GetPluginRequest(name="plugins/recorder"))
        assert got.package_size == len(package)
        listed = await plugins.ListPlugins(plugin_pb2.ListPluginsRequest())
        assert [p.package_size for p in listed.plugins] == [len(package)]
        second = recorder_package("2")
        updated = await plugins.UpdatePlugin(
            plugin_pb2.UpdatePluginRequest(
                plugin=plugin_pb2.Plugin(name="plugins/recorder"), package=second
            )
        )
        assert updated.package_size == len(second)
        renamed = await plugins.UpdatePlugin(
            plugin_pb2.UpdatePluginRequest(
                plugin=plugin_pb2.Plugin(name="plugins/recorder", display_name="Audit")
            )
        )
        assert renamed.package_size == len(second)
