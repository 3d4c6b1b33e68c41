"""The client's requests that take more than one line to build: an instance to create, an
update with its field mask, a replay's starting point, a package as upload chunks."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf import field_mask_pb2

from listener.v1 import listener_instance_pb2, plugin_pb2
from listener_client.values import (
    INSTANCES,
    PLUGINS,
    Progress,
    event_type,
    isolation,
    param_text,
    resource_name,
)

pb = listener_instance_pb2


def new_instance(
    instance_id: str,
    plugin: str,
    *,
    event_types: Iterable[str | int],
    params: Mapping[str, object] | None,
    display_name: str,
    park_after: int | None,
    filter: str,
) -> pb.CreateListenerInstanceRequest:
    instance = pb.ListenerInstance(
        plugin=resource_name(PLUGINS, plugin),
        display_name=display_name,
        filter=filter,
        params={k: param_text(v) for k, v in (params or {}).items()},
        event_types=cast(Any, [event_type(t) for t in event_types]),
    )
    if park_after is not None:
        instance.failure_policy.mode = pb.FailurePolicy.MODE_PARK
        instance.failure_policy.park_after = park_after
    return pb.CreateListenerInstanceRequest(
        listener_instance_id=instance_id.removeprefix(INSTANCES + "/"),
        listener_instance=instance,
    )


def instance_update(
    instance_id: str,
    *,
    params: Mapping[str, object] | None,
    event_types: Iterable[str | int] | None,
    display_name: str | None,
    park_after: int | None,
    block: bool,
    filter: str | None,
    etag: str,
) -> pb.UpdateListenerInstanceRequest:
    """An update of what is given (not None), named in its mask; ValueError if nothing is."""
    instance = pb.ListenerInstance(name=resource_name(INSTANCES, instance_id), etag=etag)
    paths = []
    if params is not None:
        instance.params.update({k: param_text(v) for k, v in params.items()})
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
            policy.mode = pb.FailurePolicy.MODE_PARK
            policy.park_after = park_after
        else:
            policy.mode = pb.FailurePolicy.MODE_BLOCK
        paths.append("failure_policy")
    if filter is not None:
        instance.filter = filter
        paths.append("filter")
    if not paths:
        raise ValueError("nothing to update")
    return pb.UpdateListenerInstanceRequest(
        listener_instance=instance, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )


def plugin_update(
    plugin_id: str, *, display_name: str | None, isolation_mode: str | None, etag: str
) -> plugin_pb2.UpdatePluginRequest:
    """An update of the display name and/or isolation (a package is added by the caller)."""
    paths = []
    plugin = plugin_pb2.Plugin(name=resource_name(PLUGINS, plugin_id), etag=etag)
    if display_name is not None:
        plugin.display_name = display_name
        paths.append("display_name")
    if isolation_mode is not None:
        plugin.isolation = cast(Any, isolation(isolation_mode))
        paths.append("isolation")
    return plugin_pb2.UpdatePluginRequest(
        plugin=plugin, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )


def replay(
    instance_id: str, from_sequence: int | None, from_time: datetime | None
) -> pb.ReplayListenerInstanceRequest:
    if (from_sequence is None) == (from_time is None):
        raise ValueError("give exactly one of from_sequence and from_time")
    request = pb.ReplayListenerInstanceRequest(name=resource_name(INSTANCES, instance_id))
    if from_sequence is not None:
        request.from_sequence = from_sequence
    elif from_time is not None:
        when = from_time if from_time.tzinfo else from_time.replace(tzinfo=UTC)
        request.from_time.FromDatetime(when.astimezone(UTC))
    return request


async def package_chunks(
    data: bytes, chunk_size: int, progress: Progress | None
) -> AsyncIterator[plugin_pb2.UploadPluginPackageRequest]:
    """UploadPluginPackage's request stream: the sha256 with the first chunk."""
    digest = hashlib.sha256(data).hexdigest()
    total, sent = len(data), 0
    for start in range(0, max(total, 1), chunk_size):
        piece = data[start : start + chunk_size]
        yield plugin_pb2.UploadPluginPackageRequest(
            chunk=piece, sha256=digest if start == 0 else ""
        )
        sent += len(piece)
        if progress is not None:
            progress(sent, total)
