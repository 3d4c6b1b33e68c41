"""The alert server's state: which packages are loaded and which instances run.

Desired state lives in the store; the host converges to it at start (``reconcile``) and on
each internal RPC. Changes are serialised by one lock, so concurrent loads, swaps and
unloads never interleave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from alert_server.delivery import DeliverySettings, FailurePolicy, InstanceRunner
from alert_server.loader import LoadedPackage, PackageLoader
from alert_server.package_cache import PackageCache
from alert_server.wakeup import SequenceSignal
from event_store import catalog, leases
from event_store.models import Delivery, ListenerInstance, Plugin, utcnow
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
        self,
        store: Store,
        cache_dir: Path,
        signal: SequenceSignal,
        settings: DeliverySettings,
        *,
        server_id: str = "",
        address: str = "",
        lease_ttl: float = 15.0,
    ) -> None:
        self.server_id = server_id or f"alert-{uuid.uuid4().hex[:12]}"
        self.address = address
        self.lease_ttl = lease_ttl
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
        """Restarts the instance with its new settings if it runs here; else tries to claim it."""
        async with self._lock:
            if instance_id in self.runners:
                await self._stop_runner(instance_id)
                await self._start_owned(instance_id, None)
        if instance_id not in self.runners:
            await self.lease_cycle()

    async def remove_instance(self, instance_id: str) -> None:
        async with self._lock:
            await self._stop_runner(instance_id)

    def kick(self, instance_id: str) -> bool:
        """An operator changed the instance's state: its runner re-reads it now."""
        runner = self.runners.get(instance_id)
        if runner is None:
            return False
        runner.kick()
        return True

    async def _stop_runner(self, instance_id: str) -> None:
        runner = self.runners.pop(instance_id, None)
        if runner is not None:
            await runner.stop()

    async def _start_owned(self, instance_id: str, fence: int | None) -> None:
        """Starts a runner for an instance this server holds the lease of."""
        async with self.store.reader() as session:
            inst = await catalog.get_instance(session, instance_id)
            plugin = await catalog.get_plugin(session, inst.plugin_id)
            if fence is None:
                delivery = await session.get(Delivery, instance_id)
                fence = delivery.fence if delivery is not None else 0
        await self._start_runner(inst, plugin, fence)

    async def _start_runner(self, inst: ListenerInstance, plugin: Plugin, fence: int) -> None:
        loaded = await self._activate(plugin.id, plugin.sha256)
        form = json.loads(plugin.params_json)
        config = sdk_params.typed_config(form, json.loads(inst.params_json))
        types = [int(t) for t in inst.event_types.split(",") if t]
        runner = InstanceRunner(
            inst.id,
            loaded,
            config,
            types,
            FailurePolicy(inst.failure_policy, inst.park_after),
            self.store,
            self.signal,
            self.settings,
            self.server_id,
            fence,
        )
        self.runners[inst.id] = runner
        runner.start()

    async def reconcile(self) -> None:
        """Converges to the store at start: loads every plugin, then claims instances."""
        async with self._lock:
            async with self.store.reader() as session:
                plugins = list(await catalog.all_plugins(session))
            for plugin in plugins:
                try:
                    await self._activate(plugin.id, plugin.sha256)
                except Exception as exc:
                    self.load_errors[plugin.id] = str(exc)
                    log.error("plugin %s failed to load: %s", plugin.id, exc)
        await self.lease_cycle()

    async def lease_cycle(self) -> None:
        """Heartbeat, renew leases, drop lost instances, and take or give a fair share."""
        now = utcnow()
        until = now + timedelta(seconds=self.lease_ttl)
        async with self._lock:
            async with self.store.transaction() as session:
                await leases.heartbeat(session, self.server_id, self.address)
                owned = await leases.renew(session, self.server_id, until)
                servers = await leases.live_servers(session, self.lease_ttl)
                total = await leases.total_instances(session)
            for iid, runner in list(self.runners.items()):
                if iid not in owned or runner.stopped:
                    await self._stop_runner(iid)
                elif runner.fence != owned[iid]:
                    runner.kick()
            share = math.ceil(total / servers)
            for iid in list(owned)[share:] if len(owned) > share else []:
                await self._stop_runner(iid)  # hand over: another server is short
                async with self.store.transaction() as session:
                    await leases.release(session, iid, self.server_id)
                owned.pop(iid)
            for iid in owned:
                if iid not in self.runners:
                    await self._try_start(iid, None)
            if len(owned) < share:
                async with self.store.reader() as session:
                    candidates = await leases.claimable(session, share - len(owned))
                for iid in candidates:
                    async with self.store.transaction() as session:
                        fence = await leases.claim(session, iid, self.server_id, until)
                    if fence is not None:
                        await self._try_start(iid, fence)

    async def _try_start(self, instance_id: str, fence: int | None) -> None:
        try:
            await self._start_owned(instance_id, fence)
        except Exception as exc:
            log.error("instance %s failed to start: %s", instance_id, exc)

    async def run_leases(self) -> None:
        """The lease loop: a cycle every third of the lease time."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                await self.lease_cycle()
            except Exception as exc:  # the store may be down: keep trying, leases lapse
                log.warning("lease cycle failed: %s", exc)

    async def leave(self) -> None:
        async with self._lock:
            for iid in list(self.runners):
                await self._stop_runner(iid)
        async with self.store.transaction() as session:
            await leases.leave(session, self.server_id)

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
