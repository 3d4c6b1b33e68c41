"""A small typed async client of the listener.v1 API, over the generated stubs.

Every call carries a deadline (``timeout``) and, when given, the bearer token; UNAVAILABLE
answers are retried by gRPC itself (the channel's service config), so a restarting server or
a dropped connection costs a short wait rather than an error. Publishes get a ``request_id``
when the caller gives none, so such a retry can never store an event twice. Every failure
surfaces as :class:`ListenerClientError`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from listener.v1 import event_pb2, plugin_pb2, plugin_pb2_grpc
from listener.v1 import event_service_pb2 as ev
from listener.v1 import event_service_pb2_grpc as ev_grpc
from listener.v1 import listener_instance_pb2 as li
from listener.v1 import listener_instance_pb2_grpc as li_grpc
from listener_client import paging, requests, values
from listener_client.channels import client_options, open_channel
from listener_client.errors import ListenerClientError
from listener_client.values import (
    INSTANCES,
    PLUGINS,
    EventLike,
    Package,
    Progress,
    event_type,
    read_package,
    resource_name,
    to_event,
)

T = TypeVar("T")
Page = TypeVar("Page")
Item = TypeVar("Item")

STREAM_THRESHOLD = 1 << 20
CHUNK_SIZE = 256 << 10


def _instance(instance_id: str) -> str:
    return resource_name(INSTANCES, instance_id)


class ListenerClient:
    """``async with ListenerClient("127.0.0.1:50051") as client: ...``

    ``token`` goes as ``authorization: Bearer <token>`` with every call. ``tls_ca`` (a PEM
    file) makes the channel TLS and is the CA the server's certificate must chain to;
    ``tls=True`` without it trusts the system's roots; ``tls_cert`` and ``tls_key`` present a
    client certificate (mTLS). ``timeout`` is every call's deadline, in seconds.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        tls: bool = False,
        tls_server_name: str = "",
        max_message_bytes: int = 64 << 20,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.channel = open_channel(
            target,
            client_options(max_message_bytes),
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_server_name=tls_server_name,
        )
        self._plugins = plugin_pb2_grpc.PluginServiceStub(self.channel)
        self._instances = li_grpc.ListenerInstanceServiceStub(self.channel)
        self._events = ev_grpc.EventServiceStub(self.channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Any, request: Any, result: type[T]) -> T:
        try:
            reply = await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise ListenerClientError.from_rpc_error(exc) from None
        return cast(T, reply)

    async def _every_page(
        self,
        method: Any,
        request: Any,
        result: type[Page],
        items: Callable[[Page], Iterable[Item]],
        limit: int | None = None,
    ) -> list[Item]:
        """Every item of a List method's pages, or the first ``limit`` (``paging``)."""
        return await paging.every_page(
            lambda r: self._call(method, r, result), request, items, limit
        )

    async def health(self, service: str = "") -> bool:
        """Whether the server (or one of its services) answers SERVING to grpc.health.v1."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        reply = await self._call(
            stub.Check,
            health_pb2.HealthCheckRequest(service=service),
            health_pb2.HealthCheckResponse,
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    # -- plugins ------------------------------------------------------------------------

    async def upload_package(
        self,
        package: Package,
        *,
        progress: Progress | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> plugin_pb2.UploadPluginPackageResponse:
        """Streams a package in chunks (UploadPluginPackage); the server checks its sha256."""
        chunks = requests.package_chunks(read_package(package), chunk_size, progress)
        return await self._call(
            self._plugins.UploadPluginPackage, chunks, plugin_pb2.UploadPluginPackageResponse
        )

    async def _source(
        self, request: Any, package: Package, progress: Progress | None, threshold: int, chunk: int
    ) -> None:
        """The package in the request, or uploaded first when above ``threshold`` bytes."""
        data = read_package(package)
        if len(data) > threshold:
            uploaded = await self.upload_package(data, progress=progress, chunk_size=chunk)
            request.package_sha256 = uploaded.sha256
            return
        request.package = data
        if progress is not None:
            progress(len(data), len(data))

    async def install_plugin(
        self,
        package: Package,
        *,
        plugin_id: str = "",
        display_name: str = "",
        isolation: str | None = None,
        progress: Progress | None = None,
        stream_threshold: int = STREAM_THRESHOLD,
        chunk_size: int = CHUNK_SIZE,
    ) -> plugin_pb2.Plugin:
        """Installs a package (zip bytes or a zip's path); the id defaults to the manifest's
        name. Packages above ``stream_threshold`` bytes go by UploadPluginPackage first."""
        request = plugin_pb2.CreatePluginRequest(
            plugin_id=plugin_id,
            plugin=plugin_pb2.Plugin(
                display_name=display_name,
                isolation=cast(Any, values.isolation(isolation)),
            ),
        )
        await self._source(request, package, progress, stream_threshold, chunk_size)
        return await self._call(self._plugins.CreatePlugin, request, plugin_pb2.Plugin)

    async def update_plugin(
        self,
        plugin_id: str,
        package: Package | None = None,
        *,
        display_name: str | None = None,
        isolation: str | None = None,
        etag: str = "",
        progress: Progress | None = None,
        stream_threshold: int = STREAM_THRESHOLD,
        chunk_size: int = CHUNK_SIZE,
    ) -> plugin_pb2.Plugin:
        """Hot-swaps to a new package and/or changes the display name or isolation."""
        request = requests.plugin_update(
            plugin_id, display_name=display_name, isolation_mode=isolation, etag=etag
        )
        if package is not None:
            await self._source(request, package, progress, stream_threshold, chunk_size)
        return await self._call(self._plugins.UpdatePlugin, request, plugin_pb2.Plugin)

    async def uninstall_plugin(self, plugin_id: str, *, etag: str = "") -> None:
        request = plugin_pb2.DeletePluginRequest(name=resource_name(PLUGINS, plugin_id), etag=etag)
        await self._call(self._plugins.DeletePlugin, request, object)

    async def get_plugin(self, plugin_id: str) -> plugin_pb2.Plugin:
        request = plugin_pb2.GetPluginRequest(name=resource_name(PLUGINS, plugin_id))
        return await self._call(self._plugins.GetPlugin, request, plugin_pb2.Plugin)

    async def list_plugins(self) -> list[plugin_pb2.Plugin]:
        """Every installed plugin (all pages)."""
        return await self._every_page(
            self._plugins.ListPlugins,
            plugin_pb2.ListPluginsRequest(),
            plugin_pb2.ListPluginsResponse,
            lambda page: page.plugins,
        )

    # -- listener instances -------------------------------------------------------------

    async def create_instance(
        self,
        instance_id: str,
        plugin: str,
        *,
        event_types: Iterable[str | int],
        params: Mapping[str, object] | None = None,
        display_name: str = "",
        park_after: int | None = None,
        filter: str = "",
    ) -> li.ListenerInstance:
        """Creates an instance of ``plugin``; ``park_after`` chooses the park policy (park a
        failing event after that many attempts) over the default blocking one; ``filter``, a
        CEL expression over ``event``, chooses events by content (docs/api.md)."""
        request = requests.new_instance(
            instance_id,
            plugin,
            event_types=event_types,
            params=params,
            display_name=display_name,
            park_after=park_after,
            filter=filter,
        )
        return await self._action(self._instances.CreateListenerInstance, request)

    async def update_instance(
        self,
        instance_id: str,
        *,
        params: Mapping[str, object] | None = None,
        event_types: Iterable[str | int] | None = None,
        display_name: str | None = None,
        park_after: int | None = None,
        block: bool = False,
        filter: str | None = None,
        etag: str = "",
    ) -> li.ListenerInstance:
        """Changes only what is given. ``params`` replaces the whole map (a secret sent back
        masked keeps its stored value); ``park_after`` or ``block`` sets the failure policy;
        ``filter`` replaces the content filter ("" removes it)."""
        request = requests.instance_update(
            instance_id,
            params=params,
            event_types=event_types,
            display_name=display_name,
            park_after=park_after,
            block=block,
            filter=filter,
            etag=etag,
        )
        return await self._action(self._instances.UpdateListenerInstance, request)

    async def delete_instance(self, instance_id: str, *, etag: str = "") -> None:
        request = li.DeleteListenerInstanceRequest(name=_instance(instance_id), etag=etag)
        await self._call(self._instances.DeleteListenerInstance, request, object)

    async def get_instance(self, instance_id: str) -> li.ListenerInstance:
        """The instance with its delivery status (pending, lag, last error, attempts…)."""
        request = li.GetListenerInstanceRequest(name=_instance(instance_id))
        return await self._action(self._instances.GetListenerInstance, request)

    async def list_instances(self) -> list[li.ListenerInstance]:
        return await self._every_page(
            self._instances.ListListenerInstances,
            li.ListListenerInstancesRequest(),
            li.ListListenerInstancesResponse,
            lambda page: page.listener_instances,
        )

    async def _action(self, method: Any, request: Any) -> li.ListenerInstance:
        return await self._call(method, request, li.ListenerInstance)

    async def retry(self, instance_id: str) -> li.ListenerInstance:
        """Retries the failed head event now rather than at its next backoff time."""
        request = li.RetryListenerInstanceRequest(name=_instance(instance_id))
        return await self._action(self._instances.RetryListenerInstance, request)

    async def skip(self, instance_id: str) -> li.ListenerInstance:
        """Parks the failed head event and goes on with the next."""
        request = li.SkipListenerInstanceEventRequest(name=_instance(instance_id))
        return await self._action(self._instances.SkipListenerInstanceEvent, request)

    async def pause(self, instance_id: str) -> li.ListenerInstance:
        request = li.PauseListenerInstanceRequest(name=_instance(instance_id))
        return await self._action(self._instances.PauseListenerInstance, request)

    async def resume(self, instance_id: str) -> li.ListenerInstance:
        request = li.ResumeListenerInstanceRequest(name=_instance(instance_id))
        return await self._action(self._instances.ResumeListenerInstance, request)

    async def replay(
        self,
        instance_id: str,
        *,
        from_sequence: int | None = None,
        from_time: datetime | None = None,
    ) -> li.ListenerInstance:
        """Delivers again every subscribed event from a sequence or a publish time on."""
        request = requests.replay(instance_id, from_sequence, from_time)
        return await self._action(self._instances.ReplayListenerInstance, request)

    async def list_parked(self, instance_id: str) -> list[li.ParkedEvent]:
        """The instance's dead-letter list (all pages)."""
        return await self._every_page(
            self._instances.ListParkedEvents,
            li.ListParkedEventsRequest(parent=_instance(instance_id)),
            li.ListParkedEventsResponse,
            lambda page: page.parked_events,
        )

    async def redeliver(self, instance_id: str, sequences: Iterable[int] = ()) -> int:
        """Asks for parked events to be delivered again (all when none are named); returns
        how many were queued."""
        reply = await self._call(
            self._instances.RedeliverParkedEvents,
            li.RedeliverParkedEventsRequest(
                parent=_instance(instance_id), sequences=list(sequences)
            ),
            li.RedeliverParkedEventsResponse,
        )
        return int(reply.count)

    async def send_test(
        self, instance_id: str, event_type_name: str | int
    ) -> li.SendTestEventResponse:
        """Hands a sample event of that type to the instance's plugin now (not stored)."""
        request = li.SendTestEventRequest(
            name=_instance(instance_id),
            event_type=cast(Any, event_type(event_type_name)),
        )
        return await self._call(self._instances.SendTestEvent, request, li.SendTestEventResponse)

    # -- events -------------------------------------------------------------------------

    async def publish(
        self, event: EventLike, *, request_id: str | None = None
    ) -> ev.PublishEventResponse:
        """Stores one event; returns its id and sequence once it is committed."""
        request = ev.PublishEventRequest(
            event=to_event(event), request_id=request_id or str(uuid.uuid4())
        )
        return await self._call(self._events.PublishEvent, request, ev.PublishEventResponse)

    async def publish_batch(
        self, events: Iterable[EventLike], *, request_id: str | None = None
    ) -> list[ev.PublishEventResponse]:
        """Stores a batch, all or nothing, in order."""
        request = ev.PublishEventsRequest(
            events=[to_event(e) for e in events], request_id=request_id or str(uuid.uuid4())
        )
        reply = await self._call(self._events.PublishEvents, request, ev.PublishEventsResponse)
        return list(reply.events)

    async def list_events(
        self,
        *,
        after_sequence: int = 0,
        event_types: Iterable[str | int] = (),
        limit: int | None = None,
    ) -> list[event_pb2.ListenerEvent]:
        """Stored events after ``after_sequence``, in order, up to ``limit``."""
        types = [event_type(t) for t in event_types]
        return await self._every_page(
            self._events.ListEvents,
            ev.ListEventsRequest(after_sequence=after_sequence, event_types=cast(Any, types)),
            ev.ListEventsResponse,
            lambda page: page.events,
            limit,
        )
