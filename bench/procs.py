"""The servers under test as subprocesses, their databases, and what /proc says about them.

The bench starts ``python -m api_server`` / ``python -m alert_server`` exactly as an operator
would (configuration by ``LISTENER_*`` variables), so import-time, logging and process
boundaries are all part of what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size from /proc/<pid>/status (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process used so far (/proc/<pid>/stat)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def main_thread_cpu_seconds(pid: int) -> float:
    """The same for the process's main thread alone: the one that runs the event loop."""
    return _stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))


def us_per(cpu_seconds: float, count: int) -> float:
    """CPU microseconds per call or event (0 when there were none)."""
    return cpu_seconds / count * 1e6 if count else 0.0


def _stat_cpu(stat: Path) -> float:
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of the process and its direct children (``api_workers``' forked workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(c)) for c in children)


class CpuMeter:
    """CPU share of one process over a window, as a percentage of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = cpu_seconds(pid)
        self.main_cpu = main_thread_cpu_seconds(pid)
        self.wall = time.perf_counter()

    def seconds(self) -> float:
        """CPU seconds the process used since the meter started."""
        return cpu_seconds(self.pid) - self.cpu

    def main_thread_seconds(self) -> float:
        """CPU seconds of its main thread (the event loop's) since the meter started."""
        return main_thread_cpu_seconds(self.pid) - self.main_cpu

    def percent(self) -> float:
        wall = time.perf_counter() - self.wall
        return 100 * self.seconds() / wall if wall > 0 else 0.0


async def wait_serving(addr: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Returns once ``addr`` answers grpc.health.v1 SERVING; raises if the process dies."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server for {addr} exited with {proc.returncode}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on {addr} not serving after {timeout}s")
            await asyncio.sleep(0.02)


@dataclass
class Servers:
    """One API server and one alert server on ``db_url``, logging under ``workdir``."""

    db_url: str
    workdir: Path
    api_addr: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    alert_addr: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    # The alert server's metrics, read for the Notify calls a load caused (Bench.measured).
    alert_metrics_addr: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    trace_dir: Path | None = None  # per-stage timestamps (bench/stages.py) when set
    env_extra: dict[str, str] = field(default_factory=dict)  # a scenario's own settings

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LISTENER_DB_URL": self.db_url,
                "LISTENER_DATA_DIR": str(self.workdir / "data"),
                "LISTENER_API_ADDR": self.api_addr,
                "LISTENER_ALERT_ADDR": self.alert_addr,
                "LISTENER_ALERT_METRICS_ADDR": self.alert_metrics_addr,
                "LISTENER_HTTP_ADDR": "off",  # measured on its own, not beside a dev server's port
                # 64 concurrent callers from one host are one "caller" to the per-caller
                # publish limit (16 by default): the bench measures the server, not the limit.
                "LISTENER_PUBLISH_CONCURRENCY_PER_CALLER": "0",
                # The load generator's one connection carries up to 512 calls in flight; past
                # the default 100 streams the server refused calls (REFUSED_STREAM), and the
                # paced scenarios lost up to half their load to errors (BENCHMARKS.md).
                "LISTENER_MAX_STREAMS_PER_CONNECTION": "0",
                "LISTENER_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env_extra)
        if self.trace_dir is not None:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            env["BENCH_STAGE_TRACE_DIR"] = str(self.trace_dir)
        return env

    def notifies(self) -> int:
        """Wake-ups the alert server has taken so far: unary Notify calls answered OK (its
        RPC counter) and messages read on NotifyStream streams, each one Notify's work."""
        url = f"http://{self.alert_metrics_addr}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        return sum(
            int(float(line.rpartition(" ")[2]))
            for line in text.splitlines()
            if line.startswith("listener_notify_stream_messages_total ")
            or (
                line.startswith("listener_rpc_requests_total{")
                and 'PluginHostService/Notify"' in line
                and 'code="OK"' in line
            )
        )

    def pid(self, which: str) -> int:
        return self.procs[which].pid

    def spawn(self, which: str) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{which}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", which], cwd=REPO, env=self.env(), stdout=log, stderr=log
        )
        log.close()
        self.procs[which] = proc
        return proc

    async def start(self, which: str) -> float:
        """Starts one server; returns seconds from spawn to health SERVING."""
        started = time.perf_counter()
        proc = self.spawn(which)
        addr = self.api_addr if which == "api_server" else self.alert_addr
        try:
            await wait_serving(addr, proc)
        except Exception as exc:
            self.stop_one(which)
            raise RuntimeError(f"{which} did not start: {exc}\n{self.log(which)[-3000:]}") from exc
        return time.perf_counter() - started

    async def start_both(self) -> float:
        """Starts both servers; returns the alert server's spawn-to-SERVING time."""
        alert = await self.start("alert_server")
        await self.start("api_server")
        return alert

    def log(self, which: str) -> str:
        path = self.workdir / f"{which}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_one(self, which: str, timeout: float = 20) -> int:
        proc = self.procs.pop(which, None)
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop(self) -> None:
        for which in ("api_server", "alert_server"):
            self.stop_one(which)


@contextlib.asynccontextmanager
async def database(db: str, workdir: Path) -> AsyncIterator[str]:
    """A fresh database for one group of scenarios: a SQLite file under ``workdir`` for
    ``sqlite``, else a uniquely named database on the given PostgreSQL server, dropped after."""
    if db == "sqlite":
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        yield f"sqlite+aiosqlite:///{workdir / 'listener.db'}"
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(db)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"--db takes sqlite or a postgresql:// URL, not {db!r}")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    connect = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": url.password,
        "database": "postgres",
    }
    admin = await asyncpg.connect(**connect)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        admin = await asyncpg.connect(**connect)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
