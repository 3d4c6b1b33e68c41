"""A listener instance's fields as the store keeps them, checked; and the instance as a message.

Shared by ``instance_service`` (create, update) and ``instance_operations`` (the operator
actions answer with the instance as it is now).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from api_server import conversions
from event_store import operations as store_ops
from event_store.models import ListenerInstance, Plugin
from listener import event_types
from listener.v1 import listener_instance_pb2
from listener_common import params as sdk_params
from listener_core import errors, event_filter
from listener_core.secrets import SecretBox

pb = listener_instance_pb2


async def instance_message(session: Any, row: ListenerInstance) -> pb.ListenerInstance:
    """The instance with its delivery status, read in ``session``."""
    plugin = await session.get(Plugin, row.plugin_id)
    st = await store_ops.status(session, row.id, conversions.event_types(row.event_types))
    form = json.loads(plugin.params_json) if plugin else []
    return conversions.instance_message(row, form, st)


def event_types_field(values: Iterable[int], field: str) -> str:
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


def failure_policy(policy: pb.FailurePolicy, field: str) -> tuple[str, int]:
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


def content_filter(text: str, types: str, field: str) -> str:
    """Checks the filter against the event schema for the instance's types (compiled again
    by the alert server that runs it); returns it as stored."""
    try:
        event_filter.compile_filter(text, conversions.event_types(types))
    except event_filter.FilterError as exc:
        raise errors.InvalidArgument(
            f"{field} is not a usable filter: {exc}", field_violations=[(field, str(exc))]
        ) from None
    return text.strip()


def sealed_params(
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
