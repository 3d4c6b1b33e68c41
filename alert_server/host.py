"""The alert server's state: which packages are loaded and which instances run.

Desired state lives in the store; the host converges to it at start (``reconcile``) and on
each internal RPC. Changes are serialised by one lock, so concurrent loads, swaps and
unloads never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from alert_server import lease_clock
from alert_server.delivery import FailurePolicy, InstanceRunner, RunnerDeps
from alert_server.loader import LoadedPackage, PackageLoader, Residue
from alert_server.package_cache import PackageCache
from alert_server.process_plugin import ProcessSettings
from alert_server.progress import ProgressWriter
from alert_server.reads import SharedReads
from alert_server.wakeup import SequenceSignal
from event_store import catalog, deliveries, leases
from event_store.errors import PluginNotFound
from event_store.models import Delivery, ListenerInstance, Plugin, utcnow
from event_store.retry import in_transaction
from event_store.store import Store
from listener_common import ListenerPlugin
from listener_common import package as sdk_package
from listener_common import params as sdk_params
from listener_core import errors
from listener_core.event_filter import compile_filter
from listener_core.metrics import NO_METRICS, AlertMetrics, NullMetrics
from listener_core.secrets import SecretBox, open_params
from listener_core.settings import DeliverySettings, LeaseSettings, PackageLimits
from listener_core.tracing import Tracing

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds after an unload before the first leak check, and the longest interval between two.
LEAK_CHECK_DELAY = 0.25
LEAK_CHECK_MAX = 60.0


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieves a shielded task's outcome, which its cancelled caller no longer will."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class LeakReport:
    """An unloaded plugin version that is still alive, and why (``Residue.find_leaks``)."""

    plugin_id: str
    sha256: str
    version: str
    prefix: str
    leaks: list[str] = field(default_factory=list)


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
        leases: LeaseSettings | None = None,
        process: ProcessSettings | None = None,
        packages: PackageLimits | None = None,
        metrics: AlertMetrics | NullMetrics = NO_METRICS,
        secrets: SecretBox | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``process`` sets the limits of process-isolated plugins' children; by default
        their calls get the delivery's ``handler_timeout``. ``secrets`` opens sealed secret
        params for plugins; ``metrics`` counts plugin load times and the runners' deliveries."""
        leases = leases or LeaseSettings()
        self.server_id = server_id or leases.server_id or f"alert-{uuid.uuid4().hex[:12]}"
        self.address = address
        self.lease_ttl = leases.ttl
        self.store = store
        self.cache = PackageCache(cache_dir, store)
        self.signal = signal
        self.settings = settings
        self.progress = ProgressWriter(store, min_interval=settings.progress_interval)
        self.reads = SharedReads(store, signal)
        self.loader = PackageLoader(
            process or ProcessSettings(call_timeout=settings.handler_timeout)
        )
        self.plugins: dict[str, LoadedPackage] = {}
        self.runners: dict[str, InstanceRunner] = {}
        self.load_errors: dict[str, str] = {}
        # Unloaded versions still alive, by module prefix: shown by GetStatus.
        self.leaks: dict[str, LeakReport] = {}
        self._residues: list[Residue] = []  # unloaded versions not yet seen to be gone
        self._residue_added = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.secrets = secrets
        self.packages = packages or PackageLimits()
        self.metrics = metrics
        self.tracing = tracing  # a delivery span per batch; None: off
        # Lease discipline (alert_server.lease_clock): until when each held lease may be
        # acted on (monotonic), and what this server saw of the others' leases and beats.
        self._valid: dict[str, float] = {}
        self._leases_seen = lease_clock.Watch(self.lease_ttl)
        self._beats_seen = lease_clock.Watch(self.lease_ttl)
        self._last_token: datetime | None = None

    # -- packages -------------------------------------------------------------------------

    async def _load(
        self, plugin_id: str, data: bytes, sha256: str, probe: bool, isolation: str | None
    ) -> LoadedPackage:
        info = sdk_package.inspect_package(
            data,
            max_files=self.packages.max_files,
            max_uncompressed=self.packages.max_uncompressed_bytes,
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
        self, plugin_id: str, data: bytes, sha256: str, isolation: str | None = None
    ) -> LoadedPackage:
        """Loads a package to check it and read its form, then unloads it.

        Under the host lock like every load, so a probe never discards a cache file that a
        concurrent activation of the same package is reading.
        """

        async def work() -> LoadedPackage:
            try:
                loaded = await self._load(plugin_id, data, sha256, True, isolation)
                self._retire(loaded, keep_file=True)
            finally:
                if all(p.sha256 != sha256 for p in self.plugins.values()):
                    self.cache.discard(sha256)  # a rejected or not yet stored package
            return loaded

        return await self._serialised(work)

    async def load_plugin(
        self, plugin_id: str, sha256: str, isolation: str | None = None
    ) -> LoadedPackage:
        """Makes ``plugin_id`` run the package ``sha256``, hot-swapping running instances.

        ``isolation`` defaults to the plugin row's (which an admin may have set), then to the
        package manifest's.
        """
        if not isolation:
            async with self.store.reader() as session:
                try:
                    row = await catalog.get_plugin(session, plugin_id)
                    isolation = row.isolation if row.sha256 == sha256 else None
                except PluginNotFound:
                    isolation = None
        return await self._serialised(lambda: self._activate(plugin_id, sha256, isolation))

    async def _serialised(self, work: Callable[[], Awaitable[T]]) -> T:
        """Runs ``work`` under the host lock in a task of its own.

        A caller that gives up (an RPC deadline cancels it) cannot cut a load, swap or
        unload in half, leaving a namespace loaded but unowned or only some instances
        switched: the work completes or rolls back either way, and the next change waits.
        """

        async def locked() -> T:
            async with self._lock:
                return await work()

        task = asyncio.ensure_future(locked())
        task.add_done_callback(_consume)
        return await asyncio.shield(task)

    async def _activate(
        self, plugin_id: str, sha256: str, isolation: str | None = None
    ) -> LoadedPackage:
        """Loads ``sha256`` next to the running version and hot-swaps every instance to it.

        1. load the new version under its own prefix (the old one keeps delivering);
        2. open a new plugin object for each running instance, still beside the old ones;
        3. only if all of that worked, switch each instance between two batches (its runner
           waits for the batch in flight: the drain) and close the old object;
        4. unload the old version and watch that it really goes away (``_retire``).
        A failure in 1 or 2 closes what was opened, unloads the new version and raises: the
        old version never noticed, and the admin gets the error.
        """
        current = self.plugins.get(plugin_id)
        if (
            current is not None
            and current.sha256 == sha256
            and (not isolation or current.isolation == isolation)
        ):
            return current
        _, data = await self.cache.fetch(sha256)
        fresh = await self._load(plugin_id, data, sha256, False, isolation)
        moving = [r for r in self.runners.values() if current is not None and r.package is current]
        opened: dict[str, ListenerPlugin] = {}
        failed_id = ""
        try:
            for runner in moving:
                if runner.plugin_open:  # a runner that never opened opens the new one itself
                    failed_id = runner.instance_id
                    opened[failed_id] = await runner.open_plugin(fresh)
        except Exception as exc:
            for plugin in opened.values():  # built but never used: close them, keep the old
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.settings.handler_timeout):
                        await plugin.close()
            opened.clear()
            self._retire(fresh, keep_file=True)
            raise errors.FailedPrecondition(
                f"plugin {plugin_id} {fresh.version} did not start for listener instance "
                f"{failed_id}, so {current.version if current else 'nothing'} keeps "
                f"running: {exc}",
                reason="PLUGIN_OPEN_FAILED",
            ) from exc
        started = time.perf_counter()
        for runner in moving:
            await runner.swap(fresh, opened.pop(runner.instance_id, None))
        self.plugins[plugin_id] = fresh
        self.load_errors.pop(plugin_id, None)
        if current is not None:
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
        else:
            log.info("plugin %s %s loaded as %s", plugin_id, fresh.version, fresh.prefix)
        return fresh

    async def unload_plugin(self, plugin_id: str) -> None:
        async def work() -> None:
            for iid in [i for i, r in self.runners.items() if r.package.plugin_id == plugin_id]:
                await self.runners.pop(iid).stop()
            loaded = self.plugins.pop(plugin_id, None)
            self.load_errors.pop(plugin_id, None)
            if loaded is not None:
                self._retire(loaded, keep_file=False)
                log.info("plugin %s unloaded", plugin_id)

        await self._serialised(work)

    def _retire(self, loaded: LoadedPackage, *, keep_file: bool) -> None:
        """Unloads a version nothing uses any more and starts watching it for leaks.

        The package file leaves the cache when no loaded version needs it (the store keeps
        the package; the next load fetches it again).
        """
        residue = self.loader.unload(loaded)
        if not keep_file and all(p.sha256 != loaded.sha256 for p in self.plugins.values()):
            self.cache.discard(loaded.sha256)
        self._residues.append(residue)
        self._residue_added.set()
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="leak-watch")

    async def _watch(self) -> None:
        """Checks unloaded versions until nothing of them is alive; reports them until then.

        First shortly after an unload (its last calls have returned by then), then with a
        growing interval: a leak that resolves itself (a timed-out handler's thread that
        finally returns) disappears from the status; one that does not stays reported. All
        pending versions share one garbage collection per check, because a full collection
        stalls the whole process for a moment (tens of ms in a large one), and an update
        retires two (the probed copy and the replaced version).
        """
        delay = LEAK_CHECK_DELAY
        while self._residues:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._residue_added.wait()
                delay = LEAK_CHECK_DELAY  # a new one: check it soon, then back off again
                await asyncio.sleep(delay)
            self._residue_added.clear()
            gc.collect()
            for residue in list(self._residues):
                leaks = residue.find_leaks(collect=False)
                if not leaks:
                    self._residues.remove(residue)
                    if self.leaks.pop(residue.prefix, None) is not None:
                        log.info(
                            "plugin %s %s: no longer leaking", residue.plugin_id, residue.version
                        )
                    continue
                if residue.prefix not in self.leaks:
                    log.warning(
                        "plugin %s %s was unloaded but is still alive: %s",
                        residue.plugin_id,
                        residue.version,
                        "; ".join(leaks),
                    )
                self.leaks[residue.prefix] = LeakReport(
                    residue.plugin_id, residue.sha256, residue.version, residue.prefix, leaks
                )
            delay = min(delay * 2, LEAK_CHECK_MAX)

    # -- instances ------------------------------------------------------------------------

    async def apply_instance(self, instance_id: str) -> None:
        """Restarts the instance with its new settings if it runs here; else tries to claim it."""
        async with self._lock:
            if instance_id in self.runners:
                await self._stop_runner(instance_id)
                await self._start_owned(instance_id, None)
                await self._clear_start_failure(instance_id)
                self.runners[instance_id].kick()
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

    async def _start_many(self, fences: dict[str, int | None]) -> None:
        """Starts runners for many owned instances with one read of their rows (a restart
        with 1,000 instances made 5,000 queries one by one). An instance that cannot start
        is retried alone, which records its error."""
        ids = [iid for iid in fences if iid not in self.runners]
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            try:
                async with self.store.reader() as session:
                    instances = await catalog.instances_by_id(session, chunk)
                    plugins = await catalog.plugins_by_id(
                        session, {i.plugin_id for i in instances.values()}
                    )
                    rows = await deliveries.deliveries_by_id(session, chunk)
                    redeliver = await deliveries.redeliveries_of(session, chunk)
            except Exception as exc:
                log.warning("reading %d instances failed (%s); one by one", len(chunk), exc)
                instances, plugins, rows, redeliver = {}, {}, {}, {}
            for iid in chunk:
                inst, row = instances.get(iid), rows.get(iid)
                plugin = plugins.get(inst.plugin_id) if inst is not None else None
                if inst is None or row is None or plugin is None:
                    await self._try_start(iid, fences[iid])
                    continue
                fence = fences[iid]
                try:
                    runner = await self._start_runner(
                        inst, plugin, row.fence if fence is None else fence, start=False
                    )
                except Exception:
                    await self._try_start(iid, fence)
                    continue
                if row.last_error.startswith(deliveries.START_FAILURE):
                    await self._clear_start_failure(iid)
                    row = None  # the runner reads its cleared state itself
                if row is not None:
                    runner.preload(row, inst, redeliver.get(iid, []))
                runner.start()

    async def _start_owned(self, instance_id: str, fence: int | None) -> None:
        """Starts a runner for an instance this server holds the lease of."""
        async with self.store.reader() as session:
            inst = await catalog.get_instance(session, instance_id)
            plugin = await catalog.get_plugin(session, inst.plugin_id)
            if fence is None:
                delivery = await session.get(Delivery, instance_id)
                fence = delivery.fence if delivery is not None else 0
        await self._start_runner(inst, plugin, fence)

    async def _start_runner(
        self, inst: ListenerInstance, plugin: Plugin, fence: int, *, start: bool = True
    ) -> InstanceRunner:
        loaded = await self._activate(plugin.id, plugin.sha256, plugin.isolation)
        form = json.loads(plugin.params_json)
        config = sdk_params.typed_config(
            form, open_params(self.secrets, json.loads(inst.params_json))
        )
        types = [int(t) for t in inst.event_types.split(",") if t]
        runner = InstanceRunner(
            inst.id,
            loaded,
            config,
            types,
            FailurePolicy(inst.failure_policy, inst.park_after),
            fence,
            RunnerDeps(
                self.store,
                self.signal,
                self.settings,
                self.server_id,
                self.progress,
                self.reads,
                self.metrics,
                self.tracing,
            ),
            compile_filter(inst.filter, types),
        )
        runner.extend_lease(self._valid.get(inst.id, 0.0))
        self.runners[inst.id] = runner
        if start:
            runner.start()
        return runner

    async def reconcile(self) -> None:
        """Converges to the store at start: loads every plugin, then claims instances."""
        async with self._lock:
            async with self.store.reader() as session:
                plugins = list(await catalog.all_plugins(session))
            for plugin in plugins:
                try:
                    await self._activate(plugin.id, plugin.sha256, plugin.isolation)
                except Exception as exc:
                    self.load_errors[plugin.id] = str(exc)
                    log.error("plugin %s failed to load: %s", plugin.id, exc)
        await self.lease_cycle()

    def _token(self) -> datetime:
        """The ``lease_until`` to write: a full term from now, and always a new value."""
        self._last_token = leases.next_token(
            utcnow() + timedelta(seconds=self.lease_ttl), self._last_token
        )
        return self._last_token

    def _granted(self, instance_ids: Iterable[str], sent_at: float) -> None:
        """A renewal or claim sent at ``sent_at`` succeeded: these leases may be acted on
        until its validity ends (``lease_clock``)."""
        until = lease_clock.validity(sent_at, self.lease_ttl)
        for iid in instance_ids:
            self._valid[iid] = until
            runner = self.runners.get(iid)
            if runner is not None:
                runner.extend_lease(until)

    async def lease_cycle(self) -> None:
        """Heartbeat, renew leases, drop lost instances, and take or give a fair share.

        The renewal's send time bounds how long its leases may be acted on; leases of
        others are taken only once seen unchanged for a full term (``lease_clock``)."""
        loop = asyncio.get_running_loop()
        sent_at = 0.0

        async def renewal(
            session: AsyncSession,
        ) -> tuple[dict[str, int], dict[str, datetime], dict[str, leases.LeaseToken]]:
            nonlocal sent_at
            sent_at = loop.time()  # of the attempt that succeeds
            await leases.heartbeat(session, self.server_id, self.address)
            owned = await leases.renew(session, self.server_id, self._token())
            return (
                owned,
                await leases.heartbeats(session),
                await leases.others(session, self.server_id),
            )

        async with self._lock:
            try:
                owned, beats, others = await in_transaction(self.store, renewal)
            except Exception:
                # What was seen before this gap says nothing about who is alive now.
                self._leases_seen.forget()
                self._beats_seen.forget()
                raise
            self._granted(owned, sent_at)
            for iid in [i for i in self._valid if i not in owned]:
                del self._valid[iid]
            now = loop.time()
            self._leases_seen.observe(others, now)
            beats.pop(self.server_id, None)
            self._beats_seen.observe(beats, now)
            live = [s for s in beats if not self._beats_seen.unchanged_for_a_term(s, now)]
            for iid, runner in list(self.runners.items()):
                if iid not in owned or runner.stopped:
                    await self._stop_runner(iid)
                elif runner.fence != owned[iid]:
                    runner.kick()
            share = leases.fair_share(len(owned), others, live)
            for iid in list(owned)[share:]:
                await self._stop_runner(iid)  # hand over: another server is short
                await in_transaction(
                    self.store, partial(leases.release, instance_id=iid, server_id=self.server_id)
                )
                owned.pop(iid)
                self._valid.pop(iid, None)
            await self._start_many({iid: None for iid in owned if iid not in self.runners})
            if len(owned) < share:
                now = loop.time()
                candidates = [
                    (iid, token)
                    for iid, token in sorted(others.items())
                    if not token.owner or self._leases_seen.unchanged_for_a_term(iid, now)
                ][: share - len(owned)]
                if candidates:

                    async def claim(session: AsyncSession) -> dict[str, int]:
                        nonlocal sent_at
                        sent_at = loop.time()
                        return await leases.claim_many(
                            session, candidates, self.server_id, self._token()
                        )

                    claimed = await in_transaction(self.store, claim)
                    self._granted(claimed, sent_at)
                    await self._start_many(dict(claimed))

    async def _clear_start_failure(self, instance_id: str) -> None:
        with contextlib.suppress(Exception):  # the status only; the next start tries again
            async with self.store.transaction() as session:
                if await deliveries.clear_start_failure(session, instance_id, self.server_id):
                    log.info("instance %s: started; its start failure is cleared", instance_id)

    async def _try_start(self, instance_id: str, fence: int | None) -> None:
        """Starts an owned instance; a failure shows in its status and is retried by the
        next lease cycle, a success clears it."""
        try:
            await self._start_owned(instance_id, fence)
            await self._clear_start_failure(instance_id)
            runner = self.runners.get(instance_id)
            if runner is not None:
                runner.kick()  # re-read the cleared state
        except Exception as exc:
            error = f"{deliveries.START_FAILURE}{type(exc).__name__}: {exc}"
            log.error("instance %s %s", instance_id, error)
            with contextlib.suppress(Exception):
                async with self.store.transaction() as session:
                    await deliveries.note_start_failure(session, instance_id, self.server_id, error)

    async def run_leases(self) -> None:
        """The lease loop: a cycle every third of the lease time."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                await self.lease_cycle()
            except Exception as exc:  # the store may be down: keep trying, leases lapse
                log.warning("lease cycle failed: %s", exc)

    async def leave(self) -> None:
        """A clean shutdown: stops every runner after its batch in flight, writes every
        cursor, then frees the leases; the next owners redeliver nothing."""
        async with self._lock:
            for iid in list(self.runners):
                await self._stop_runner(iid)
            self._valid.clear()
            await self.progress.drain()  # also cursors of runners a cancelled cycle stopped
        await in_transaction(self.store, partial(leases.leave, server_id=self.server_id))

    async def close(self) -> None:
        async with self._lock:
            for iid in list(self.runners):
                await self._stop_runner(iid)
            await self.progress.close()
            for loaded in self.plugins.values():
                self.loader.unload(loaded)
            self.plugins.clear()
            if self._watcher is not None:
                self._watcher.cancel()
            self.loader.close()

    def instance_views(self) -> list[InstanceView]:
        return [
            InstanceView(
                r.instance_id, r.package.plugin_id, r.state, r.cursor, r.attempts, r.last_error
            )
            for r in self.runners.values()
        ]
