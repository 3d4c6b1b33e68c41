"""grpc.health.v1 status that tells the truth: NOT_SERVING while the store is out of reach
and while the server drains after SIGTERM.

Every service name and the overall status ("") report the same state, since every service
of a server needs the store. ``Watch`` clients (load balancers, Kubernetes probes,
``listenerctl health``) see each change as it happens: the grpcio servicer streams it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

#: Seconds between two checks of the store, and the longest one may take.
CHECK_INTERVAL = 1.0
CHECK_TIMEOUT = 5.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        service_names: Iterable[str],
        check_store: Callable[[], Awaitable[object]],
        *,
        interval: float = CHECK_INTERVAL,
        timeout: float = CHECK_TIMEOUT,
    ) -> None:
        self.servicer = servicer
        self.names = ["", *service_names]
        self.check_store = check_store
        self.interval = interval
        self.timeout = timeout
        self.store_ok = True
        self.draining = False
        self._status: int = SERVING
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> int:
        return self._status

    async def _publish(self) -> None:
        status = SERVING if self.store_ok and not self.draining else NOT_SERVING
        if status == self._status:
            return
        self._status = status
        for name in self.names:
            await self.servicer.set(name, status)
        why = (
            "draining"
            if self.draining
            else ("store reachable" if self.store_ok else "store unreachable")
        )
        log.log(
            logging.WARNING if not self.store_ok else logging.INFO,  # a shutdown is no alarm
            "health: %s (%s)",
            health_pb2.HealthCheckResponse.ServingStatus.Name(status),
            why,
        )

    async def check_once(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await self.check_store()
            ok = True
        except Exception as exc:  # any failure to reach the store: not serving
            if self.store_ok:
                log.warning("health: the store does not answer: %s", exc or type(exc).__name__)
            ok = False
        self.store_ok = ok
        await self._publish()
        return ok

    async def _run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-check")

    async def drain(self) -> None:
        """SIGTERM: NOT_SERVING from now on, while the server still accepts calls."""
        self.draining = True
        await self._publish()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
