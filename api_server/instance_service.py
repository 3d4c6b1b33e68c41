"""listener.v1.ListenerInstanceService: a plugin, its params and the events it takes."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable

from google.protobuf import empty_pb2
from sqlalchemy import exc as sa_exc

from api_server import instance_fields as fields
from api_server import instance_operations as operations
from api_server import names, paging, refusals, validation
from api_server.alert_fleet import AlertFleet
from api_server.instance_fields import instance_message
from event_store import catalog, events
from event_store.models import Delivery, ListenerInstance, utcnow
from event_store.store import Store
from listener.v1 import listener_instance_pb2, listener_instance_pb2_grpc
from listener_core import errors
from listener_core.secrets import SecretBox
from listener_core.server import Context

pb = listener_instance_pb2
_UPDATABLE = {"display_name", "params", "event_types", "failure_policy", "filter"}


class ListenerInstanceService(listener_instance_pb2_grpc.ListenerInstanceServiceServicer):
    """The instances' desired state here; the operator actions' store work in
    ``instance_operations``, each answered with the instance as it is then."""

    def __init__(self, store: Store, fleet: AlertFleet, *, secrets: SecretBox) -> None:
        self.store = store
        self.fleet = fleet
        self.secrets = secrets

    async def _act(
        self, name: str, action: Callable[[Store, str], Awaitable[None]]
    ) -> pb.ListenerInstance:
        """An operator action on the instance ``name``, answered with the instance after it."""
        instance_id = names.parse(name, names.INSTANCES)
        await action(self.store, instance_id)
        return await self._current(instance_id)

    async def _current(self, instance_id: str) -> pb.ListenerInstance:
        """After an operator action: the runner told at once, and the instance as it is."""
        await self.fleet.kick(instance_id)
        async with self.store.reader() as session:
            return await instance_message(session, await catalog.get_instance(session, instance_id))

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
        types = fields.event_types_field(li.event_types, "listener_instance.event_types")
        policy, park_after = fields.failure_policy(
            li.failure_policy, "listener_instance.failure_policy"
        )
        content_filter = fields.content_filter(li.filter, types, "listener_instance.filter")
        try:
            async with self.store.transaction() as session:
                if await session.get(ListenerInstance, instance_id) is not None:
                    raise errors.AlreadyExists(
                        f"listener instance {names.instance_name(instance_id)} already exists"
                    )
                plugin = await catalog.get_plugin(session, plugin_id)
                params_json = fields.sealed_params(
                    json.loads(plugin.params_json), li.params, {}, self.secrets
                )
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
                message = await instance_message(session, row)
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
            return await instance_message(session, await catalog.get_instance(session, instance_id))

    async def ListListenerInstances(
        self, request: pb.ListListenerInstancesRequest, context: Context
    ) -> pb.ListListenerInstancesResponse:
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token)
        async with self.store.reader() as session:
            rows, more = await paging.read_page(
                lambda limit: catalog.list_instances(session, after, limit), size
            )
            messages = [await instance_message(session, r) for r in rows]
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
                row.failure_policy, row.park_after = fields.failure_policy(
                    li.failure_policy, "listener_instance.failure_policy"
                )
            if "event_types" in paths:
                row.event_types = fields.event_types_field(
                    li.event_types, "listener_instance.event_types"
                )
            if "filter" in paths or "event_types" in paths:
                text = li.filter if "filter" in paths else row.filter
                row.filter = fields.content_filter(
                    text, row.event_types, "listener_instance.filter"
                )
            if "params" in paths:
                plugin = await catalog.get_plugin(session, row.plugin_id)
                row.params_json = fields.sealed_params(
                    json.loads(plugin.params_json),
                    li.params,
                    json.loads(row.params_json),
                    self.secrets,
                )
            row.revision += 1
            row.update_time = utcnow()
            await session.flush()
            message = await instance_message(session, row)
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

    async def RetryListenerInstance(
        self, request: pb.RetryListenerInstanceRequest, context: Context
    ) -> pb.ListenerInstance:
        return await self._act(request.name, operations.retry)

    async def SkipListenerInstanceEvent(
        self, request: pb.SkipListenerInstanceEventRequest, context: Context
    ) -> pb.ListenerInstance:
        return await self._act(request.name, operations.skip)

    async def PauseListenerInstance(
        self, request: pb.PauseListenerInstanceRequest, context: Context
    ) -> pb.ListenerInstance:
        return await self._act(request.name, operations.pause)

    async def ResumeListenerInstance(
        self, request: pb.ResumeListenerInstanceRequest, context: Context
    ) -> pb.ListenerInstance:
        return await self._act(request.name, operations.resume)

    async def ReplayListenerInstance(
        self, request: pb.ReplayListenerInstanceRequest, context: Context
    ) -> pb.ListenerInstance:
        return await self._act(request.name, functools.partial(operations.replay, request=request))

    async def ListParkedEvents(
        self, request: pb.ListParkedEventsRequest, context: Context
    ) -> pb.ListParkedEventsResponse:
        instance_id = names.parse(request.parent, names.INSTANCES, "parent")
        return await operations.parked_page(self.store, instance_id, request)

    async def RedeliverParkedEvents(
        self, request: pb.RedeliverParkedEventsRequest, context: Context
    ) -> pb.RedeliverParkedEventsResponse:
        instance_id = names.parse(request.parent, names.INSTANCES, "parent")
        count = await operations.redeliver(self.store, instance_id, request)
        await self.fleet.kick(instance_id)
        return pb.RedeliverParkedEventsResponse(count=count)

    async def SendTestEvent(
        self, request: pb.SendTestEventRequest, context: Context
    ) -> pb.SendTestEventResponse:
        instance_id = names.parse(request.name, names.INSTANCES)
        async with self.store.reader() as session:
            await catalog.get_instance(session, instance_id)
        event = operations.test_event(int(request.event_type))
        reply = await self.fleet.send_test(instance_id, event.SerializeToString())
        return pb.SendTestEventResponse(
            delivered=not reply.error, error=reply.error, duration_ms=reply.duration_ms
        )
