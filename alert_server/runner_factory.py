"""Building a delivery runner for an instance from its rows: params typed and opened, filter
compiled, and the state many runners start from read at once."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from alert_server.delivery import InstanceRunner
from alert_server.loader import LoadedPackage
from alert_server.runner_spec import InstanceSpec, RunnerDeps
from event_store import catalog, deliveries
from event_store.models import Delivery, ListenerInstance, Plugin
from listener_common import params as sdk_params
from listener_common._dispatch import FailurePolicy
from listener_core.event_filter import compile_filter
from listener_core.secrets import SecretBox, open_params

log = logging.getLogger(__name__)

#: Instances read in one query when many start at once.
READ_CHUNK = 500


@dataclass
class StartRows:
    """What many instances start from, read in four queries (``RunnerFactory.read_rows``)."""

    instances: dict[str, ListenerInstance] = field(default_factory=dict)
    plugins: dict[str, Plugin] = field(default_factory=dict)
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    redeliver: dict[str, list[int]] = field(default_factory=dict)

    def of(self, instance_id: str) -> tuple[ListenerInstance, Plugin, Delivery] | None:
        """The instance's rows, or None when one of them was not read."""
        inst, row = self.instances.get(instance_id), self.deliveries.get(instance_id)
        plugin = self.plugins.get(inst.plugin_id) if inst is not None else None
        if inst is None or row is None or plugin is None:
            return None
        return inst, plugin, row


class RunnerFactory:
    """Builds runners that share ``deps``; ``secrets`` opens sealed secret params."""

    def __init__(self, deps: RunnerDeps, secrets: SecretBox | None = None) -> None:
        self.deps = deps
        self.secrets = secrets

    def spec(self, inst: ListenerInstance, plugin: Plugin) -> InstanceSpec:
        """What the instance asks of its runner; raises for params the form rejects."""
        form = json.loads(plugin.params_json)
        config = sdk_params.typed_config(
            form, open_params(self.secrets, json.loads(inst.params_json))
        )
        types = [int(t) for t in inst.event_types.split(",") if t]
        return InstanceSpec(
            inst.id,
            config,
            types,
            FailurePolicy(inst.failure_policy, inst.park_after),
            compile_filter(inst.filter, types),
        )

    def build(
        self, inst: ListenerInstance, plugin: Plugin, package: LoadedPackage, fence: int
    ) -> InstanceRunner:
        """A runner for the instance, not started."""
        return InstanceRunner(self.spec(inst, plugin), package, fence, self.deps)

    async def read_one(
        self, instance_id: str, fence: int | None
    ) -> tuple[ListenerInstance, Plugin, int]:
        """The rows one instance starts from, and its fence (the stored one if not given)."""
        async with self.deps.store.reader() as session:
            inst = await catalog.get_instance(session, instance_id)
            plugin = await catalog.get_plugin(session, inst.plugin_id)
            if fence is None:
                delivery = await session.get(Delivery, instance_id)
                fence = delivery.fence if delivery is not None else 0
        return inst, plugin, fence

    async def read_rows(self, instance_ids: Sequence[str]) -> StartRows:
        """The rows of up to ``READ_CHUNK`` instances in four queries (a restart with 1,000
        instances made 5,000 one by one); empty when the read fails, so that each instance
        is then started alone."""
        try:
            async with self.deps.store.reader() as session:
                instances = await catalog.instances_by_id(session, instance_ids)
                plugins = await catalog.plugins_by_id(
                    session, {i.plugin_id for i in instances.values()}
                )
                rows = await deliveries.deliveries_by_id(session, instance_ids)
                redeliver = await deliveries.redeliveries_of(session, instance_ids)
        except Exception as exc:
            log.warning("reading %d instances failed (%s); one by one", len(instance_ids), exc)
            return StartRows()
        return StartRows(instances, plugins, rows, redeliver)
