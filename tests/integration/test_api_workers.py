"""``api_workers = 2``: two API server processes listen on one address (SO_REUSEPORT), publishes
over many connections all land once with distinct sequences, SIGTERM stops both, and a
worker that dies stops the set (exit 1) rather than leaving it a process short."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc

from listener.v1 import event_service_pb2, event_service_pb2_grpc
from tests.support.databases import postgres_database
from tests.support.samples import sample_event
from tests.support.servers import ServerPair, eventually

CONNECTIONS = 16
PER_CONNECTION = 10


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes in LISTEN state on ``port`` (IPv4 and IPv6 tables)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                found.add(fields[9])
    return found


def _listens(pid: int, port: int) -> bool:
    inodes = _listening_inodes(port)
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


async def _publish_over_connections(addr: str) -> list[int]:
    async def one_connection(n: int) -> list[int]:
        # A channel of its own pool: a connection of its own, which the kernel may give to
        # either process.
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(addr, options=options) as channel:
            stub = event_service_pb2_grpc.EventServiceStub(channel)
            sequences = []
            for k in range(PER_CONNECTION):
                reply = await stub.PublishEvent(
                    event_service_pb2.PublishEventRequest(
                        event=sample_event("task_fail", n * 100 + k)
                    ),
                    timeout=30,
                )
                sequences.append(reply.sequence)
            return sequences

    results = await asyncio.gather(*(one_connection(n) for n in range(CONNECTIONS)))
    return [s for r in results for s in r]


async def test_two_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    async with postgres_database() as url:
        pair = ServerPair(url, tmp_path, extra_env={"LISTENER_API_WORKERS": "2"})
        pair.start("api_server")
        try:
            parent = pair.procs["api_server"].pid
            port = int(pair.api_addr.rsplit(":", 1)[1])
            children = await eventually(lambda: _children(parent), timeout=30)
            assert len(children) == 1, children
            worker = children[0]
            # Either process may have answered the health check first: wait for both.
            await eventually(lambda: _listens(worker, port), timeout=30)
            await eventually(lambda: _listens(parent, port), timeout=30)

            sequences = await _publish_over_connections(pair.api_addr)
            assert len(sequences) == CONNECTIONS * PER_CONNECTION
            assert len(set(sequences)) == len(sequences)  # each publish stored once
        finally:
            codes = pair.stop()
        assert codes == {"api_server": 0}, pair.log("api_server")[-3000:]
        assert not await asyncio.to_thread(Path(f"/proc/{worker}").exists)


async def test_a_dead_worker_stops_the_set(tmp_path: Path) -> None:
    async with postgres_database() as url:
        pair = ServerPair(url, tmp_path, extra_env={"LISTENER_API_WORKERS": "2"})
        pair.start("api_server")
        proc = pair.procs["api_server"]
        try:
            (worker,) = await eventually(lambda: _children(proc.pid), timeout=30)
            port = int(pair.api_addr.rsplit(":", 1)[1])
            await eventually(lambda: _listens(proc.pid, port), timeout=30)  # the set is up
            os.kill(worker, signal.SIGKILL)
            code = await asyncio.to_thread(proc.wait, 60)
        finally:
            pair.stop()
        assert code == 1, pair.log("api_server")[-3000:]
        assert "exited" in pair.log("api_server")
