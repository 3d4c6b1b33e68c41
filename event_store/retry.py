"""Whole-transaction retry when the store aborts one to break a deadlock or a serialization
conflict (PostgreSQL 40P01/40001, MySQL/MariaDB 1213/1205).

Writers of ``deliveries`` lock rows in one order (by instance id) so they should not
deadlock among themselves; this is the second line, for whatever else shares the rows (an
operator's action, a future writer). Only a transaction that can simply run again from the
start may use it: the work function is called anew on each attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from event_store.store import Store
from listener_core.store_errors import is_conflict

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 5


async def in_transaction(
    store: Store, work: Callable[[AsyncSession], Awaitable[T]], attempts: int = ATTEMPTS
) -> T:
    """Runs ``work`` in a transaction, again from the start (after a short random pause)
    when the store aborted it for a deadlock or serialization conflict."""
    for attempt in range(1, attempts + 1):
        try:
            async with store.transaction() as session:
                return await work(session)
        except Exception as exc:
            if attempt == attempts or not is_conflict(exc):
                raise
            log.info("transaction aborted by a conflict (attempt %d); retrying", attempt)
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
    raise AssertionError("unreachable")
