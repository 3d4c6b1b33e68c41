"""listener.v1.ListenerInstanceService: a plugin, its params and the events it takes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import empty_pb2
from sqlalchemy import exc as sa_exc

from api_server import conversions, names, paging, refusals, validation
from api_server.alert_fleet import AlertFleet
from api_server.instance_operations import InstanceOperations
from event_store import catalog, deliveries, events
from event_store.models import Delivery, ListenerInstance, Plugin, utcnow
from event_store.store import Store
from listener import event_types
from listener.v1 import listener_instance_pb2, listener_instance_pb2_grpc
from listener_common import params as sdk_params
from listener_core import errors, event_filter
from listener_core.secrets import SecretBox
from listener_core.server import Context

pb = listener_instance_pb2
_UPDATABLE = {"display_name", "params", "event_types", "failure_policy", "filter"}


def _types(values: Iterable[int], field: str) -> str:
    chosen = list(values)
    if not chosen:
        raise errors.InvalidArgument(
            "event_types must name at least one event type",
            field_violations=[(field, "required")],
        )
    bad = [v for v in chosen if v not in event_types.ALL]
    if bad:
        raise errors.InvalidArgument(
            f"unknown event type(s) {bad}",
            field_violations=[(field, f"unknown event type {v}") for v in bad],
        )
    return ",".join(str(v) for v in sorted(set(chosen)))


def _policy(policy: pb.FailurePolicy, field: str) -> tuple[str, int]:
    mode = policy.mode or pb.FailurePolicy.MODE_BLOCK
    if mode == pb.FailurePolicy.MODE_BLOCK:
        if policy.park_after:
            raise errors.InvalidArgument(
                f"{field}.park_after applies to MODE_PARK only",
                field_violations=[(f"{field}.park_after", "only with MODE_PARK")],
            )
        return "block", 0
    if mode == pb.FailurePolicy.MODE_PARK:
        if not 1 <= policy.park_after <= 1000:
            raise errors.InvalidArgument(
                f"{field}.park_after must be between 1 and 1000 with MODE_PARK",
                field_violations=[(f"{field}.park_after", "must be 1..1000")],
            )
        return "park", policy.park_after
    raise errors.InvalidArgument(
        f"{field}.mode {mode} is unknown", field_violations=[(f"{field}.mode", "unknown")]
    )


def _filter(text: str, types: str, field: str) -> str:
    """Checks the filter against the event schema for the instance's types (compiled again
    by the alert server that runs it); returns it as stored."""
    try:
        event_filter.compile_filter(text, conversions.event_types(types))
    except event_filter.FilterError as exc:
        raise errors.InvalidArgument(
            f"{field} is not a usable filter: {exc}", field_violations=[(field, str(exc))]
        ) from None
    return text.strip()


def _params(
    form: list[dict[str, Any]], given: Mapping[str, str], old: Mapping[str, str], box: SecretBox
) -> str:
    """Validates params and seals the secret ones for the store.

    A secret sent back masked, or left out, keeps its stored value (callers never see it, so
    they cannot send it back); an empty string clears it.
    """
    secret = sdk_params.secret_fields(form)
    merged = {
        k: (old.get(k, "") if k in secret and v == conversions.MASK else v)
        for k, v in given.items()
    }
    merged.update({k: old[k] for k in secret if k not in given and k in old})
    checked = sdk_params.validate_params(form, merged)
    return json.dumps(box.seal_params(form, checked), sort_keys=True)


class ListenerInstanceService(
    InstanceOperations, listener_instance_pb2_grpc.ListenerInstanceServiceServicer
):
    def __init__(self, store: Store, fleet: AlertFleet, *, secrets: SecretBox) -> None:
        self.store = store
        self.fleet = fleet
        self.secrets = secrets

    async def _message(self, session: Any, row: ListenerInstance) -> pb.ListenerInstance:
        plugin = await session.get(Plugin, row.plugin_id)
        st = await deliveries.status(session, row.id, conversions.event_types(row.event_types))
        form = json.loads(plugin.params_json) if plugin else []
        return conversions.instance_message(row, form, st)

    async def CreateListenerInstance(
        self, request: pb.CreateListenerInstanceRequest, context: Context
    ) -> pb.ListenerInstance:
        li = request.listener_instance
        instance_id = (
            names.check_id(request.listener_instance_id, "listener_instance_id")
            if request.listener_instance_id
            else names.new_instance_id()
        )
        plugin_id = names.parse(li.plugin, names.PLUGINS, "listener_instance.plugin")
        types = _types(li.event_types, "listener_instance.event_types")
        policy, park_after = _policy(li.failure_policy, "listener_instance.failure_policy")
        content_filter = _filter(li.filter, types, "listener_instance.filter")
        try:
            async with self.store.transaction() as session:
                if await session.get(ListenerInstance, instance_id) is not None:
                    raise errors.AlreadyExists(
                        f"listener instance {names.instance_name(instance_id)} already exists"
                    )
                plugin = await catalog.get_plugin(session, plugin_id)
                params_json = _params(json.loads(plugin.params_json), li.params, {}, self.secrets)
                now = utcnow()
                row = ListenerInstance(
                    id=instance_id,
                    display_name=li.display_name or instance_id,
                    plugin_id=plugin_id,
                    params_json=params_json,
                    event_types=types,
                    failure_policy=policy,
                    park_after=park_after,
                    filter=content_filter,
                    desired_state="ACTIVE",
                    revision=1,
                    create_time=now,
                    update_time=now,
                )
                session.add(row)
                # New instances take the events published from now on.
                session.add(
                    Delivery(
                        instance_id=instance_id,
                        delivered_seq=await events.max_sequence(session),
                        attempts=0,
                        last_error="",
                        update_time=now,
                    )
                )
                await session.flush()
                message = await self._message(session, row)
        except sa_exc.IntegrityError:
            raise errors.AlreadyExists(
                f"listener instance {names.instance_name(instance_id)} already exists"
            ) from None
        await self.fleet.apply_instance(instance_id)
        return message

    async def GetListenerInstance(
        self, request: pb.GetListenerInstanceRequest, context: Context
    ) -> pb.ListenerInstance:
        instance_id = names.parse(request.name, names.INSTANCES)
        async with self.store.reader() as session:
            return await self._message(session, await catalog.get_instance(session, instance_id))

    async def ListListenerInstances(
        self, request: pb.ListListenerInstancesRequest, context: Context
    ) -> pb.ListListenerInstancesResponse:
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token)
        async with self.store.reader() as session:
            rows, more = await paging.read_page(
                lambda limit: catalog.list_instances(session, after, limit), size
            )
            messages = [await self._message(session, r) for r in rows]
        return pb.ListListenerInstancesResponse(
            listener_instances=messages,
            next_page_token=paging.encode(rows[-1].id) if more else "",
        )

    async def UpdateListenerInstance(
        self, request: pb.UpdateListenerInstanceRequest, context: Context
    ) -> pb.ListenerInstance:
        li = request.listener_instance
        instance_id = names.parse(li.name, names.INSTANCES, "listener_instance.name")
        populated = {f.name for f, _ in li.ListFields()}  # set, non-empty fields (AIP-134)
        paths = validation.mask_paths(request.update_mask.paths, _UPDATABLE, populated)
        async with self.store.transaction() as session:
            row = await catalog.get_instance(session, instance_id, for_update=True)
            refusals.check_etag("listener instance", li.name, row.revision, li.etag)
            if "display_name" in paths:
                row.display_name = li.display_name or instance_id
            if "failure_policy" in paths:
                row.failure_policy, row.park_after = _policy(
                    li.failure_policy, "listener_instance.failure_policy"
                )
            if "event_types" in paths:
                row.event_types = _types(li.event_types, "listener_instance.event_types")
            if "filter" in paths or "event_types" in paths:
                text = li.filter if "filter" in paths else row.filter
                row.filter = _filter(text, row.event_types, "listener_instance.filter")
            if "params" in paths:
                plugin = await catalog.get_plugin(session, row.plugin_id)
                row.params_json = _params(
                    json.loads(plugin.params_json),
                    li.params,
                    json.loads(row.params_json),
                    self.secrets,
                )
            row.revision += 1
            row.update_time = utcnow()
            await session.flush()
            message = await self._message(session, row)
        await self.fleet.apply_instance(instance_id)
        return message

    async def DeleteListenerInstance(
        self, request: pb.DeleteListenerInstanceRequest, context: Context
    ) -> empty_pb2.Empty:
        instance_id = names.parse(request.name, names.INSTANCES)
        async with self.store.transaction() as session:
            row = await catalog.get_instance(session, instance_id, for_update=True)
            refusals.check_etag("listener instance", request.name, row.revision, request.etag)
            delivery = await session.get(Delivery, instance_id)
            if delivery is not None:
                await session.delete(delivery)
                await session.flush()
            await session.delete(row)
        await self.fleet.remove_instance(instance_id)
        return empty_pb2.Empty()
