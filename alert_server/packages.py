"""Package lifecycle: which version of each plugin is loaded, and swapping one for another.

A version is loaded under an import prefix of its own (``alert_server.loader``) from the
package file in the cache (``alert_server.package_cache``), swapped in beside the running one
without a gap, and unloaded and handed to the leak watch (``alert_server.leak_watch``) once
nothing uses it. Callers serialise these changes (``PluginHost`` holds one lock for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from alert_server.child_process import ProcessSettings
from alert_server.delivery import InstanceRunner
from alert_server.leak_watch import LeakWatch
from alert_server.loader import LoadedPackage, PackageLoader
from alert_server.package_cache import PackageCache
from alert_server.plugin_slot import PluginSlot
from event_store import catalog
from event_store.errors import PluginNotFound
from event_store.models import Plugin
from event_store.store import Store
from listener_common import ListenerPlugin
from listener_common import package as sdk_package
from listener_core import errors
from listener_core.metrics import NO_METRICS, AlertMetrics, NullMetrics
from listener_core.settings import PackageLimits

log = logging.getLogger(__name__)


class Packages:
    """The loaded version of each plugin (``loaded``), and why a plugin failed to load at
    start (``load_errors``)."""

    def __init__(
        self,
        store: Store,
        cache_dir: Path,
        process: ProcessSettings,
        limits: PackageLimits,
        leak_watch: LeakWatch,
        *,
        close_timeout: float,
        metrics: AlertMetrics | NullMetrics = NO_METRICS,
    ) -> None:
        """``process`` sets the limits of process-isolated plugins' children;
        ``close_timeout`` bounds closing a plugin object that a failed swap opened."""
        self.store = store
        self.cache = PackageCache(cache_dir, store)
        self.loader = PackageLoader(process)
        self.limits = limits
        self.leak_watch = leak_watch
        self.close_timeout = close_timeout
        self.metrics = metrics
        self.loaded: dict[str, LoadedPackage] = {}
        self.load_errors: dict[str, str] = {}

    def keep(self, sha256: str, data: bytes) -> None:
        """Puts a package the caller sent into the cache (saves fetching it from the store)."""
        self.cache.put(sha256, data)

    async def isolation_of(self, plugin_id: str, sha256: str) -> str | None:
        """The isolation an admin set on the plugin row, if the row is at ``sha256``."""
        async with self.store.reader() as session:
            try:
                row = await catalog.get_plugin(session, plugin_id)
            except PluginNotFound:
                return None
        return row.isolation if row.sha256 == sha256 else None

    async def all_plugins(self) -> list[Plugin]:
        """Every plugin row: what ``reconcile`` loads at start."""
        async with self.store.reader() as session:
            return list(await catalog.all_plugins(session))

    async def _load(
        self, plugin_id: str, data: bytes, sha256: str, probe: bool, isolation: str | None
    ) -> LoadedPackage:
        info = sdk_package.inspect_package(
            data,
            max_files=self.limits.max_files,
            max_uncompressed=self.limits.max_uncompressed_bytes,
        )
        if info.sha256 != sha256:
            raise errors.InvalidArgument(f"package sha256 is {info.sha256}, not {sha256}")
        path = (
            self.cache.put(sha256, data)
            if self.cache.read_verified(sha256) is None
            else (self.cache.path_for(sha256))
        )
        started = time.perf_counter()
        loaded = await asyncio.to_thread(
            self.loader.load, plugin_id, info, path, isolation=isolation, probe=probe
        )
        self.metrics.plugin_loaded(time.perf_counter() - started)
        log.debug(
            "plugin %s %s loaded (%s) in %.1f ms",
            plugin_id,
            loaded.version,
            loaded.isolation,
            (time.perf_counter() - started) * 1000,
        )
        return loaded

    async def probe(
        self, plugin_id: str, data: bytes, sha256: str, isolation: str | None
    ) -> LoadedPackage:
        """Loads a package to check it and read its form, then unloads it. The caller
        serialises it with activations, so a probe never discards a cache file that a
        concurrent activation of the same package is reading."""
        try:
            loaded = await self._load(plugin_id, data, sha256, True, isolation)
            self._retire(loaded, keep_file=True)
        finally:
            if all(p.sha256 != sha256 for p in self.loaded.values()):
                self.cache.discard(sha256)  # a rejected or not yet stored package
        return loaded

    async def activate(
        self,
        plugin_id: str,
        sha256: str,
        isolation: str | None,
        runners: Sequence[InstanceRunner],
    ) -> LoadedPackage:
        """Loads ``sha256`` next to the running version and hot-swaps ``runners`` to it (those
        of them on the running version).

        1. load the new version under its own prefix (the old one keeps delivering);
        2. open a new plugin object for each running instance, still beside the old ones;
        3. only if all of that worked, switch each instance between two batches (its runner
           waits for the batch in flight: the drain) and close the old object;
        4. unload the old version and watch that it really goes away (``_retire``).
        A failure in 1 or 2 closes what was opened, unloads the new version and raises: the
        old version never noticed, and the admin gets the error.
        """
        current = self.loaded.get(plugin_id)
        if (
            current is not None
            and current.sha256 == sha256
            and (not isolation or current.isolation == isolation)
        ):
            return current
        _, data = await self.cache.fetch(sha256)
        fresh = await self._load(plugin_id, data, sha256, False, isolation)
        moving = [r.slot for r in runners if current is not None and r.package is current]
        opened = await self._open_successors(fresh, current, moving)
        started = time.perf_counter()
        for slot in moving:
            await slot.swap(fresh, opened.pop(slot.instance_id, None))
        self.loaded[plugin_id] = fresh
        self.load_errors.pop(plugin_id, None)
        if current is None:
            log.info("plugin %s %s loaded as %s", plugin_id, fresh.version, fresh.prefix)
            return fresh
        self._retire(current, keep_file=False)
        log.info(
            "plugin %s %s replaced %s on %d instance(s) in %.1f ms (%s)",
            plugin_id,
            fresh.version,
            current.version,
            len(moving),
            (time.perf_counter() - started) * 1000,
            fresh.prefix,
        )
        return fresh

    async def _open_successors(
        self,
        fresh: LoadedPackage,
        current: LoadedPackage | None,
        moving: Sequence[PluginSlot],
    ) -> dict[str, ListenerPlugin]:
        """A plugin object of ``fresh`` for each instance that has one open (one that never
        opened opens the new one itself), not yet in use. On a failure, closes what was
        opened, retires ``fresh`` and raises FailedPrecondition: the current version keeps
        running."""
        opened: dict[str, ListenerPlugin] = {}
        failed_id = ""
        try:
            for slot in moving:
                if slot.is_open:
                    failed_id = slot.instance_id
                    opened[failed_id] = await slot.open(fresh)
        except Exception as exc:
            for plugin in opened.values():  # built but never used: close them, keep the old
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.close_timeout):
                        await plugin.close()
            self._retire(fresh, keep_file=True)
            raise errors.FailedPrecondition(
                f"plugin {fresh.plugin_id} {fresh.version} did not start for listener instance "
                f"{failed_id}, so {current.version if current else 'nothing'} keeps "
                f"running: {exc}",
                reason="PLUGIN_OPEN_FAILED",
            ) from exc
        return opened

    def unload(self, plugin_id: str) -> None:
        """Unloads the plugin's version (its runners are stopped first)."""
        loaded = self.loaded.pop(plugin_id, None)
        self.load_errors.pop(plugin_id, None)
        if loaded is not None:
            self._retire(loaded, keep_file=False)
            log.info("plugin %s unloaded", plugin_id)

    def _retire(self, loaded: LoadedPackage, *, keep_file: bool) -> None:
        """Unloads a version nothing uses any more and starts watching it for leaks.

        The package file leaves the cache when no loaded version needs it (the store keeps
        the package; the next load fetches it again).
        """
        residue = self.loader.unload(loaded)
        if not keep_file and all(p.sha256 != loaded.sha256 for p in self.loaded.values()):
            self.cache.discard(loaded.sha256)
        self.leak_watch.watch(residue)

    def close(self) -> None:
        """Unloads every version (runners are stopped first) and stops the children."""
        for loaded in self.loaded.values():
            self.loader.unload(loaded)
        self.loaded.clear()
        self.loader.close()
