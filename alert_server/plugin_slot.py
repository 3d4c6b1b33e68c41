"""The plugin object of one listener instance: opened when first needed, swapped between two
batches, closed when the runner stops.

:meth:`PluginSlot.in_use` is the one place that opens the object on demand and holds it while
the caller's calls run; a swap or a stop waits for that (the drain of a hot swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from alert_server.convert import to_sdk_event
from alert_server.errors import PluginCallError
from alert_server.loader import LoadedPackage
from event_store.events import StoredEvent
from listener_common import ListenerPlugin, _dispatch

# The delivery loop's logger, as operators filter it: the runner's lines, wherever written.
log = logging.getLogger("alert_server.delivery")


class PluginSlot:
    def __init__(
        self, instance_id: str, package: LoadedPackage, config: dict[str, Any], timeout: float
    ) -> None:
        """``timeout`` bounds opening, closing and each call (the handler timeout)."""
        self.instance_id = instance_id
        self.package = package
        self.config = config
        self.timeout = timeout
        self._plugin: ListenerPlugin | None = None
        self.lock = asyncio.Lock()  # held while the object is in a caller's hands

    @property
    def is_open(self) -> bool:
        """Whether a plugin object is open (a hot swap opens its successor beforehand)."""
        return self._plugin is not None

    async def open(self, package: LoadedPackage) -> ListenerPlugin:
        """A new object of ``package`` with this instance's params, not yet in use; raises
        PluginCallError when the plugin's ``open`` fails."""
        try:
            return await _dispatch.open_plugin(package.plugin_class, self.config, self.timeout)
        except _dispatch.OpenFailed as exc:
            raise PluginCallError(str(exc)) from exc.__cause__

    @contextlib.asynccontextmanager
    async def in_use(self) -> AsyncIterator[ListenerPlugin]:
        """The plugin object, opened first if it is not yet, held for the caller's calls."""
        async with self.lock:
            if self._plugin is None:
                self._plugin = await self.open(self.package)
            yield self._plugin

    async def call(self, event: StoredEvent) -> None:
        """Hands one event to the plugin (opening it if needed), bounded by the timeout."""
        async with self.in_use() as plugin:
            async with asyncio.timeout(self.timeout):
                await plugin.on_event(to_sdk_event(event))

    async def swap(self, package: LoadedPackage, plugin: ListenerPlugin | None = None) -> None:
        """Switches to ``package`` between two batches (waits for the one in flight), to
        ``plugin`` from :meth:`open` or, without one, to an object the next call opens; then
        closes the old object. The switch itself cannot fail, so it needs no rollback."""
        async with self.lock:
            old, self._plugin, self.package = self._plugin, plugin, package
        if old is not None:
            await self._close(old)

    async def close(self) -> None:
        plugin, self._plugin = self._plugin, None
        if plugin is not None:
            await self._close(plugin)

    async def _close(self, plugin: ListenerPlugin) -> None:
        error = await _dispatch.close_plugin(plugin, self.timeout)
        if error:
            log.warning("instance %s: close failed: %s", self.instance_id, error)
