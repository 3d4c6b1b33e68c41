"""The cheapest question that proves the store answers (health checks)."""

from __future__ import annotations

from sqlalchemy import text

from event_store.store import Store


async def ping(store: Store) -> None:
    async with store.reader() as session:
        await session.execute(text("SELECT 1"))
