"""The alert servers' registry as the API servers read it: who heartbeats, at which address.

Each alert server writes its advertised address with every heartbeat
(``event_store.leases.heartbeat``); API servers without a static target list drive the
ones whose heartbeat token keeps changing (``api_server.discovery``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from event_store.models import AlertServerRow


@dataclass(frozen=True)
class Registered:
    address: str
    heartbeat: datetime


async def registered(session: AsyncSession) -> dict[str, Registered]:
    """Every alert server's row, by server id (dead ones too, until they age out)."""
    rows = await session.execute(
        select(AlertServerRow.server_id, AlertServerRow.address, AlertServerRow.heartbeat_time)
    )
    return {sid: Registered(address, beat) for sid, address, beat in rows.all()}
