"""The alert server's state: which packages are loaded and which instances run.

Desired state lives in the store; the host converges to it at start (``reconcile``) and on
each internal RPC. Changes are serialised by one lock, so concurrent loads, swaps and
unloads never interleave.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from alert_server.delivery import DeliverySettings, InstanceRunner
from alert_server.loader import LoadedPackage, PackageLoader
from alert_server.package_cache import PackageCache
from alert_server.wakeup import SequenceSignal
from event_store import catalog
from event_store.models import ListenerInstance, Plugin
from event_store.store import Store
from listener_common import package as sdk_package
from listener_common import params as sdk_params
from listener_core import errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceView:
    instance_id: str
    plugin_id: str
    state: str
    cursor: int
    attempts: int
    last_error: str


class PluginHost:
    def __init__(
        self, store: Store, cache_dir: Path, signal: SequenceSignal, settings: DeliverySettings
    ) -> None:
        self.store = store
        self.cache = PackageCache(cache_dir, store)
        self.signal = signal
        self.settings = settings
        self.loader = PackageLoader()
        self.plugins: dict[str, LoadedPackage] = {}
        self.runners: dict[str, InstanceRunner] = {}
        self.load_errors: dict[str, str] = {}
        self._lock = asyncio.Lock()

    # -- packages -------------------------------------------------------------------------

    async def _load(self, plugin_id: str, data: bytes, sha256: str, probe: bool) -> LoadedPackage:
        info = sdk_package.inspect_package(data)
        if info.sha256 != sha256:
            raise errors.InvalidArgument(f"package sha256 is {info.sha256}, not {sha256}")
        if info.manifest.isolation == "process":
            raise errors.InvalidArgument(
                'isolation = "process" is not supported by this alert server yet',
                reason="ISOLATION_UNSUPPORTED",
            )
        path = (
            self.cache.put(sha256, data)
            if self.cache.read_verified(sha256) is None
            else (self.cache.path_for(sha256))
        )
        return await asyncio.to_thread(self.loader.load, plugin_id, info, path, probe=probe)

    async def probe(self, plugin_id: str, data: bytes, sha256: str) -> LoadedPackage:
        """Loads a package to check it and read its form, then unloads it."""
        try:
            loaded = await self._load(plugin_id, data, sha256, probe=True)
            self.loader.unload(loaded)
        finally:
            if all(p.sha256 != sha256 for p in self.plugins.values()):
                self.cache.discard(sha256)  # a rejected or not yet stored package
        return loaded

    async def load_plugin(self, plugin_id: str, sha256: str) -> LoadedPackage:
        """Makes ``plugin_id`` run the package ``sha256``, hot-swapping running instances."""
        async with self._lock:
            return await self._activate(plugin_id, sha256)

    async def _activate(self, plugin_id: str, sha256: str) -> LoadedPackage:
        current = self.plugins.get(plugin_id)
        if current is not None and current.sha256 == sha256:
            return current
        _, data = await self.cache.fetch(sha256)
        fresh = await self._load(plugin_id, data, sha256, probe=False)
        swapped: list[InstanceRunner] = []
        try:
            for runner in self.runners.values():
                if runner.package is current and current is not None:
                    await runner.swap(fresh)
                    swapped.append(runner)
        except Exception:
            for runner in swapped:  # roll back: the old version keeps running
                assert current is not None
                await runner.swap(current)
            self.loader.unload(fresh)
            raise
        self.plugins[plugin_id] = fresh
        self.load_errors.pop(plugin_id, None)
        if current is not None:
            self.loader.unload(current)
        log.info("plugin %s %s loaded as %s", plugin_id, fresh.version, fresh.prefix)
        return fresh

    async def unload_plugin(self, plugin_id: str) -> None:
        async with self._lock:
            for iid in [i for i, r in self.runners.items() if r.package.plugin_id == plugin_id]:
                await self.runners.pop(iid).stop()
            loaded = self.plugins.pop(plugin_id, None)
            self.load_errors.pop(plugin_id, None)
            if loaded is not None:
                self.loader.unload(loaded)
                log.info("plugin %s unloaded", plugin_id)

    # -- instances ------------------------------------------------------------------------

    async def apply_instance(self, instance_id: str) -> None:
        """Starts, restarts with new settings, or stops the instance as the store says."""
        async with self._lock:
            async with self.store.reader() as session:
                try:
                    inst = await catalog.get_instance(session, instance_id)
                except errors.NotFound:
                    inst = None
                plugin = await catalog.get_plugin(session, inst.plugin_id) if inst else None
            await self._stop_runner(instance_id)
            if inst is not None and plugin is not None:
                await self._start_runner(inst, plugin)

    async def remove_instance(self, instance_id: str) -> None:
        async with self._lock:
            await self._stop_runner(instance_id)

    async def _stop_runner(self, instance_id: str) -> None:
        runner = self.runners.pop(instance_id, None)
        if runner is not None:
            await runner.stop()

    async def _start_runner(self, inst: ListenerInstance, plugin: Plugin) -> None:
        loaded = await self._activate(plugin.id, plugin.sha256)
        form = json.loads(plugin.params_json)
        config = sdk_params.typed_config(form, json.loads(inst.params_json))
        types = [int(t) for t in inst.event_types.split(",") if t]
        runner = InstanceRunner(
            inst.id,
            loaded,
            config,
            types,
            inst.desired_state == "PAUSED",
            self.store,
            self.signal,
            self.settings,
        )
        self.runners[inst.id] = runner
        runner.start()

    async def reconcile(self) -> None:
        """Converges to the store: loads every plugin and runs every instance."""
        async with self._lock:
            async with self.store.reader() as session:
                plugins = {p.id: p for p in await catalog.all_plugins(session)}
                rows = await catalog.instances_with_delivery(session)
            for plugin in plugins.values():
                try:
                    await self._activate(plugin.id, plugin.sha256)
                except Exception as exc:
                    self.load_errors[plugin.id] = str(exc)
                    log.error("plugin %s failed to load: %s", plugin.id, exc)
            for inst, _ in rows:
                if inst.id in self.runners or inst.plugin_id in self.load_errors:
                    continue
                try:
                    await self._start_runner(inst, plugins[inst.plugin_id])
                except Exception as exc:
                    log.error("instance %s failed to start: %s", inst.id, exc)

    async def close(self) -> None:
        async with self._lock:
            for iid in list(self.runners):
                await self._stop_runner(iid)
            for loaded in self.plugins.values():
                self.loader.unload(loaded)
            self.plugins.clear()
            self.loader.close()

    def instance_views(self) -> list[InstanceView]:
        return [
            InstanceView(
                r.instance_id, r.package.plugin_id, r.state, r.cursor, r.attempts, r.last_error
            )
            for r in self.runners.values()
        ]
