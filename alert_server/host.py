"""The alert server's state: which packages are loaded and which instances run here.

Desired state lives in the store; the host converges to it at start (``reconcile``), on each
internal RPC and each lease cycle. It holds the runners (one per instance it delivers) and
coordinates four parts, each with its own job::

    PluginHost (the lock, the runners, the internal RPCs' operations)
    ├── Packages        packages.py       the loaded version of each plugin; hot swaps
    ├── LeakWatch       leak_watch.py     unloaded versions watched until they are gone
    ├── LeaseBalancer   lease_balance.py  renewals, validity, the fair share, claims
    └── RunnerFactory   runner_factory.py a runner from an instance's rows

Changes are serialised by one lock, so concurrent loads, swaps, unloads and lease cycles never
interleave; a caller that gives up cannot cut one in half (``_serialised``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alert_server.child_process import ProcessSettings
from alert_server.delivery import InstanceRunner
from alert_server.leak_watch import LeakReport, LeakWatch
from alert_server.lease_balance import LeaseBalancer
from alert_server.loader import LoadedPackage
from alert_server.packages import Packages
from alert_server.progress import ProgressWriter
from alert_server.reads import SharedReads
from alert_server.runner_factory import READ_CHUNK, RunnerFactory
from alert_server.runner_spec import RunnerDeps
from alert_server.wakeup import SequenceSignal
from event_store import deliveries
from event_store.events import StoredEvent
from event_store.models import ListenerInstance, Plugin
from event_store.store import Store
from listener_core.metrics import NO_METRICS, AlertMetrics, NullMetrics
from listener_core.secrets import SecretBox
from listener_core.settings import DeliverySettings, LeaseSettings, PackageLimits
from listener_core.tracing import Tracing

log = logging.getLogger(__name__)

T = TypeVar("T")


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieves a shielded task's outcome, which its cancelled caller no longer will."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class InstanceView:
    instance_id: str
    plugin_id: str
    state: str
    cursor: int
    attempts: int
    last_error: str


@dataclass(frozen=True)
class HostStatus:
    """What ``GetStatus`` shows: loaded versions, leaking unloaded ones, running instances."""

    plugins: list[LoadedPackage]
    leaks: list[LeakReport]
    instances: list[InstanceView]


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
        params for plugins; ``metrics`` counts plugin load times and the runners' deliveries;
        ``tracing`` makes a delivery span per batch (None: off)."""
        leases = leases or LeaseSettings()
        self.server_id = server_id or leases.server_id or f"alert-{uuid.uuid4().hex[:12]}"
        self.address = address
        self.store = store
        self.progress = ProgressWriter(store, min_interval=settings.progress_interval)
        self.leak_watch = LeakWatch()
        self.packages = Packages(
            store,
            cache_dir,
            process or ProcessSettings(call_timeout=settings.handler_timeout),
            packages or PackageLimits(),
            self.leak_watch,
            close_timeout=settings.handler_timeout,
            metrics=metrics,
        )
        self.leases = LeaseBalancer(store, self.server_id, address, leases.ttl)
        deps = RunnerDeps(
            store,
            signal,
            settings,
            self.server_id,
            self.progress,
            SharedReads(store, signal),
            metrics,
            tracing,
        )
        self.factory = RunnerFactory(deps, secrets)
        self.runners: dict[str, InstanceRunner] = {}
        self._lock = asyncio.Lock()

    # -- packages -------------------------------------------------------------------------

    async def probe(
        self, plugin_id: str, data: bytes, sha256: str, isolation: str | None = None
    ) -> LoadedPackage:
        """Loads a package to check it and read its form, then unloads it (under the lock
        like every load: ``Packages.probe``)."""
        return await self._serialised(
            lambda: self.packages.probe(plugin_id, data, sha256, isolation)
        )

    async def load_plugin(
        self, plugin_id: str, sha256: str, isolation: str | None = None, package: bytes = b""
    ) -> LoadedPackage:
        """Makes ``plugin_id`` run the package ``sha256``, hot-swapping running instances.

        ``package`` is the package's bytes if the caller sent them (else they are fetched from
        the store). ``isolation`` defaults to the plugin row's (which an admin may have set),
        then to the package manifest's.
        """
        if package:
            self.packages.keep(sha256, package)
        if not isolation:
            isolation = await self.packages.isolation_of(plugin_id, sha256)
        return await self._serialised(lambda: self._activate(plugin_id, sha256, isolation))

    async def _activate(
        self, plugin_id: str, sha256: str, isolation: str | None = None
    ) -> LoadedPackage:
        return await self.packages.activate(
            plugin_id, sha256, isolation, list(self.runners.values())
        )

    async def unload_plugin(self, plugin_id: str) -> None:
        async def work() -> None:
            for iid in [i for i, r in self.runners.items() if r.package.plugin_id == plugin_id]:
                await self.runners.pop(iid).stop()
            self.packages.unload(plugin_id)

        await self._serialised(work)

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

    # -- instances ------------------------------------------------------------------------

    async def apply_instance(self, instance_id: str) -> None:
        """Restarts the instance with its new settings if it runs here; else claims its lease
        if free and within this server's share (``LeaseBalancer.claim_new``), leaving every
        other lease to the next cycle: a created instance costs one claim, not a renewal of
        every held lease."""
        async with self._lock:
            if instance_id in self.runners:
                await self._stop_runner(instance_id)
                await self._start_owned(instance_id, None)
                await self._clear_start_failure(instance_id)
                self.runners[instance_id].kick()
                return
            # new, or not running here: claim just its lease if free and within the share
            claimed = await self.leases.claim_new(instance_id)
            if claimed is not None:
                await self._start_many(dict(claimed))
                return
        await self.lease_cycle()  # no renewal to reckon the share from yet

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

    async def send_test_event(self, instance_id: str, event: StoredEvent) -> str | None:
        """Hands a test event to the instance's plugin: the error ('' for none), or None
        when the instance does not run here."""
        runner = self.runners.get(instance_id)
        return None if runner is None else await runner.deliver_test(event)

    def status(self) -> HostStatus:
        return HostStatus(
            list(self.packages.loaded.values()), self.leak_watch.reports(), self.instance_views()
        )

    def instance_views(self) -> list[InstanceView]:
        return [
            InstanceView(
                r.instance_id, r.package.plugin_id, r.state, r.cursor, r.attempts, r.last_error
            )
            for r in self.runners.values()
        ]

    async def _stop_runner(self, instance_id: str) -> None:
        runner = self.runners.pop(instance_id, None)
        if runner is not None:
            await runner.stop()

    async def _start_many(self, fences: dict[str, int | None]) -> None:
        """Starts runners for many owned instances with one read of their rows. An instance
        that cannot start is retried alone, which records its error."""
        ids = [iid for iid in fences if iid not in self.runners]
        for chunk in (ids[i : i + READ_CHUNK] for i in range(0, len(ids), READ_CHUNK)):
            rows = await self.factory.read_rows(chunk)
            for iid in chunk:
                found = rows.of(iid)
                if found is None:
                    await self._try_start(iid, fences[iid])
                    continue
                inst, plugin, row = found
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
                else:  # a cleared state the runner reads itself
                    runner.preload(row, inst, rows.redeliver.get(iid, []))
                runner.start()

    async def _start_owned(self, instance_id: str, fence: int | None) -> None:
        """Starts a runner for an instance this server holds the lease of."""
        inst, plugin, fence = await self.factory.read_one(instance_id, fence)
        await self._start_runner(inst, plugin, fence)

    async def _start_runner(
        self, inst: ListenerInstance, plugin: Plugin, fence: int, *, start: bool = True
    ) -> InstanceRunner:
        loaded = await self._activate(plugin.id, plugin.sha256, plugin.isolation)
        runner = self.factory.build(inst, plugin, loaded, fence)
        runner.extend_lease(self.leases.valid_until(inst.id))
        self.runners[inst.id] = runner
        if start:
            runner.start()
        return runner

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

    # -- convergence ----------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Converges to the store at start: loads every plugin, then claims instances."""
        async with self._lock:
            for plugin in await self.packages.all_plugins():
                try:
                    await self._activate(plugin.id, plugin.sha256, plugin.isolation)
                except Exception as exc:
                    self.packages.load_errors[plugin.id] = str(exc)
                    log.error("plugin %s failed to load: %s", plugin.id, exc)
        await self.lease_cycle()

    async def lease_cycle(self) -> None:
        """Heartbeat, renew leases, drop lost instances, and take or give a fair share.

        The renewal's send time bounds how long its leases may be acted on; leases of
        others are taken only once seen unchanged for a full term (``lease_balance``)."""
        async with self._lock:
            renewal = await self.leases.renew()
            self._extend_leases(renewal.owned)
            # No list of (id, runner) pairs: 10,000 tuples a cycle were food for the collector.
            lost = [i for i, r in self.runners.items() if i not in renewal.owned or r.stopped]
            for iid in lost:
                await self._stop_runner(iid)
            for iid, runner in self.runners.items():
                if runner.fence != renewal.owned[iid]:
                    runner.kick()
            share = self.leases.share(renewal)
            for iid in list(renewal.owned)[share:]:
                await self._stop_runner(iid)  # hand over: another server is short
                await self.leases.release(renewal, iid)
            await self._start_many({i: None for i in renewal.owned if i not in self.runners})
            if len(renewal.owned) < share:
                claimed = await self.leases.claim(renewal, share - len(renewal.owned))
                await self._start_many(dict(claimed))

    def _extend_leases(self, instance_ids: dict[str, int]) -> None:
        """A renewal succeeded: the runners of these instances may deliver until its
        validity ends."""
        for iid in instance_ids:
            runner = self.runners.get(iid)
            if runner is not None:
                runner.extend_lease(self.leases.valid_until(iid))

    async def run_leases(self) -> None:
        """The lease loop: a cycle every third of the lease time."""
        while True:
            await asyncio.sleep(self.leases.ttl / 3)
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
            await self.progress.drain()  # also cursors of runners a cancelled cycle stopped
        await self.leases.leave()

    async def close(self) -> None:
        async with self._lock:
            for iid in list(self.runners):
                await self._stop_runner(iid)
            await self.progress.close()
            self.leak_watch.close()
            self.packages.close()
