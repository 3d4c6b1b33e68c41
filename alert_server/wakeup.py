"""The newest committed sequence, broadcast to every delivery loop.

Loops wait here instead of polling the store: a wake-up arrives from the API server's
Notify call (or a publish in this process), and one slow poll of the counter stands in when
a wake-up is lost. Idle instances cost one awaiting coroutine each and no queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from event_store import events
from event_store.store import Store

log = logging.getLogger(__name__)


class SequenceSignal:
    def __init__(self, latest: int = 0) -> None:
        self.latest = latest
        # One future per waiting runner, done at the next bump or kick: a runner waits on
        # its own future (and a kick of its own sets it too), no task or Event in between,
        # so a Notify reaches the runner in one event-loop turn.
        self._waiters: set[asyncio.Future[None]] = set()

    def bump(self, sequence: int) -> None:
        if sequence > self.latest:
            self.latest = sequence
            self._wake()

    def kick(self) -> None:
        """Wakes every waiter without news, e.g. after an operator's retry."""
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def waiter(self) -> asyncio.Future[None]:
        """A future done at the next bump or kick; ``discard`` it when no longer waited on."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        return waiter

    def discard(self, waiter: asyncio.Future[None]) -> None:
        self._waiters.discard(waiter)

    async def wait_above(self, sequence: int, timeout: float) -> None:
        """Returns when a sequence above ``sequence`` is known, or after ``timeout``."""
        if self.latest > sequence:
            return
        waiter = self.waiter()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter
        finally:
            self.discard(waiter)


async def poll_forever(signal: SequenceSignal, store: Store, interval: float) -> None:
    """The fallback: reads the counter every ``interval`` seconds."""
    while True:
        try:
            async with store.reader() as session:
                signal.bump(await events.max_sequence(session))
        except Exception as exc:  # the store may be briefly down; keep polling
            log.warning("polling the event counter failed: %s", exc)
        await asyncio.sleep(interval)


async def listen_postgres(signal: SequenceSignal, store: Store) -> None:
    """PostgreSQL LISTEN/NOTIFY: publishers' commits wake this server even when the API
    server's Notify call does not reach it. Reconnects after a lost connection."""
    import asyncpg

    url = store.engine.url.set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)

    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            signal.bump(int(payload))

    while True:
        conn = None
        try:
            conn = await asyncpg.connect(dsn)
            await conn.add_listener(events.NOTIFY_CHANNEL, on_notify)
            while True:  # a cheap liveness probe: a dead connection raises here
                await asyncio.sleep(5)
                await conn.execute("SELECT 1")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("LISTEN connection lost: %s; reconnecting", exc)
            await asyncio.sleep(1)
        finally:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close()
