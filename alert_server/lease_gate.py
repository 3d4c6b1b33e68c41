"""One runner's side of the lease discipline: until when it may hand events to its plugin.

The host extends the deadline after each successful renewal (``alert_server.lease_balance``).
When it runs out without a renewal, no new event or batch starts, and a plugin call in flight
is cut off at that moment (``LeaseExpired``, which is no failure of the plugin).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from alert_server.errors import LeaseExpired


class LeaseGate:
    def __init__(self) -> None:
        # Until when (event loop's monotonic time) the lease may be acted on. Plugin calls in
        # flight, each with its own handler deadline, are cut off when it runs out.
        self.deadline = 0.0
        self._renewed = asyncio.Event()
        self._calls: dict[asyncio.Timeout, float] = {}

    def extend(self, deadline: float) -> None:
        """A renewal succeeded: events may be handed over until ``deadline``."""
        if deadline <= self.deadline:
            return
        self.deadline = deadline
        self._renewed.set()
        for call, handler_deadline in self._calls.items():
            call.reschedule(min(handler_deadline, deadline))

    def valid(self) -> bool:
        return asyncio.get_running_loop().time() < self.deadline

    async def wait(self) -> None:
        """Waits (holding nothing, so a stop is not held up) until the lease may be acted on."""
        while not self.valid():
            self._renewed.clear()
            await self._renewed.wait()

    @contextlib.asynccontextmanager
    async def call(self, timeout: float) -> AsyncIterator[None]:
        """One plugin call: cut off at its handler timeout or when the lease runs out,
        whichever comes first (a renewal meanwhile moves the second). A cut because of the
        lease raises ``LeaseExpired``."""
        handler_deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(min(handler_deadline, self.deadline)) as call:
                self._calls[call] = handler_deadline
                try:
                    yield
                finally:
                    del self._calls[call]
        except TimeoutError:
            if asyncio.get_running_loop().time() < handler_deadline:
                raise LeaseExpired() from None
            raise
