"""Store rows to public protobuf messages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from api_server import names
from event_store import models
from event_store import operations as store_ops
from event_store.events import StoredEvent
from listener.v1 import event_pb2, listener_instance_pb2, plugin_pb2
from listener_common import params as sdk_params

MASK = "******"

_ISOLATION = {
    "namespace": plugin_pb2.Isolation.ISOLATION_NAMESPACE,
    "process": plugin_pb2.Isolation.ISOLATION_PROCESS,
}
ISOLATION_NAMES = {v: k for k, v in _ISOLATION.items()}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def param_message(form_item: Mapping[str, Any]) -> plugin_pb2.PluginParam:
    clean = {k: v for k, v in form_item.items() if v is not None}
    if isinstance(clean.get("validate"), Mapping):
        clean["validate"] = {k: v for k, v in clean["validate"].items() if v is not None}
    if "options" in clean:
        clean["options"] = [
            o if isinstance(o, Mapping) else {"label": str(o), "value": o} for o in clean["options"]
        ]
    return json_format.ParseDict(clean, plugin_pb2.PluginParam(), ignore_unknown_fields=True)


def plugin_message(row: models.Plugin, package_size: int) -> plugin_pb2.Plugin:
    form = json.loads(row.params_json)
    return plugin_pb2.Plugin(
        name=names.plugin_name(row.id),
        display_name=row.display_name,
        version=row.version,
        entry=row.entry,
        sha256=row.sha256,
        params=[param_message(item) for item in form],
        isolation=_ISOLATION.get(row.isolation, plugin_pb2.Isolation.ISOLATION_UNSPECIFIED),
        state=plugin_pb2.Plugin.State.Value("STATE_" + row.state),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=str(row.revision),
        sdk=row.sdk,
        package_size=package_size,
    )


def masked_params(form: Iterable[Mapping[str, Any]], values: Mapping[str, str]) -> dict[str, str]:
    """Instance params as shown to callers: password fields never leave in clear."""
    secret = sdk_params.secret_fields(list(form))
    return {k: (MASK if k in secret and v else v) for k, v in values.items()}


def event_types(stored: str) -> list[int]:
    return [int(t) for t in stored.split(",") if t]


_POLICY = listener_instance_pb2.FailurePolicy
POLICY_MODES = {"block": _POLICY.MODE_BLOCK, "park": _POLICY.MODE_PARK}


def _attempt(item: Mapping[str, Any]) -> listener_instance_pb2.DeliveryAttempt:
    attempt = listener_instance_pb2.DeliveryAttempt(
        duration_ms=float(item.get("duration_ms", 0)),
        sequence=int(item.get("sequence", 0)),
        event_id=str(item.get("event_id", "")),
        count=int(item.get("count", 0)),
        error=str(item.get("error", "")),
    )
    if item.get("time"):
        attempt.time.FromJsonString(str(item["time"]))
    return attempt


def instance_message(
    row: models.ListenerInstance,
    form: list[dict[str, Any]],
    st: store_ops.Status,
) -> listener_instance_pb2.ListenerInstance:
    delivery, pending = st.delivery, st.pending
    state = listener_instance_pb2.ListenerInstance.State
    if row.desired_state == "PAUSED":
        current = state.STATE_PAUSED
    elif delivery is not None and delivery.attempts > 0:
        current = state.STATE_BLOCKED
    else:
        current = state.STATE_ACTIVE
    status = listener_instance_pb2.DeliveryStatus(pending_count=pending, parked_count=st.parked)
    if st.oldest_pending is not None:
        status.lag_seconds = max(0.0, (datetime.now(UTC) - st.oldest_pending).total_seconds())
    if delivery is not None:
        status.owner = delivery.owner
        status.recent_attempts.extend(_attempt(a) for a in json.loads(delivery.recent_attempts))
        status.delivered_sequence = delivery.delivered_seq
        status.last_error = delivery.last_error
        status.attempts = delivery.attempts
        status.filtered_count = delivery.filtered_count
        if delivery.next_attempt_time is not None:
            status.next_attempt_time.FromDatetime(delivery.next_attempt_time)
        if delivery.last_delivery_time is not None:
            status.last_delivery_time.FromDatetime(delivery.last_delivery_time)
    return listener_instance_pb2.ListenerInstance(
        name=names.instance_name(row.id),
        display_name=row.display_name,
        plugin=names.plugin_name(row.plugin_id),
        params=masked_params(form, json.loads(row.params_json)),
        event_types=event_types(row.event_types),  # type: ignore[arg-type]
        state=current,
        delivery=status,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        etag=str(row.revision),
        failure_policy=_POLICY(mode=POLICY_MODES[row.failure_policy], park_after=row.park_after),
        filter=row.filter,
    )


def event_message(stored: StoredEvent) -> event_pb2.ListenerEvent:
    msg = event_pb2.ListenerEvent.FromString(stored.body)
    msg.id = stored.id
    msg.sequence = stored.sequence
    msg.type = stored.type  # type: ignore[assignment]
    msg.publish_time.FromDatetime(stored.publish_time)
    return msg
