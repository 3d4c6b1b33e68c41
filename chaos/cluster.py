"""The servers of a chaos run: each a subprocess that can be killed with -9 and started
again, and (on PostgreSQL) each behind a database proxy of its own that the run cuts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.fernet import Fernet
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chaos.proxy import DbProxy, _free_port

REPO = Path(__file__).resolve().parents[1]
PG = os.environ.get("LISTENER_TEST_PG", "127.0.0.1:5432")


@dataclass
class Server:
    name: str
    module: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def addr(self) -> str:
        key = "LISTENER_API_ADDR" if self.module == "api_server" else "LISTENER_ALERT_ADDR"
        return self.env[key]

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", self.module], cwd=REPO, env=self.env, stdout=out, stderr=out
            )

    async def start(self) -> None:
        self.proc = self._spawn()
        self.pids.append(self.proc.pid)
        await _wait_serving(self.addr, self.proc, self.log)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def terminate(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s; the exit status (None: was not running).

        Waits off the event loop: the database proxies run on it, and a server stopping
        gracefully still talks to its store through them (a blocking wait held every server
        of a PostgreSQL run until its SIGKILL, 20 s each)."""
        if not self.alive():
            return None
        assert self.proc is not None
        self.proc.terminate()
        try:
            return await asyncio.to_thread(self.proc.wait, 20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _wait_serving(addr: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                tail = _tail(log)
                raise RuntimeError(f"server on {addr} exited ({proc.returncode}):\n{tail}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on {addr} not serving after 120 s")
            await asyncio.sleep(0.1)


@dataclass
class Cluster:
    """The servers of one run, their proxies (PostgreSQL only) and who is which."""

    pg: bool
    alerts: list[str]
    apis: list[str]
    servers: dict[str, Server] = field(default_factory=dict)
    proxies: dict[str, DbProxy] = field(default_factory=dict)

    def api_addrs(self) -> list[str]:
        return [self.servers[n].addr for n in self.apis]

    async def close(self) -> dict[str, int | None]:
        """Stops every server, then the proxies; each server's exit status (None: was not
        running)."""
        names = list(self.servers)
        statuses = await asyncio.gather(*(self.servers[n].terminate() for n in names))
        for proxy in self.proxies.values():
            await proxy.close()
        return dict(zip(names, statuses, strict=True))


async def build_cluster(backend: str, url: str, ttl: float, work: Path) -> Cluster:
    """The servers' settings and, on PostgreSQL, a started proxy for each; nothing started."""
    pg = backend == "postgresql"
    cluster = Cluster(pg, ["alert-a", "alert-b"] if pg else ["alert-a"], ["api-a", "api-b"])
    if pg:
        host, _, port = PG.rpartition(":")
        for name in cluster.alerts + cluster.apis:
            cluster.proxies[name] = DbProxy((host, int(port)))
            await cluster.proxies[name].start()
    alert_addrs = {n: f"127.0.0.1:{_free_port()}" for n in cluster.alerts}
    base = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LISTENER_SECRET_KEY": Fernet.generate_key().decode(),
        "LISTENER_LEASE_TTL": str(ttl),
        "LISTENER_POLL_INTERVAL": "0.5",
        "LISTENER_RETRY_BASE": "0.2",
        "LISTENER_RETRY_MAX": "2",
        "LISTENER_ALERT_TARGETS": ",".join(alert_addrs.values()),
    }
    for name in cluster.alerts + cluster.apis:
        env = dict(base)
        env["LISTENER_DB_URL"] = cluster.proxies[name].url(url) if pg else url
        env["LISTENER_DATA_DIR"] = str(work / name)
        if name in alert_addrs:
            env.update(LISTENER_ALERT_ADDR=alert_addrs[name], LISTENER_SERVER_ID=name)
        else:
            env.update(
                LISTENER_API_ADDR=f"127.0.0.1:{_free_port()}",
                LISTENER_ALERT_ADDR=f"127.0.0.1:{_free_port()}",
                LISTENER_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
            )
        module = name.split("-")[0] + "_server"
        cluster.servers[name] = Server(name, module, env, work / f"{name}.log")
    return cluster
