"""Rows of delivering instances written straight into a store (tests of event_store's writers
of ``deliveries``): a plugin ``p``, and for each instance its row and its delivery row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from event_store.models import Delivery, ListenerInstance, Package, Plugin
from event_store.store import Store


async def add_instances(store: Store, ids: Sequence[str], **delivery: Any) -> None:
    """Instances ``ids`` of plugin ``p``, stored in that order, one transaction per row, each
    with a delivery row of ``delivery``'s fields (owner, fence, ...)."""
    async with store.transaction() as session:
        session.add(Package(sha256="0" * 64, size=0, data=b""))
        session.add(Plugin(id="p", version="1", entry="m:C", sha256="0" * 64))
    for iid in ids:
        async with store.transaction() as session:
            session.add(ListenerInstance(id=iid, plugin_id="p", event_types="1"))
        async with store.transaction() as session:
            session.add(Delivery(instance_id=iid, **delivery))
