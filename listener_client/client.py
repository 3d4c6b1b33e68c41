"""A small typed async client of the listener.v1 API, over the generated stubs.

Every call carries a deadline (``timeout``) and, when given, the bearer token; UNAVAILABLE
answers are retried by gRPC itself (the channel's service config), so a restarting server or
a dropped connection costs a short wait rather than an error. Publishes get a ``request_id``
when the caller gives none, so such a retry can never store an event twice. Every failure
surfaces as :class:`ListenerClientError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import grpc
from google.protobuf import field_mask_pb2, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from listener import event_types
from listener.v1 import (
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    listener_instance_pb2,
    listener_instance_pb2_grpc,
    plugin_pb2,
    plugin_pb2_grpc,
)
from listener_client.channels import open_channel
from listener_client.errors import ListenerClientError

T = TypeVar("T")
Page = TypeVar("Page")
Item = TypeVar("Item")

#: ``progress(sent_bytes, total_bytes)``, called as a package upload goes.
Progress = Callable[[int, int], None]
#: A plugin package: zip bytes, or the path of a zip file.
Package = bytes | str | os.PathLike[str]
#: An event to publish: a ListenerEvent, or its JSON form as a dict.
EventLike = event_pb2.ListenerEvent | Mapping[str, Any]

SERVICES = (
    "listener.v1.PluginService",
    "listener.v1.ListenerInstanceService",
    "listener.v1.EventService",
)
# Retries UNAVAILABLE (no connection, server restarting, store briefly down) with backoff:
# 5 attempts over about 1.5 s, within each call's deadline.
SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": s} for s in SERVICES],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
STREAM_THRESHOLD = 1 << 20
CHUNK_SIZE = 256 << 10
PAGE_SIZE = 500


def event_type(value: str | int) -> int:
    """An EventType number from ``TASK_FAIL``, ``task_fail``, ``EVENT_TYPE_TASK_FAIL`` or a
    number; raises ValueError naming the valid names."""
    if isinstance(value, int):
        if value not in event_pb2.EventType.values() or value == 0:
            raise ValueError(f"unknown event type {value}")
        return value
    name = value.strip().upper()
    if name.isdigit():
        return event_type(int(name))
    if not name.startswith("EVENT_TYPE_"):
        name = "EVENT_TYPE_" + name
    number: int
    try:
        number = event_pb2.EventType.Value(name)
    except ValueError:
        number = 0
    if not number:
        raise ValueError(f"unknown event type {value!r}; one of {', '.join(EVENT_TYPE_NAMES)}")
    return number


#: The 13 event type names without the ``EVENT_TYPE_`` prefix, in enum order.
EVENT_TYPE_NAMES = event_types.PUBLIC_NAMES


def type_name(number: int) -> str:
    """``TASK_FAIL`` for EventType 13 (the number itself when unknown)."""
    try:
        return event_pb2.EventType.Name(cast(Any, number)).removeprefix("EVENT_TYPE_")
    except ValueError:
        return str(number)


def to_event(value: EventLike) -> event_pb2.ListenerEvent:
    """A ListenerEvent from its JSON form (snake_case or camelCase field names)."""
    if isinstance(value, event_pb2.ListenerEvent):
        return value
    try:
        return json_format.ParseDict(dict(value), event_pb2.ListenerEvent())
    except json_format.ParseError as exc:
        raise ValueError(f"not a ListenerEvent: {exc}") from None


def _name(prefix: str, ident: str) -> str:
    """``plugins/x`` from ``x`` or ``plugins/x``."""
    return ident if ident.startswith(prefix + "/") else f"{prefix}/{ident}"


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def _read_package(package: Package) -> bytes:
    return bytes(package) if isinstance(package, (bytes, bytearray)) else Path(package).read_bytes()


def _isolation(value: str | None) -> int:
    if not value:
        return plugin_pb2.ISOLATION_UNSPECIFIED
    try:
        return plugin_pb2.Isolation.Value("ISOLATION_" + value.upper())
    except ValueError:
        raise ValueError(f"isolation must be namespace or process, not {value!r}") from None


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
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # Reconnect quickly: a CLI call should not sit out a 1 s+ reconnect backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self.channel = open_channel(
            target,
            options,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_server_name=tls_server_name,
        )
        self._plugins = plugin_pb2_grpc.PluginServiceStub(self.channel)
        self._instances = listener_instance_pb2_grpc.ListenerInstanceServiceStub(self.channel)
        self._events = event_service_pb2_grpc.EventServiceStub(self.channel)

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
        """Calls a List method page by page (AIP-158) and returns every item, or the first
        ``limit``; ``request`` is the first page's request, its ``page_token`` then moved on."""
        found: list[Item] = []
        while limit is None or len(found) < limit:
            request.page_size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(found))
            page = await self._call(method, request, result)
            found.extend(items(page))
            request.page_token = cast(Any, page).next_page_token
            if not request.page_token:
                break
        return found if limit is None else found[:limit]

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
        data = _read_package(package)
        digest = hashlib.sha256(data).hexdigest()
        total = len(data)

        async def chunks() -> AsyncIterator[plugin_pb2.UploadPluginPackageRequest]:
            sent = 0
            for start in range(0, max(total, 1), chunk_size):
                piece = data[start : start + chunk_size]
                yield plugin_pb2.UploadPluginPackageRequest(
                    chunk=piece, sha256=digest if start == 0 else ""
                )
                sent += len(piece)
                if progress is not None:
                    progress(sent, total)

        try:
            reply = await self._plugins.UploadPluginPackage(
                chunks(), timeout=self.timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise ListenerClientError.from_rpc_error(exc) from None
        return cast(plugin_pb2.UploadPluginPackageResponse, reply)

    async def _source(
        self,
        request: plugin_pb2.CreatePluginRequest | plugin_pb2.UpdatePluginRequest,
        package: Package,
        progress: Progress | None,
        stream_threshold: int,
        chunk_size: int,
    ) -> None:
        data = _read_package(package)
        if len(data) > stream_threshold:
            uploaded = await self.upload_package(data, progress=progress, chunk_size=chunk_size)
            request.package_sha256 = uploaded.sha256
        else:
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
                isolation=cast(Any, _isolation(isolation)),
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
        paths = []
        plugin = plugin_pb2.Plugin(name=_name("plugins", plugin_id), etag=etag)
        if display_name is not None:
            plugin.display_name = display_name
            paths.append("display_name")
        if isolation is not None:
            plugin.isolation = cast(Any, _isolation(isolation))
            paths.append("isolation")
        request = plugin_pb2.UpdatePluginRequest(
            plugin=plugin, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        if package is not None:
            await self._source(request, package, progress, stream_threshold, chunk_size)
        return await self._call(self._plugins.UpdatePlugin, request, plugin_pb2.Plugin)

    async def uninstall_plugin(self, plugin_id: str, *, etag: str = "") -> None:
        request = plugin_pb2.DeletePluginRequest(name=_name("plugins", plugin_id), etag=etag)
        await self._call(self._plugins.DeletePlugin, request, object)

    async def get_plugin(self, plugin_id: str) -> plugin_pb2.Plugin:
        request = plugin_pb2.GetPluginRequest(name=_name("plugins", plugin_id))
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
    ) -> listener_instance_pb2.ListenerInstance:
        """Creates an instance of ``plugin``; ``park_after`` chooses the park policy (park a
        failing event after that many attempts) over the default blocking one; ``filter``, a
        CEL expression over ``event``, chooses events by content (docs/api.md)."""
        instance = listener_instance_pb2.ListenerInstance(
            plugin=_name("plugins", plugin),
            display_name=display_name,
            filter=filter,
            params={k: _param_text(v) for k, v in (params or {}).items()},
            event_types=cast(Any, [event_type(t) for t in event_types]),
        )
        if park_after is not None:
            instance.failure_policy.mode = listener_instance_pb2.FailurePolicy.MODE_PARK
            instance.failure_policy.park_after = park_after
        request = listener_instance_pb2.CreateListenerInstanceRequest(
            listener_instance_id=instance_id.removeprefix("listenerInstances/"),
            listener_instance=instance,
        )
        return await self._call(
            self._instances.CreateListenerInstance, request, listener_instance_pb2.ListenerInstance
        )

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
    ) -> listener_instance_pb2.ListenerInstance:
        """Changes only what is given. ``params`` replaces the whole map (a secret sent back
        masked keeps its stored value); ``park_after`` or ``block`` sets the failure policy;
        ``filter`` replaces the content filter ("" removes it)."""
        instance = listener_instance_pb2.ListenerInstance(
            name=_name("listenerInstances", instance_id), etag=etag
        )
        paths = []
        if params is not None:
            instance.params.update({k: _param_text(v) for k, v in params.items()})
            paths.append("params")
        if event_types is not None:
            instance.event_types.extend(cast(Any, [event_type(t) for t in event_types]))
            paths.append("event_types")
        if display_name is not None:
            instance.display_name = display_name
            paths.append("display_name")
        if park_after is not None or block:
            policy = instance.failure_policy
            if park_after is not None:
                policy.mode = listener_instance_pb2.FailurePolicy.MODE_PARK
                policy.park_after = park_after
            else:
                policy.mode = listener_instance_pb2.FailurePolicy.MODE_BLOCK
            paths.append("failure_policy")
        if filter is not None:
            instance.filter = filter
            paths.append("filter")
        if not paths:
            raise ValueError("nothing to update")
        request = listener_instance_pb2.UpdateListenerInstanceRequest(
            listener_instance=instance, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return await self._call(
            self._instances.UpdateListenerInstance, request, listener_instance_pb2.ListenerInstance
        )

    async def delete_instance(self, instance_id: str, *, etag: str = "") -> None:
        request = listener_instance_pb2.DeleteListenerInstanceRequest(
            name=_name("listenerInstances", instance_id), etag=etag
        )
        await self._call(self._instances.DeleteListenerInstance, request, object)

    async def get_instance(self, instance_id: str) -> listener_instance_pb2.ListenerInstance:
        """The instance with its delivery status (pending, lag, last error, attempts…)."""
        request = listener_instance_pb2.GetListenerInstanceRequest(
            name=_name("listenerInstances", instance_id)
        )
        return await self._call(
            self._instances.GetListenerInstance, request, listener_instance_pb2.ListenerInstance
        )

    async def list_instances(self) -> list[listener_instance_pb2.ListenerInstance]:
        return await self._every_page(
            self._instances.ListListenerInstances,
            listener_instance_pb2.ListListenerInstancesRequest(),
            listener_instance_pb2.ListListenerInstancesResponse,
            lambda page: page.listener_instances,
        )

    async def _action(self, method: Any, request: Any) -> listener_instance_pb2.ListenerInstance:
        return await self._call(method, request, listener_instance_pb2.ListenerInstance)

    async def retry(self, instance_id: str) -> listener_instance_pb2.ListenerInstance:
        """Retries the failed head event now rather than at its next backoff time."""
        name = _name("listenerInstances", instance_id)
        return await self._action(
            self._instances.RetryListenerInstance,
            listener_instance_pb2.RetryListenerInstanceRequest(name=name),
        )

    async def skip(self, instance_id: str) -> listener_instance_pb2.ListenerInstance:
        """Parks the failed head event and goes on with the next."""
        name = _name("listenerInstances", instance_id)
        return await self._action(
            self._instances.SkipListenerInstanceEvent,
            listener_instance_pb2.SkipListenerInstanceEventRequest(name=name),
        )

    async def pause(self, instance_id: str) -> listener_instance_pb2.ListenerInstance:
        name = _name("listenerInstances", instance_id)
        return await self._action(
            self._instances.PauseListenerInstance,
            listener_instance_pb2.PauseListenerInstanceRequest(name=name),
        )

    async def resume(self, instance_id: str) -> listener_instance_pb2.ListenerInstance:
        name = _name("listenerInstances", instance_id)
        return await self._action(
            self._instances.ResumeListenerInstance,
            listener_instance_pb2.ResumeListenerInstanceRequest(name=name),
        )

    async def replay(
        self,
        instance_id: str,
        *,
        from_sequence: int | None = None,
        from_time: datetime | None = None,
    ) -> listener_instance_pb2.ListenerInstance:
        """Delivers again every subscribed event from a sequence or a publish time on."""
        if (from_sequence is None) == (from_time is None):
            raise ValueError("give exactly one of from_sequence and from_time")
        request = listener_instance_pb2.ReplayListenerInstanceRequest(
            name=_name("listenerInstances", instance_id)
        )
        if from_sequence is not None:
            request.from_sequence = from_sequence
        elif from_time is not None:
            when = from_time if from_time.tzinfo else from_time.replace(tzinfo=UTC)
            request.from_time.FromDatetime(when.astimezone(UTC))
        return await self._action(self._instances.ReplayListenerInstance, request)

    async def list_parked(self, instance_id: str) -> list[listener_instance_pb2.ParkedEvent]:
        """The instance's dead-letter list (all pages)."""
        return await self._every_page(
            self._instances.ListParkedEvents,
            listener_instance_pb2.ListParkedEventsRequest(
                parent=_name("listenerInstances", instance_id)
            ),
            listener_instance_pb2.ListParkedEventsResponse,
            lambda page: page.parked_events,
        )

    async def redeliver(self, instance_id: str, sequences: Iterable[int] = ()) -> int:
        """Asks for parked events to be delivered again (all when none are named); returns
        how many were queued."""
        reply = await self._call(
            self._instances.RedeliverParkedEvents,
            listener_instance_pb2.RedeliverParkedEventsRequest(
                parent=_name("listenerInstances", instance_id), sequences=list(sequences)
            ),
            listener_instance_pb2.RedeliverParkedEventsResponse,
        )
        return int(reply.count)

    async def send_test(
        self, instance_id: str, event_type_name: str | int
    ) -> listener_instance_pb2.SendTestEventResponse:
        """Hands a sample event of that type to the instance's plugin now (not stored)."""
        request = listener_instance_pb2.SendTestEventRequest(
            name=_name("listenerInstances", instance_id),
            event_type=cast(Any, event_type(event_type_name)),
        )
        return await self._call(
            self._instances.SendTestEvent, request, listener_instance_pb2.SendTestEventResponse
        )

    # -- events -------------------------------------------------------------------------

    async def publish(
        self, event: EventLike, *, request_id: str | None = None
    ) -> event_service_pb2.PublishEventResponse:
        """Stores one event; returns its id and sequence once it is committed."""
        request = event_service_pb2.PublishEventRequest(
            event=to_event(event), request_id=request_id or str(uuid.uuid4())
        )
        return await self._call(
            self._events.PublishEvent, request, event_service_pb2.PublishEventResponse
        )

    async def publish_batch(
        self, events: Iterable[EventLike], *, request_id: str | None = None
    ) -> list[event_service_pb2.PublishEventResponse]:
        """Stores a batch, all or nothing, in order."""
        request = event_service_pb2.PublishEventsRequest(
            events=[to_event(e) for e in events], request_id=request_id or str(uuid.uuid4())
        )
        reply = await self._call(
            self._events.PublishEvents, request, event_service_pb2.PublishEventsResponse
        )
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
            event_service_pb2.ListEventsRequest(
                after_sequence=after_sequence, event_types=cast(Any, types)
            ),
            event_service_pb2.ListEventsResponse,
            lambda page: page.events,
            limit,
        )
